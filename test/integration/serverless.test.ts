import { readdir } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest';
import { readPids } from '../../src/sandbox/cgroups.js';
import { cgroupsOrSkip } from '../helpers/cgroups.js';
import { noLeftovers, type Stack, startStack } from '../helpers/stack.js';

const cgroups = await cgroupsOrSkip();

describe.runIf(cgroups)('POST /api/serverless runs the stored code in a fresh workerd', () => {
  let stack: Stack;
  beforeAll(async () => {
    stack = await startStack({ env: { EXECUTION_TIMEOUT_MS: '2000' }, pool: { count: 3, memory: '128M' } });
  });
  afterAll(() => stack?.close());
  afterEach(async () => {
    expect(await stack.leftovers()).toEqual(noLeftovers);
  });

  test('valid input answers 200 with the function output', async () => {
    const response = await stack.invoke({ code_id: 'primes', input: { num: 100 } });
    expect(response.statusCode).toBe(200);
    expect(response.body).toEqual({
      status: 'success',
      message: 'Response successfully generated',
      data: 'The prime factors of 100 are 2,2,5,5',
    });
  });

  test('no input sends {} to the function and answers 200', async () => {
    const response = await stack.invoke({ code_id: 'echo' });
    expect(response.statusCode).toBe(200);
    expect(response.body.data).toBe('{}');
  });

  test('the input reaches the function as JSON, unchanged', async () => {
    const input = { text: 'héllo ✓', list: [1, 2.5, null], nested: { deep: true } };
    const response = await stack.invoke({ code_id: 'echo', input });
    expect(JSON.parse(response.body.data as string)).toEqual(input);
  });

  test('an empty body answers 400 Invalid payload', async () => {
    const response = await stack.invoke({});
    expect(response.statusCode).toBe(400);
    expect(response.body.status).toBe('error');
    expect(response.body.message).toBe('Invalid payload');
  });

  test("code that does not compile answers 400 with workerd's error", async () => {
    const response = await stack.invoke({ code_id: 'syntax-error', input: {} });
    expect(response.statusCode).toBe(400);
    expect(response.body.message).toBe(
      'Failed to generate a response. Syntax error in your JavaScript code. Please check the syntax and try again.',
    );
    expect(response.body.data).toMatch(/SyntaxError/);
  });

  test('a never-ending function answers 408 at the time limit', async () => {
    const started = Date.now();
    const response = await stack.invoke({ code_id: 'loop', input: {} });
    expect(response.statusCode).toBe(408);
    expect(response.body.message).toBe('Server timeout, fetching response took a long time');
    expect(Date.now() - started).toBeLessThan(2000 + 1500);
  });

  test('a throwing function answers 500 with the exception text', async () => {
    const response = await stack.invoke({ code_id: 'throw', input: {} });
    expect(response.statusCode).toBe(500);
    expect(response.body.message).toMatch(/appropriate exception handling/);
    expect(response.body.data).toMatch(/the function failed on purpose/);
  });

  test('an unknown code_id answers 404', async () => {
    const response = await stack.invoke({ code_id: 'no-such-code', input: {} });
    expect(response.statusCode).toBe(404);
    expect(response.body.message).toBe('No code was found for this code_id');
  });

  test('the storage server gets exactly the attestation bytes, base64-encoded', async () => {
    // The dev storage server answers 401 unless the header decodes to the exact bytes, which are
    // not valid UTF-8: a text round trip would have turned the call into a 500.
    const response = await stack.invoke({ code_id: 'hello', input: { name: 'Ada' } });
    expect(response.statusCode).toBe(200);
    expect(response.body.data).toBe('Hello, Ada!');
  });

  test('a cgroup is reused cleanly after each request', async () => {
    for (let i = 0; i < stack.pool.size + 2; i += 1) {
      const response = await stack.invoke({ code_id: 'primes', input: { num: 12 + i } });
      expect(response.statusCode).toBe(200);
    }
  });
});

describe.runIf(cgroups)('the files of cached code', () => {
  let stack: Stack;
  beforeAll(async () => {
    // Room for primes.js (707 bytes, costing 2 × 707 + 20 KiB) or hello.js (279), not both.
    stack = await startStack({ env: { CODE_CACHE_MAX_BYTES: '30000' }, pool: { count: 2 } });
  });
  afterAll(() => stack?.close());
  const onDisk = () => readdir(stack.config.runtimePath);

  test('are written once and read by every invocation of the code while it is cached', async () => {
    expect((await stack.invoke({ code_id: 'hello' })).statusCode).toBe(200);
    const written = await onDisk();
    expect(written).toHaveLength(1);
    const twice = await Promise.all([stack.invoke({ code_id: 'hello' }), stack.invoke({ code_id: 'hello' })]);
    expect(twice.map((response) => response.statusCode)).toEqual([200, 200]);
    expect(await onDisk()).toEqual(written);
    expect(stack.service.capacity.keptDirs.map((dir) => path.basename(dir))).toEqual(written);
    expect(await stack.leftovers()).toEqual(noLeftovers);
  });

  test('go when the cache lets go of the code', async () => {
    await stack.invoke({ code_id: 'hello' });
    const hello = await onDisk();
    expect((await stack.invoke({ code_id: 'primes', input: { num: 6 } })).statusCode).toBe(200);
    await stack.service.capacity.settled();
    const primes = await onDisk();
    expect(primes).toHaveLength(1);
    expect(primes).not.toEqual(hello);
    expect(await stack.leftovers()).toEqual(noLeftovers);
  });
});

describe.runIf(cgroups)('the memory limit', () => {
  let stack: Stack;
  beforeAll(async () => {
    stack = await startStack({ env: { EXECUTION_TIMEOUT_MS: '15000' }, pool: { count: 1, memory: '100M' } });
  });
  afterAll(() => stack?.close());

  test('a function that allocates past it gets the OOM answer, and the cgroup serves the next request', async () => {
    const response = await stack.invoke({ code_id: 'oom', input: {} });
    expect(response.statusCode).toBe(500);
    expect(response.body.message).toBe('The execution of the code has run out of memory.');
    expect(await stack.leftovers()).toEqual(noLeftovers);

    const next = await stack.invoke({ code_id: 'hello', input: {} });
    expect(next.statusCode).toBe(200);
  });

  test("a global scope that fills V8's heap before workerd listens gets the OOM answer, not a code error", async () => {
    const response = await stack.invoke({ code_id: 'global-heap-oom', input: {} });
    expect(response.statusCode).toBe(500);
    expect(response.body.message).toBe('The execution of the code has run out of memory.');
    expect(String(response.body.data)).toContain('Reached heap limit');
    expect(await stack.leftovers()).toEqual(noLeftovers);
  });
});

describe.runIf(cgroups)('upstream failures', () => {
  // Port 9 (discard) has no listener: the upstream is down.
  test.each<{ name: string; env: Record<string, string>; message: string }>([
    {
      name: 'attestation server down answers 500 without touching the storage server',
      env: { ATTESTATION_URL: 'http://127.0.0.1:9' },
      message: 'There was a problem in generating the attestation document',
    },
    {
      name: 'storage server down answers 500',
      env: { STORAGE_URL: 'http://127.0.0.1:9/load' },
      message: 'There was a problem in fetching the code from the storage server',
    },
  ])('$name', async ({ env, message }) => {
    const stack = await startStack({ pool: { count: 1 }, env });
    try {
      const response = await stack.invoke({ code_id: 'hello', input: {} });
      expect(response.statusCode).toBe(500);
      expect(response.body.message).toBe(message);
      expect(await stack.leftovers()).toEqual(noLeftovers);
    } finally {
      await stack.close();
    }
  });
});

describe.runIf(cgroups)('concurrency', () => {
  test.each([
    ['wait their turn in the admission queue: every answer is 200', {}, [200]],
    ['without the queue are answered 503', { ADMISSION_QUEUE_MAX: '0' }, [200, 503]],
  ])('more parallel requests than cgroups %s, and no two share a cgroup', async (_, env, expected) => {
    const stack = await startStack({ pool: { count: 2 }, env });
    try {
      // Each cgroup handed out holds no process but the standby waiting in it: no other
      // invocation's workerd, still running or still leaving.
      const reserve = stack.pool.reserve.bind(stack.pool);
      let sharing = 0;
      stack.pool.reserve = async () => {
        const lease = await reserve();
        if (lease && readPids(lease.cgroup).some((pid) => pid !== lease.standby.pid)) sharing += 1;
        return lease;
      };

      const responses = await Promise.all(
        Array.from({ length: 8 }, (_, i) => stack.invoke({ code_id: 'echo', input: { request: i } })),
      );
      const statuses = responses.map((response) => response.statusCode);
      expect([...new Set(statuses)].sort()).toEqual(expected);
      for (const [i, response] of responses.entries()) {
        if (response.statusCode === 200) expect(JSON.parse(response.body.data as string)).toEqual({ request: i });
        else expect(response.headers['retry-after']).toBe('1');
      }
      expect(sharing).toBe(0);
      expect(await stack.leftovers()).toEqual(noLeftovers);
    } finally {
      await stack.close();
    }
  });
});
