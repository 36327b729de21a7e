import { mkdir, readdir, readFile, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, test } from 'vitest';
import { createResponseGuard, guardModuleName } from '../../src/code/responseGuard.js';
import { noSettings } from '../../src/code/workerCode.js';
import {
  quote,
  removeStaleWorkerFiles,
  removeWorkerFiles,
  renderWorkerdConfig,
  writeWorkerFiles,
} from '../../src/code/workerdConfig.js';
import { makeTempDir, removeTempDir } from '../../src/dev/tempDir.js';

const guard = createResponseGuard(1024 * 1024);
// What every config below shares unless a test says otherwise.
// How every test below writes files unless it says otherwise.
const fileSettings = {
  defaults: { compatibilityDate: '2026-04-26', compatibilityFlags: [] },
  allowPublicEgress: true,
  deniedEgress: [],
  guard,
};
const base = {
  compatibilityDate: '2026-04-26',
  compatibilityFlags: [],
  allowPublicEgress: true,
  deniedEgress: [],
};

describe('renderWorkerdConfig', () => {
  const serviceWorker = { format: 'service-worker', file: 'worker.js', bindings: [] } as const;
  const config = renderWorkerdConfig({ ...base, code: serviceWorker });

  test('embeds the script as a service worker with the given compatibility date', () => {
    expect(config).toContain('serviceWorkerScript = embed "worker.js"');
    expect(config).toContain('compatibilityDate = "2026-04-26"');
  });

  test("passes V8's flags in the config's own v8Flags, and none unless told", () => {
    const flagged = renderWorkerdConfig({ ...base, code: serviceWorker, v8Flags: ['--max-old-space-size=36'] });
    expect(flagged).toMatch(/sockets = \[[^\n]*\],\n {2}v8Flags = \["--max-old-space-size=36"\],\n\);/);
    expect(config).not.toContain('v8Flags');
  });

  test('listens on loopback only, on a port the kernel picks', () => {
    expect(config).toContain('address = "127.0.0.1:0"');
    expect(config).not.toMatch(/\*:|0\.0\.0\.0/);
  });

  test('lets the worker reach public addresses only, or none', () => {
    expect(config).toContain('allow = ["public"]');
    expect(config).toContain('globalOutbound = "egress"');
    const closed = renderWorkerdConfig({ ...base, code: serviceWorker, allowPublicEgress: false });
    expect(closed).toContain('allow = []');
  });

  test('denies the given address blocks even where "public" would let them through', () => {
    const denying = renderWorkerdConfig({ ...base, code: serviceWorker, deniedEgress: ['192.0.2.2/32', '2002::/16'] });
    expect(denying).toContain('allow = ["public"], deny = ["192.0.2.2/32", "2002::/16"]');
  });

  test('declares modules in order, the main one first, each by its own kind', () => {
    const modules = renderWorkerdConfig({
      ...base,
      code: {
        format: 'modules',
        modules: [
          { name: 'index.js', type: 'esModule', file: 'module0' },
          { name: 'add.wasm', type: 'wasm', file: 'module1' },
          { name: 'config.json', type: 'json', file: 'module2' },
        ],
        bindings: [],
      },
    });
    expect(modules).toContain(
      'modules = [\n    (name = "index.js", esModule = embed "module0"),\n    (name = "add.wasm", wasm = embed "module1"),\n    (name = "config.json", json = embed "module2"),\n  ]',
    );
    expect(modules).not.toContain('serviceWorkerScript');
  });

  test('writes every name and value as a capnp literal that nothing can break out of', () => {
    const odd = renderWorkerdConfig({ ...base, code: { format: 'service-worker', file: 'a"b.js', bindings: [] } });
    expect(odd).toContain('embed "a\\x22b.js"');
    expect(quote('plain-name_1.js')).toBe('"plain-name_1.js"');
    expect(quote('quote " backslash \\ newline \n é')).toBe('"quote \\x22 backslash \\x5c newline \\x0a \\xc3\\xa9"');
  });

  test('passes the compatibility date and flags, and declares bindings: values inline, parts embedded', () => {
    const bound = renderWorkerdConfig({
      ...base,
      compatibilityDate: '2022-01-01',
      compatibilityFlags: ['nodejs_compat'],
      code: {
        format: 'service-worker',
        file: 'worker.js',
        bindings: [
          { name: 'GREETING', type: 'text', value: 'hi "there"' },
          { name: 'SETTINGS', type: 'json', value: '{"a":1}' },
          { name: 'ADD', type: 'wasmModule', file: 'binding0' },
          { name: 'PAGE', type: 'textBlob', file: 'binding1' },
          { name: 'BYTES', type: 'dataBlob', file: 'binding2' },
        ],
      },
    });
    expect(bound).toContain('compatibilityDate = "2022-01-01",\n  compatibilityFlags = ["nodejs_compat"],');
    expect(bound).toContain(
      [
        '  bindings = [',
        '    (name = "GREETING", text = "hi \\x22there\\x22"),',
        '    (name = "SETTINGS", json = "{\\x22a\\x22:1}"),',
        '    (name = "ADD", wasmModule = embed "binding0"),',
        '    (name = "PAGE", text = embed "binding1"),',
        '    (name = "BYTES", data = embed "binding2"),',
        '  ],',
      ].join('\n'),
    );
  });
});

describe('worker files', () => {
  let runtimePath: string;
  beforeEach(async () => {
    runtimePath = await makeTempDir('oyster-unit-');
  });
  afterEach(() => removeTempDir(runtimePath));

  const write = () =>
    writeWorkerFiles({
      runtimePath,
      code: { format: 'service-worker', script: Buffer.from('// code'), settings: noSettings },
      ...fileSettings,
    });

  test('go into a new private directory with a random name, readable by the owner only', async () => {
    const [first, second] = await Promise.all([write(), write()]);
    expect(first.dir).not.toBe(second.dir);
    expect(path.dirname(first.dir)).toBe(runtimePath);
    expect((await stat(first.dir)).mode & 0o777).toBe(0o700);
    for (const file of await readdir(first.dir)) {
      expect((await stat(path.join(first.dir, file))).mode & 0o777).toBe(0o600);
    }
    expect((await readFile(path.join(first.dir, 'worker.js'), 'utf8')).endsWith('// code')).toBe(true);
    expect(await readFile(first.configPath, 'utf8')).toContain('embed "worker.js"');
  });

  test('of large code are written the same way', async () => {
    const script = Buffer.alloc(1024 * 1024, 'x');
    const files = await writeWorkerFiles({
      runtimePath,
      code: { format: 'service-worker', script, settings: noSettings },
      ...fileSettings,
    });
    expect((await stat(files.dir)).mode & 0o777).toBe(0o700);
    for (const file of await readdir(files.dir))
      expect((await stat(path.join(files.dir, file))).mode & 0o777).toBe(0o600);
    expect((await readFile(path.join(files.dir, 'worker.js'))).subarray(-script.length).equals(script)).toBe(true);
    expect(await readFile(files.configPath, 'utf8')).toContain('embed "worker.js"');
  });

  test("of a service worker start with the guard, on the script's first line, the script after it unchanged", async () => {
    const files = await write();
    const script = await readFile(path.join(files.dir, 'worker.js'), 'utf8');
    expect(script).toMatch(/^\(\(\) => \{ const guard = /);
    expect(script.endsWith('})();// code')).toBe(true);
    expect(script.split('\n')).toHaveLength(1);
  });

  test("of a module worker have the guard as their main module, wrapping the upload's", async () => {
    const files = await writeWorkerFiles({
      runtimePath,
      code: {
        format: 'modules',
        modules: [{ name: 'lib/index.js', type: 'esModule', content: Buffer.from('export default {}') }],
        settings: noSettings,
      },
      ...fileSettings,
    });
    const config = await readFile(files.configPath, 'utf8');
    expect(config).toContain(
      `(name = "${guardModuleName}", esModule = embed "module0"),\n    (name = "lib/index.js", esModule = embed "module1"),`,
    );
    expect(await readFile(path.join(files.dir, 'module0'), 'utf8')).toMatch(
      /^import \* as main from "\.\/lib\/index\.js";/,
    );
  });

  test('of a bundle are numbered files, never named after the modules', async () => {
    const files = await writeWorkerFiles({
      runtimePath,
      code: {
        format: 'modules',
        modules: [
          { name: 'index.js', type: 'esModule', content: Buffer.from('export default {}') },
          { name: 'data.txt', type: 'text', content: Buffer.from('hi') },
        ],
        settings: noSettings,
      },
      ...fileSettings,
    });
    expect((await readdir(files.dir)).sort()).toEqual(['config.capnp', 'module0', 'module1', 'module2']);
    expect(await readFile(path.join(files.dir, 'module2'), 'utf8')).toBe('hi');
  });

  test('the parts that bindings hold are numbered files too, and code without a date or flags gets the defaults', async () => {
    const files = await writeWorkerFiles({
      runtimePath,
      code: {
        format: 'service-worker',
        script: Buffer.from('// code'),
        settings: {
          compatibilityDate: undefined,
          compatibilityFlags: undefined,
          bindings: [{ name: 'PAGE', type: 'textBlob', content: Buffer.from('<p>hi</p>') }],
        },
      },
      ...fileSettings,
      defaults: { compatibilityDate: '2025-06-01', compatibilityFlags: ['nodejs_compat'] },
    });
    expect((await readdir(files.dir)).sort()).toEqual(['binding0', 'config.capnp', 'worker.js']);
    expect(await readFile(path.join(files.dir, 'binding0'), 'utf8')).toBe('<p>hi</p>');
    const config = await readFile(files.configPath, 'utf8');
    expect(config).toContain('compatibilityDate = "2025-06-01",\n  compatibilityFlags = ["nodejs_compat"],');
    expect(config).toContain('(name = "PAGE", text = embed "binding0")');
  });

  test('are removed completely', async () => {
    const files = await write();
    removeWorkerFiles(files);
    expect(await readdir(runtimePath)).toEqual([]);
  });

  test('that a failed write never made are no reason to keep the directory', async () => {
    const files = await write();
    await rm(files.paths[0]!);
    removeWorkerFiles(files);
    expect(await readdir(runtimePath)).toEqual([]);
  });

  test('are each tried when one cannot be removed, and the failure is reported', async () => {
    const files = await write();
    // A directory where a file was: unlink fails with EISDIR.
    const blocked = files.paths[0]!;
    await rm(blocked);
    await mkdir(blocked);
    expect(() => removeWorkerFiles(files)).toThrow(expect.objectContaining({ code: 'EISDIR' }));
    expect(await readdir(files.dir)).toEqual([path.basename(blocked)]);
  });

  test('left by a killed run are removed at start, and nothing else is', async () => {
    const stale = await write();
    await mkdir(path.join(runtimePath, 'operator-notes'));
    expect(await removeStaleWorkerFiles(runtimePath)).toBe(1);
    expect(await readdir(runtimePath)).toEqual(['operator-notes']);
    expect(path.basename(stale.dir)).toMatch(/^[0-9a-f-]{36}$/);
  });
});
