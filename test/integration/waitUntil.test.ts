import { performance } from 'node:perf_hooks';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { cgroupsOrSkip } from '../helpers/cgroups.js';
import { metricValue } from '../helpers/metrics.js';
import { noLeftovers, type Stack, startStack } from '../helpers/stack.js';

const cgroups = await cgroupsOrSkip();

const timeLimitMs = 3_000;
const cpuLimitMs = 200;
// Long enough that an answer held back for it would show.
const backgroundMs = 1_200;

// How many invocations' waitUntil work ended with this outcome, from the service's metrics.
const waitUntilCount = (stack: Stack, outcome: string) =>
  metricValue(stack.service, 'oyster_wait_until_total', { outcome });

// GETs a function through the HTTP route; resolves with the answer and when it came.
async function call(stack: Stack, codeId: string, query: string) {
  const started = performance.now();
  const response = await stack.app.inject({ method: 'GET', url: `/fn/${codeId}/?${query}` });
  return { response, started, answeredAfterMs: performance.now() - started };
}

// Work handed to waitUntil (ctx.waitUntil, this.ctx.waitUntil, event.waitUntil) may finish after
// the answer has gone, within the invocation's time limit, before workerd is killed.
describe.runIf(cgroups)('waitUntil', () => {
  let stack: Stack;
  beforeAll(async () => {
    stack = await startStack({
      pool: { count: 2 },
      env: { EXECUTION_TIMEOUT_MS: String(timeLimitMs), CPU_LIMIT_MS: String(cpuLimitMs) },
    });
  });
  afterAll(() => stack?.close());

  test.each([
    ['ctx.waitUntil of a handler object', 'wait-until'],
    ['this.ctx.waitUntil of a WorkerEntrypoint class', 'wait-until-class'],
    ['event.waitUntil of a service worker', 'wait-until-sw'],
  ])('%s: the answer does not wait for the work, and workerd is kept until the work has settled', async (_, codeId) => {
    const settledBefore = await waitUntilCount(stack, 'settled');
    const { response, started, answeredAfterMs } = await call(stack, codeId, `ms=${backgroundMs}`);
    expect(response.statusCode).toBe(200);
    expect(response.body).toBe('answered');
    expect(response.headers['oyster-guard']).toBeUndefined();
    expect(answeredAfterMs).toBeLessThan(backgroundMs);
    // The cgroup is still held: its workerd is working.
    expect(stack.pool.free).toBe(stack.pool.size - 1);
    await stack.service.capacity.settled();
    expect(performance.now() - started).toBeGreaterThanOrEqual(backgroundMs);
    expect(await waitUntilCount(stack, 'settled')).toBe(settledBefore + 1);
    expect(await stack.leftovers()).toEqual(noLeftovers);
  });

  test('work that outlasts the time limit is cut short at the limit', async () => {
    const cutBefore = await waitUntilCount(stack, 'time_limit');
    const { response, started } = await call(stack, 'wait-until', 'ms=60000');
    expect(response.statusCode).toBe(200);
    await stack.service.capacity.settled();
    const endedAfterMs = performance.now() - started;
    expect(endedAfterMs).toBeGreaterThanOrEqual(timeLimitMs - 100);
    expect(endedAfterMs).toBeLessThan(timeLimitMs + 2_000);
    expect(await waitUntilCount(stack, 'time_limit')).toBe(cutBefore + 1);
    expect(await stack.leftovers()).toEqual(noLeftovers);
  });

  test('work past the CPU limit is cut short at it, long before the time limit', async () => {
    const cutBefore = await waitUntilCount(stack, 'cpu_limit');
    const { response, started } = await call(stack, 'wait-until', 'ms=10&spin');
    expect(response.statusCode).toBe(200);
    await stack.service.capacity.settled();
    expect(performance.now() - started).toBeLessThan(timeLimitMs / 2);
    expect(await waitUntilCount(stack, 'cpu_limit')).toBe(cutBefore + 1);
    expect(await stack.leftovers()).toEqual(noLeftovers);
  });

  test('a function that hands nothing to waitUntil is killed at once', async () => {
    const counts = async () =>
      Promise.all(
        ['settled', 'time_limit', 'cpu_limit', 'shutdown', 'failed'].map((outcome) => waitUntilCount(stack, outcome)),
      );
    const before = await counts();
    const response = await stack.invoke({ code_id: 'hello', input: { name: 'Ada' } });
    expect(response.statusCode).toBe(200);
    await stack.service.capacity.settled();
    expect(await counts()).toEqual(before);
    expect(await stack.leftovers()).toEqual(noLeftovers);
  });
});

describe.runIf(cgroups)('waitUntil at shutdown', () => {
  test('shutdown waits for the work within its grace', async () => {
    const stack = await startStack({ pool: { count: 1 } });
    try {
      const { response } = await call(stack, 'wait-until', `ms=${backgroundMs}`);
      expect(response.statusCode).toBe(200);
      const draining = performance.now();
      await stack.service.gates.drain(10_000);
      expect(performance.now() - draining).toBeGreaterThanOrEqual(backgroundMs / 2);
      expect(await waitUntilCount(stack, 'settled')).toBe(1);
      expect(await stack.leftovers()).toEqual(noLeftovers);
    } finally {
      await stack.close();
    }
  });

  test('shutdown cuts the work short once its grace is over', async () => {
    const stack = await startStack({ pool: { count: 1 } });
    try {
      const { response } = await call(stack, 'wait-until', 'ms=60000');
      expect(response.statusCode).toBe(200);
      const draining = performance.now();
      await stack.service.gates.drain(300);
      expect(performance.now() - draining).toBeLessThan(2_000);
      expect(await waitUntilCount(stack, 'shutdown')).toBe(1);
      expect(await stack.leftovers()).toEqual(noLeftovers);
    } finally {
      await stack.close();
    }
  });
});
