import { watch } from 'node:fs';
import { access, mkdir } from 'node:fs/promises';
import { createServer } from 'node:http';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { listen, type RunningServer } from '../../src/dev/listen.js';
import { makeTempDir, removeTempDir } from '../../src/dev/tempDir.js';
import { cgroupsOrSkip } from '../helpers/cgroups.js';
import { type FaultyServer, startFaultyServer } from '../helpers/faultyServer.js';
import { headerFields } from '../helpers/http.js';
import { noLeftovers, type Stack, startStack } from '../helpers/stack.js';

const cgroups = await cgroupsOrSkip();

describe.runIf(cgroups)('size limits are read with a cap', () => {
  let endless: FaultyServer;
  let stack: Stack;
  beforeAll(async () => {
    endless = await startFaultyServer('endless');
    stack = await startStack({
      pool: { count: 1 },
      env: {
        STORAGE_URL: `${endless.url}/load`,
        MAX_CODE_BYTES: String(256 * 1024),
        MAX_RESPONSE_BYTES: String(64 * 1024),
      },
    });
  });
  afterAll(async () => {
    await stack?.close();
    await endless?.close();
  });

  test('code over MAX_CODE_BYTES from a storage server that never stops answers 413, without buffering it', async () => {
    const rssBefore = process.memoryUsage().rss;
    const response = await stack.invoke({ code_id: 'anything' });
    expect(response.statusCode).toBe(413);
    expect(response.body.message).toContain('MAX_CODE_BYTES');
    expect(process.memoryUsage().rss - rssBefore).toBeLessThan(64 * 1024 * 1024);
    expect(await stack.leftovers()).toEqual(noLeftovers);
  });
});

describe.runIf(cgroups)('a worker response over MAX_RESPONSE_BYTES', () => {
  let stack: Stack;
  beforeAll(async () => {
    stack = await startStack({ pool: { count: 1 }, env: { MAX_RESPONSE_BYTES: String(64 * 1024) } });
  });
  afterAll(() => stack?.close());

  test('answers 500 naming the limit, and one just under it passes', async () => {
    const over = await stack.invoke({ code_id: 'big-response', input: { bytes: 64 * 1024 + 1 } });
    expect(over.statusCode).toBe(500);
    expect(over.body.message).toContain('MAX_RESPONSE_BYTES');
    const under = await stack.invoke({ code_id: 'big-response', input: { bytes: 64 * 1024 } });
    expect(under.statusCode).toBe(200);
    expect((under.body.data as string).length).toBe(64 * 1024);
    expect(await stack.leftovers()).toEqual(noLeftovers);
  });

  test('a body declared longer than the limit is refused before it is read, even one that never ends', async () => {
    const response = await stack.invoke({ code_id: 'endless-declared' });
    expect(response.statusCode).toBe(500);
    expect(response.body.message).toContain('MAX_RESPONSE_BYTES');
    expect(await stack.leftovers()).toEqual(noLeftovers);
  });
});

// The guard in the isolate stops reading where the body passes the limit: neither the time nor the
// memory an answer costs depends on how much more the function would have sent.
describe.runIf(cgroups)('a worker response streamed past MAX_RESPONSE_BYTES', () => {
  const mib = 1024 * 1024;
  let stack: Stack;
  beforeAll(async () => {
    // Room for far more than the limit: without the guard's cap, the body would fill it.
    stack = await startStack({ pool: { count: 1, memory: '256M' } });
  });
  afterAll(() => stack?.close());

  const invoke = async (input: object) => {
    const response = await stack.app.inject({
      method: 'POST',
      url: '/api/serverless',
      payload: { code_id: 'endless-stream', input },
    });
    return {
      statusCode: response.statusCode,
      message: String(response.json().message),
      peakMemory: headerFields(response.headers['x-oyster-usage'], '=')['peak-memory'] ?? Number.NaN,
      executionMs: headerFields(String(response.headers['server-timing']).replaceAll(';dur', ''), '=').execution,
    };
  };

  test.each([
    ['a body that never ends', {}],
    ['a 200 MiB body', { mb: 200 }],
  ])(
    '%s is refused naming the limit within a second, its isolate holding little more than the limit',
    async (_, input) => {
      const small = await invoke({ mb: 0 });
      expect(small.statusCode).toBe(200);
      const over = await invoke(input);
      expect({ statusCode: over.statusCode, named: over.message.includes('MAX_RESPONSE_BYTES') }).toEqual({
        statusCode: 500,
        named: true,
      });
      expect(over.executionMs).toBeLessThan(1000);
      // The default limit is 1 MiB; what comes on top of an empty answer's workerd is the limit's
      // bytes and the chunks in flight.
      expect((over.peakMemory - small.peakMemory) / mib).toBeLessThan(16);
      expect(await stack.leftovers()).toEqual(noLeftovers);
    },
  );
});

describe.runIf(cgroups)('path-like code_ids', () => {
  const helloWorker = "addEventListener('fetch', (event) => event.respondWith(new Response('ran')));";
  let storage: RunningServer;
  let sandbox: string;
  let stack: Stack;
  beforeAll(async () => {
    // A storage server that has code for every key, so each request goes all the way to workerd.
    storage = await listen(
      createServer((request, response) => request.resume().on('end', () => response.end(helloWorker))),
      '127.0.0.1',
      0,
    );
    sandbox = await makeTempDir('oyster-paths-');
    await mkdir(path.join(sandbox, 'outer', 'runtime'), { recursive: true });
    stack = await startStack({
      pool: { count: 1 },
      env: {
        STORAGE_URL: `${storage.url}/load`,
        RUNTIME_PATH: path.join(sandbox, 'outer', 'runtime'),
        CODE_CACHE_MAX_BYTES: '0',
      },
    });
  });
  afterAll(async () => {
    await stack?.close();
    await storage?.close();
    await removeTempDir(sandbox);
  });

  test('never create or touch a file outside RUNTIME_PATH', async () => {
    const touched: string[] = [];
    const watcher = watch(sandbox, { recursive: true }, (_event, file) => touched.push(String(file)));
    const escapes = [
      '../x',
      '../../outer-file',
      '/tmp/oyster-escape-x',
      'a/b',
      '%2e%2e',
      '..',
      '..%2f..%2fetc%2fpasswd',
      '../../etc/passwd',
    ];
    try {
      for (const codeId of escapes) {
        const response = await stack.invoke({ code_id: codeId });
        expect(response.statusCode, codeId).toBe(200);
        expect(response.body.data).toBe('ran');
      }
      await sleep(100);
    } finally {
      watcher.close();
    }
    expect(touched.length).toBeGreaterThan(0);
    expect(touched.filter((file) => !file.startsWith(path.join('outer', 'runtime', path.sep)))).toEqual([]);
    await expect(access('/tmp/oyster-escape-x')).rejects.toThrow();
    await expect(access(path.join(sandbox, 'outer-file'))).rejects.toThrow();
    expect(await stack.leftovers()).toEqual(noLeftovers);
  });
});
