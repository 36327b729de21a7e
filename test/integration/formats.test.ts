import { existsSync } from 'node:fs';
import { createServer } from 'node:http';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { listen, type RunningServer } from '../../src/dev/listen.js';
import { cgroupsOrSkip } from '../helpers/cgroups.js';
import { noLeftovers, type Stack, startStack } from '../helpers/stack.js';

const cgroups = await cgroupsOrSkip();

describe.runIf(cgroups)('code formats', () => {
  let stack: Stack;
  beforeAll(async () => {
    stack = await startStack({ pool: { count: 2 } });
  });
  afterAll(() => stack?.close());

  test.each([
    ['a service worker', 'hello'],
    ['an ES module', 'hello-module'],
  ])('%s runs and answers', async (_format, codeId) => {
    const response = await stack.invoke({ code_id: codeId, input: { name: 'Ada' } });
    expect(response.statusCode).toBe(200);
    expect(response.body.data).toBe('Hello, Ada!');
    expect(await stack.leftovers()).toEqual(noLeftovers);
  });

  test('an ES module that throws answers 500 with the exception text, like a service worker', async () => {
    const response = await stack.invoke({ code_id: 'module-throw' });
    expect(response.statusCode).toBe(500);
    expect(response.body.data).toMatch(/the module failed on purpose/);
  });

  test('an ES module calling WebAssembly from a bundle', async () => {
    const response = await stack.invoke({ code_id: 'wasm-add', input: { a: 2, b: 40 } });
    expect(response.statusCode).toBe(200);
    expect(response.body.data).toBe('42');
    expect(await stack.leftovers()).toEqual(noLeftovers);
  });

  test('an ES module importing JSON and text modules from a bundle', async () => {
    const response = await stack.invoke({ code_id: 'greeting-bundle', input: { name: 'Ada' } });
    expect(response.statusCode).toBe(200);
    expect(response.body.data).toBe('Bonjour, Ada! (v2)');
  });

  test('a bundle whose main module is missing answers 400', async () => {
    const response = await stack.invoke({ code_id: 'bundle-no-main' });
    expect(response.statusCode).toBe(400);
    expect(response.body.message).toBe('The stored code bundle is invalid');
    expect(response.body.data).toMatch(/missing\.js/);
    expect(await stack.leftovers()).toEqual(noLeftovers);
  });

  test("a wasm part that is not WebAssembly answers 400 with workerd's message", async () => {
    const response = await stack.invoke({ code_id: 'bundle-bad-wasm' });
    expect(response.statusCode).toBe(400);
    expect(response.body.data).toMatch(/wasm|WebAssembly/i);
    expect(await stack.leftovers()).toEqual(noLeftovers);
  });
});

describe.runIf(cgroups)('a bundle with a path in a module name', () => {
  let storage: RunningServer;
  let stack: Stack;
  beforeAll(async () => {
    const form = new FormData();
    form.append('metadata', JSON.stringify({ main_module: 'index.js' }));
    form.append(
      'index.js',
      new Blob(["import x from '../evil.js'; export default { fetch: () => new Response(x) };"], {
        type: 'application/javascript+module',
      }),
      'index.js',
    );
    form.append(
      '../evil.js',
      new Blob(['export default "escaped";'], { type: 'application/javascript+module' }),
      'evil.js',
    );
    const packed = new Response(form);
    const contentType = packed.headers.get('content-type')!;
    const bytes = Buffer.from(await packed.arrayBuffer());
    storage = await listen(
      createServer((request, response) =>
        request.resume().on('end', () => response.writeHead(200, { 'content-type': contentType }).end(bytes)),
      ),
      '127.0.0.1',
      0,
    );
    stack = await startStack({ pool: { count: 1 }, env: { STORAGE_URL: `${storage.url}/load` } });
  });
  afterAll(async () => {
    await stack?.close();
    await storage?.close();
  });

  test('never makes it a path: module files are numbered, and nothing is written outside the invocation directory', async () => {
    const response = await stack.invoke({ code_id: 'evil' });
    // workerd itself refuses to resolve an import that climbs out of the bundle.
    expect(response.statusCode).toBe(400);
    expect(response.body.data).toMatch(/can't use "\.\." to break out of starting directory/);
    for (const dir of [stack.config.runtimePath, path.dirname(stack.config.runtimePath)]) {
      expect(existsSync(path.join(dir, 'evil.js')), dir).toBe(false);
    }
    expect(await stack.leftovers()).toEqual(noLeftovers);
  });
});
