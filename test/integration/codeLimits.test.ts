import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { cgroupsOrSkip } from '../helpers/cgroups.js';
import { headerFields } from '../helpers/http.js';
import { noLeftovers, type Stack, startStack } from '../helpers/stack.js';

const cgroups = await cgroupsOrSkip();

// How far past its limit an endless loop may run, in CPU time and in the execution stage's wall
// time (docs/api.md#limits has what was measured).
const marginMs = 25;
// About 10 ms of arithmetic in a fresh isolate on this machine: well under the upload's 50 ms.
const fewLoops = 200_000;

// GET /fn/limits/<path> of the wrangler upload whose config says `limits = { cpu_ms = 50, … }`.
async function call(stack: Stack, path: string) {
  const response = await stack.app.inject({ method: 'GET', url: `/fn/limits${path}` });
  const stages = headerFields(String(response.headers['server-timing'] ?? '').replaceAll(';dur', ''), '=');
  return { response, execution: stages.execution ?? 0, usage: headerFields(response.headers['x-oyster-usage'], '=') };
}

describe.runIf(cgroups)("an invocation's CPU time limit", () => {
  let stack: Stack;
  beforeAll(async () => {
    stack = await startStack({ pool: { count: 2 } });
  });
  afterAll(() => stack?.close());

  test("an endless loop is ended just past the upload's limits.cpu_ms (50 ms), with its own code", async () => {
    // What workerd's start and a request that does nothing cost, counted in the usage but not in the limit.
    const idle = await call(stack, '/');
    const { response, execution, usage } = await call(stack, '/spin');
    expect(response.statusCode).toBe(500);
    expect(response.headers['x-oyster-error']).toBe('CPU_LIMIT_EXCEEDED');
    expect(response.json()).toMatchObject({
      status: 'error',
      message: "The function used more CPU time than its limit (CPU_LIMIT_MS, or its code's limits.cpu_ms)",
    });
    // What the function printed comes with it, as with the other limits.
    expect(response.json().data).toContain('spinning for Infinity loops');
    expect(usage['cpu-ms']! - idle.usage['cpu-ms']!).toBeGreaterThan(50 - marginMs);
    expect(usage['cpu-ms']! - idle.usage['cpu-ms']!).toBeLessThan(50 + marginMs);
    expect(execution).toBeLessThan(50 + marginMs);
    expect(await stack.leftovers()).toEqual(noLeftovers);
  });

  test('time spent waiting does not count: a 2 s sleep under the 50 ms limit succeeds', async () => {
    const { response, execution, usage } = await call(stack, '/sleep?ms=2000');
    expect(response.statusCode).toBe(200);
    expect(response.body).toBe('slept 2000 ms');
    expect(execution).toBeGreaterThanOrEqual(2000);
    expect(usage['cpu-ms']).toBeLessThan(200);
  });

  test('work under the limit is answered', async () => {
    const { response } = await call(stack, `/spin?loops=${fewLoops}`);
    expect(response.statusCode).toBe(200);
    expect(response.body).toMatch(/^spun to \d+$/);
  });
});

describe.runIf(cgroups)("the operator's CPU limits", () => {
  let stack: Stack;
  beforeAll(async () => {
    stack = await startStack({ pool: { count: 1 }, env: { CPU_LIMIT_MS: '2', CPU_LIMIT_MAX_MS: '5' } });
  });
  afterAll(() => stack?.close());

  test("code that asks for more than CPU_LIMIT_MAX_MS is held to it: the upload's 50 ms ends at 5", async () => {
    const { response, execution } = await call(stack, '/spin');
    expect(response.headers['x-oyster-error']).toBe('CPU_LIMIT_EXCEEDED');
    expect(execution).toBeLessThan(5 + marginMs);
  });

  test('code that names no limit gets CPU_LIMIT_MS', async () => {
    const response = await stack.app.inject({
      method: 'POST',
      url: '/api/serverless',
      payload: { code_id: 'burn', input: { loops: 10_000_000_000 } },
    });
    expect(response.statusCode).toBe(500);
    expect(response.json()).toMatchObject({ status: 'error' });
    expect(response.headers['x-oyster-error']).toBe('CPU_LIMIT_EXCEEDED');
    const execution = headerFields(String(response.headers['server-timing']).replaceAll(';dur', ''), '=').execution;
    expect(execution).toBeLessThan(2 + marginMs);
    expect(await stack.leftovers()).toEqual(noLeftovers);
  });
});

// GET /fn/memory-limit/?mb=N of the wrangler upload whose config says `limits = { memory_mb = 128 }`.
const fill = (stack: Stack, mb: number) => stack.app.inject({ method: 'GET', url: `/fn/memory-limit/?mb=${mb}` });

describe.runIf(cgroups)("an upload's memory limit", () => {
  test("less than the cgroup's: objects past it are answered out-of-memory by V8's limit, not the cgroup's", async () => {
    const stack = await startStack({ pool: { count: 1, memory: '256M' } });
    try {
      expect((await fill(stack, 10)).statusCode).toBe(200);
      // About 100 MiB of objects: within a 256M cgroup's heap, past a 128 MiB one's.
      const full = await fill(stack, 100);
      expect(full.headers['x-oyster-error']).toBe('OUT_OF_MEMORY');
      expect(full.json().data).toContain('Reached heap limit');
      expect(await stack.leftovers()).toEqual(noLeftovers);
    } finally {
      await stack.close();
    }
  });

  test("more than the cgroup's: a 400 that names the limit, before workerd starts", async () => {
    const stack = await startStack({ pool: { count: 1, memory: '100M' } });
    try {
      const refused = await fill(stack, 0);
      expect(refused.statusCode).toBe(400);
      expect(refused.headers['x-oyster-error']).toBe('LIMIT_NOT_ALLOWED');
      expect(refused.json().data).toBe('limits.memory_mb 128 is more than the 100 MiB this instance allows');
      expect(refused.headers['server-timing']).not.toContain('start;');
      expect(await stack.leftovers()).toEqual(noLeftovers);
    } finally {
      await stack.close();
    }
  });
});
