import path from 'node:path';
import { pathToFileURL } from 'node:url';
import vm from 'node:vm';
import { describe, expect, test } from 'vitest';
import * as fromSource from '../../src/code/responseGuard.js';
import { projectRoot } from '../helpers/projectRoot.js';

// The guard's source text differs by who compiled it: vitest's transform here, tsc in dist/ (which
// the service runs; npm test builds it first). Both must make a prelude that keeps the script's lines.
const fromBuild = (await import(
  pathToFileURL(path.join(projectRoot, 'dist', 'src', 'code', 'responseGuard.js')).href
)) as typeof fromSource;

const fileName = 'worker.js';

// Runs a guarded script in a context of its own with stand-ins for workerd's globals; returns the
// listeners the script's addEventListener calls reached, and what the script threw.
function run(module: typeof fromSource, script: string) {
  const guarded = module.guardedScript(module.createResponseGuard(1024), Buffer.from(script)).toString();
  const added: Array<[string, unknown]> = [];
  const userListener = () => undefined;
  const context = vm.createContext({
    userListener,
    Response: class {},
    setTimeout,
    console,
    addEventListener: (type: string, listener: unknown) => added.push([type, listener]),
  });
  let thrown: unknown;
  try {
    new vm.Script(guarded, { filename: fileName }).runInContext(context);
  } catch (error) {
    thrown = error;
  }
  return { guarded, added, thrown, userListener };
}

// The line of the script at which an error was thrown, by its stack.
function lineOf(error: unknown): number | undefined {
  const match = new RegExp(`${fileName}:(\\d+):`).exec(String((error as Error).stack));
  return match ? Number(match[1]) : undefined;
}

describe.each([
  ['vitest', fromSource],
  ['tsc', fromBuild],
])("the service worker's guard, as %s compiles it", (_, module) => {
  test("is one line before the script's own, which it leaves unchanged", () => {
    const script = '// first\nconst x = 1;\n';
    const { guarded, thrown } = run(module, script);
    expect(thrown).toBeUndefined();
    expect(guarded.endsWith(script)).toBe(true);
    expect(guarded.split('\n')).toHaveLength(script.split('\n').length);
  });

  test("keeps every line number of the script's code", () => {
    const { thrown } = run(module, '\n\n\nthrow new Error("on line 4");\n');
    expect((thrown as Error).message).toBe('on line 4');
    expect(lineOf(thrown)).toBe(4);
  });

  test("wraps the fetch listeners the script adds, and no other, after a tail listener of the guard's; drops the script's own tail listeners", () => {
    const { added, userListener } = run(
      module,
      "addEventListener('fetch', userListener);\naddEventListener('tail', userListener);\naddEventListener('scheduled', userListener);\n",
    );
    expect(added.map(([type]) => type)).toEqual(['tail', 'fetch', 'scheduled']);
    expect(added[0]![1]).toBeTypeOf('function');
    expect(added[1]![1]).toBeTypeOf('function');
    expect(added[1]![1]).not.toBe(userListener);
    expect(added[2]![1]).toBe(userListener);
  });

  test('keeps a leading "use strict" directive in force for the script', () => {
    const strict = run(module, "// says why\n'use strict';\nundeclared = 1;\n");
    expect(strict.guarded.startsWith("'use strict';")).toBe(true);
    // The error is of the context's realm, not this one's: it is told by its name.
    expect((strict.thrown as Error).name).toBe('ReferenceError');
    expect(lineOf(strict.thrown)).toBe(3);
    expect(run(module, 'undeclared = 1;\n').thrown).toBeUndefined();
  });
});
