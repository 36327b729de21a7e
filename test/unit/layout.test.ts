import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, expect, test } from 'vitest';
import { projectRoot } from '../helpers/projectRoot.js';

const srcDir = path.join(projectRoot, 'src');

// Every module of src/ with the modules of src/ it imports, types included.
async function importGraph(): Promise<Map<string, string[]>> {
  const files = (await readdir(srcDir, { recursive: true })).filter((file) => file.endsWith('.ts'));
  const graph = new Map<string, string[]>();
  for (const file of files) {
    const source = await readFile(path.join(srcDir, file), 'utf8');
    const specifiers = [...source.matchAll(/(?:from|import\()\s*'(\.{1,2}\/[^']+)\.js'/g)].map((match) => match[1]!);
    graph.set(
      file,
      specifiers.map((specifier) => path.normalize(path.join(path.dirname(file), `${specifier}.ts`))),
    );
  }
  return graph;
}

// The cycles of a graph, each as the path that closes it.
function cycles(graph: ReadonlyMap<string, readonly string[]>): string[][] {
  const found: string[][] = [];
  const done = new Set<string>();
  const visit = (node: string, trail: string[]) => {
    if (trail.includes(node)) {
      found.push([...trail.slice(trail.indexOf(node)), node]);
      return;
    }
    if (done.has(node)) return;
    for (const next of graph.get(node) ?? []) visit(next, [...trail, node]);
    done.add(node);
  };
  for (const node of graph.keys()) visit(node, []);
  return found;
}

describe('the layout of src/', () => {
  test('every relative import names a module that exists', async () => {
    const graph = await importGraph();
    const missing = [...graph].flatMap(([file, imports]) =>
      imports.filter((target) => !graph.has(target)).map((target) => `${file} → ${target}`),
    );
    expect(missing).toEqual([]);
  });

  test('has no import cycle', async () => {
    expect(cycles(await importGraph())).toEqual([]);
  });

  test('the service never imports its development servers or test support', async () => {
    const graph = await importGraph();
    const production = [...graph].filter(([file]) => !file.startsWith(`dev${path.sep}`));
    const intoDev = production.flatMap(([file, imports]) =>
      imports.filter((target) => target.startsWith(`dev${path.sep}`)).map((target) => `${file} → ${target}`),
    );
    expect(intoDev).toEqual([]);
  });
});
