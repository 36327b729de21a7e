import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { init as initLexer, parse as lexModule } from 'es-module-lexer';
import ts from 'typescript';
import { describe, expect, test } from 'vitest';
import { projectRoot } from '../helpers/projectRoot.js';

const srcDir = path.join(projectRoot, 'src');
// The JavaScript that runs (npm test builds it first): type-only imports are gone from it.
const builtSrcDir = path.join(projectRoot, 'dist', 'src');

// The folders of src/ from the top of a request's flow down: a module imports only from its own
// layer or those below it. Modules directly in src/ (errors, config, the entry points) are outside.
const layers = [
  ['http'],
  ['service'],
  ['pipeline'],
  ['capacity'],
  ['code', 'sandbox', 'secrets', 'attestation', 'ledger', 'tail'],
];
// The longest a function of src/ may be, in lines: longer, it does more than one thing.
const maxFunctionLines = 80;

// The layer of a module of src/, 0 at the top; undefined outside the layers.
function layerOf(file: string): number | undefined {
  const folder = file.split(path.sep)[0]!;
  const layer = layers.findIndex((names) => names.includes(folder));
  return layer === -1 ? undefined : layer;
}

// Every function of src/ longer than the limit, as "file:line name (lines)".
async function longFunctions(): Promise<string[]> {
  const files = (await readdir(srcDir, { recursive: true })).filter((file) => file.endsWith('.ts'));
  const found: string[] = [];
  for (const file of files) {
    const source = ts.createSourceFile(
      file,
      await readFile(path.join(srcDir, file), 'utf8'),
      ts.ScriptTarget.Latest,
      true,
    );
    const lineOf = (position: number) => source.getLineAndCharacterOfPosition(position).line + 1;
    const visit = (node: ts.Node) => {
      if (ts.isFunctionLike(node) && 'body' in node && node.body) {
        const lines = lineOf(node.getEnd()) - lineOf(node.getStart()) + 1;
        if (lines > maxFunctionLines) found.push(`${file}:${lineOf(node.getStart())} (${lines} lines)`);
      }
      ts.forEachChild(node, visit);
    };
    visit(source);
  }
  return found;
}

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

// The packages a built module of src/ loads when it is imported, through its static imports and
// theirs; what it imports with import() is left out, as it loads only when that line runs.
async function packagesLoadedBy(entry: string): Promise<Set<string>> {
  await initLexer;
  const packages = new Set<string>();
  const seen = new Set<string>();
  const visit = async (file: string): Promise<void> => {
    if (seen.has(file)) return;
    seen.add(file);
    const [imports] = lexModule(await readFile(file, 'utf8'));
    for (const { specifier, type } of imports) {
      if (type !== 'static' || specifier === null) continue;
      if (specifier.startsWith('.')) await visit(path.resolve(path.dirname(file), specifier));
      else if (!specifier.startsWith('node:'))
        packages.add(
          specifier
            .split('/')
            .slice(0, specifier.startsWith('@') ? 2 : 1)
            .join('/'),
        );
    }
  };
  await visit(path.join(builtSrcDir, entry));
  return packages;
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

  test('no module imports from a layer above its own (code/ and sandbox/ never from capacity/, pipeline/ or http/)', async () => {
    const graph = await importGraph();
    const upward = [...graph].flatMap(([file, imports]) =>
      imports
        .filter((target) => {
          const [from, to] = [layerOf(file), layerOf(target)];
          return from !== undefined && to !== undefined && to < from;
        })
        .map((target) => `${file} → ${target}`),
    );
    expect(upward).toEqual([]);
  });

  test(`has no function longer than ${maxFunctionLines} lines`, async () => {
    expect(await longFunctions()).toEqual([]);
  });

  test('the service never imports its development servers or test support', async () => {
    const graph = await importGraph();
    const production = [...graph].filter(([file]) => !file.startsWith(`dev${path.sep}`));
    const intoDev = production.flatMap(([file, imports]) =>
      imports.filter((target) => target.startsWith(`dev${path.sep}`)).map((target) => `${file} → ${target}`),
    );
    expect(intoDev).toEqual([]);
  });

  // Each of them is a sizeable part of the idle memory of a service that does not use it.
  test('the service loads the signing library, SQLite and the AWS SDK only when its settings ask for them', async () => {
    const atStart = await packagesLoadedBy('main.js');
    expect(atStart).toContain('fastify');
    const optional = ['@noble/curves', '@noble/hashes', 'better-sqlite3', '@aws-sdk/client-kms', 'eciesjs', 'pkijs'];
    expect([...atStart].filter((name) => optional.includes(name))).toEqual([]);
    expect(await packagesLoadedBy('secrets/release.js')).toContain('@aws-sdk/client-kms');
    const withLedger = await packagesLoadedBy('ledger/usageLedger.js');
    expect(withLedger).toContain('better-sqlite3');
    expect([...withLedger].filter((name) => name.startsWith('@noble/'))).toEqual([]);
  });
});
