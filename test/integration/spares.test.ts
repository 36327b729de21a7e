import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest';
import { isServiceError, ServiceError } from '../../src/errors.js';
import { cgroupsOrSkip } from '../helpers/cgroups.js';
import { metricValue } from '../helpers/metrics.js';
import { invokeAbandoned, noLeftovers, processesMentioning, type Stack, startStack } from '../helpers/stack.js';
import { waitFor } from '../helpers/wait.js';

const cgroups = await cgroupsOrSkip();

const timeLimitMs = 2_000;

const hits = (stack: Stack) => metricValue(stack.service, 'oyster_spare_hits_total');
const killed = (stack: Stack, reason: string) => metricValue(stack.service, 'oyster_spares_killed_total', { reason });

// Waits until the service holds this many spares, each listening.
async function sparesReady(stack: Stack, count: number): Promise<void> {
  await stack.service.capacity.settled();
  const { spares } = stack.service.capacity;
  await waitFor(`${count} spares`, async () => spares.count === count && spares.listening === count);
}

// The workerd processes of this stack: those of spares, and any left behind.
const workerdProcesses = (stack: Stack) => processesMentioning(stack.config.runtimePath);

// A spare: a fresh workerd started for cached code once an invocation of it has ended, which the
// next invocation of that code takes instead of starting its own.
describe.runIf(cgroups)('spares', () => {
  let stack: Stack;
  beforeAll(async () => {
    stack = await startStack({
      pool: { count: 3 },
      env: { SPARES_MAX: '2', SPARES_PER_CODE: '1', EXECUTION_TIMEOUT_MS: String(timeLimitMs) },
    });
  });
  afterAll(() => stack?.close());
  // Each test starts without spares, and leaves none.
  afterEach(async () => {
    await stack.service.capacity.settled();
    stack.service.gates.setDraining(true);
    stack.service.gates.setDraining(false);
    await sparesReady(stack, 0);
  });

  test('a spare serves exactly one invocation, in a workerd that served no one before, killed after its answer', async () => {
    const hitsBefore = await hits(stack);
    const ids = new Set<unknown>();
    for (let round = 0; round < 4; round += 1) {
      const { statusCode, body } = await stack.invoke({ code_id: 'process-id' });
      expect(statusCode).toBe(200);
      ids.add(body.data);
      await sparesReady(stack, 1);
      // The workerd that answered is gone; only the next one, the spare, runs.
      expect(await workerdProcesses(stack)).toHaveLength(1);
    }
    expect(ids.size).toBe(4);
    expect((await hits(stack)) - hitsBefore).toBe(3);
  });

  test('a miss is an invocation of cached code that found no spare: not a first fetch, not a hit', async () => {
    const misses = () => metricValue(stack.service, 'oyster_spare_misses_total');
    const before = await misses();
    await stack.invoke({ code_id: 'echo' });
    expect(await misses()).toBe(before);
    await sparesReady(stack, 1);
    await stack.invoke({ code_id: 'echo' });
    expect(await misses()).toBe(before);
    await stack.service.capacity.settled();
    stack.service.gates.setDraining(true);
    stack.service.gates.setDraining(false);
    await sparesReady(stack, 0);
    await stack.invoke({ code_id: 'echo' });
    expect(await misses()).toBe(before + 1);
  });

  test('a request abandoned before it is admitted takes no spare', async () => {
    await stack.invoke({ code_id: 'process-id' });
    await sparesReady(stack, 1);
    const hitsBefore = await hits(stack);
    const failure = await invokeAbandoned(stack.service, 'process-id', new ServiceError('CLIENT_CLOSED'));
    expect(isServiceError(failure, 'CLIENT_CLOSED')).toBe(true);
    expect(await hits(stack)).toBe(hitsBefore);
    expect(stack.service.capacity.spares.listening).toBe(1);
  });

  test('a spare runs only the code it was started for', async () => {
    await stack.invoke({ code_id: 'process-id' });
    await sparesReady(stack, 1);
    const hitsBefore = await hits(stack);
    const { statusCode, body } = await stack.invoke({ code_id: 'hello', input: { name: 'spare' } });
    expect(statusCode).toBe(200);
    expect(body.data).toBe('Hello, spare!');
    expect(await hits(stack)).toBe(hitsBefore);
  });

  test('the time limit counts from when a request takes the spare, not from its start', async () => {
    await stack.invoke({ code_id: 'process-id' });
    await sparesReady(stack, 1);
    await sleep(timeLimitMs + 500);
    const hitsBefore = await hits(stack);
    expect((await stack.invoke({ code_id: 'process-id' })).statusCode).toBe(200);
    expect(await hits(stack)).toBe(hitsBefore + 1);
  });

  test('what the function printed while its spare started is in the answer, as without a spare', async () => {
    await stack.invoke({ code_id: 'global-log-throw' });
    await sparesReady(stack, 1);
    const hitsBefore = await hits(stack);
    const { statusCode, body } = await stack.invoke({ code_id: 'global-log-throw' });
    expect(await hits(stack)).toBe(hitsBefore + 1);
    expect(statusCode).toBe(500);
    expect(body.data).toContain('printed while starting');
    expect(body.data).toContain('thrown while answering');
  });

  test("an invocation that took a spare is charged the spare's start, as one that started its own", async () => {
    const cpuMs = async () => {
      const response = await stack.app.inject({
        method: 'POST',
        url: '/api/serverless',
        payload: { code_id: 'process-id' },
      });
      return Number(/cpu-ms=([\d.]+)/.exec(String(response.headers['x-oyster-usage']))?.[1]);
    };
    const started = await cpuMs();
    await sparesReady(stack, 1);
    const hitsBefore = await hits(stack);
    const spared = await cpuMs();
    expect(await hits(stack)).toBe(hitsBefore + 1);
    // A start is most of a small function's CPU: without it, the second would be a fraction.
    expect(spared).toBeGreaterThan(0.5 * started);
  });

  test('code that does not start cleanly gets no spare', async () => {
    const readyBefore = await metricValue(stack.service, 'oyster_spares_ready_total');
    const failedBefore = await killed(stack, 'start_failed');
    expect((await stack.invoke({ code_id: 'syntax-error' })).statusCode).toBe(400);
    await stack.service.capacity.settled();
    expect(stack.service.capacity.spares.count).toBe(0);
    expect(await metricValue(stack.service, 'oyster_spares_ready_total')).toBe(readyBefore);
    expect(await killed(stack, 'start_failed')).toBe(failedBefore);
  });

  test('spares are bounded per code (SPARES_PER_CODE) and in all (SPARES_MAX), and never take the last free cgroup', async () => {
    await Promise.all([stack.invoke({ code_id: 'process-id' }), stack.invoke({ code_id: 'process-id' })]);
    await sparesReady(stack, 1);
    await stack.invoke({ code_id: 'hello' });
    await sparesReady(stack, 2);
    await stack.invoke({ code_id: 'echo' });
    await sparesReady(stack, 2);
    expect(stack.pool.free).toBe(1);
    expect(await workerdProcesses(stack)).toHaveLength(2);
  });

  test('requests for other code take the cgroups of spares (oldest first) rather than answer 503', async () => {
    await stack.invoke({ code_id: 'process-id' });
    await stack.invoke({ code_id: 'hello' });
    await sparesReady(stack, 2);
    const otherBefore = await killed(stack, 'other_code');
    const answers = await Promise.all([1, 2, 3].map(() => stack.invoke({ code_id: 'slow', input: { ms: 300 } })));
    expect(answers.map((answer) => answer.statusCode)).toEqual([200, 200, 200]);
    expect((await killed(stack, 'other_code')) - otherBefore).toBe(2);
  });

  test('draining kills the spares and leaves nothing behind; resuming brings them back', async () => {
    await stack.invoke({ code_id: 'process-id' });
    await sparesReady(stack, 1);
    const drainedBefore = await killed(stack, 'drain');
    stack.service.gates.setDraining(true);
    await sparesReady(stack, 0);
    expect(await killed(stack, 'drain')).toBe(drainedBefore + 1);
    expect(await stack.leftovers()).toEqual(noLeftovers);
    expect(await workerdProcesses(stack)).toEqual([]);
    stack.service.gates.setDraining(false);
    await stack.invoke({ code_id: 'process-id' });
    await sparesReady(stack, 1);
  });
});

describe.runIf(cgroups)('spares end', () => {
  test('when the cache lets go of their code', async () => {
    // Room for one small entry: each new code_id evicts the one before.
    const stack = await startStack({ pool: { count: 3 }, env: { SPARES_MAX: '2', CODE_CACHE_MAX_BYTES: '30000' } });
    try {
      await stack.invoke({ code_id: 'process-id' });
      await sparesReady(stack, 1);
      await stack.invoke({ code_id: 'hello' });
      await sparesReady(stack, 1);
      expect(await killed(stack, 'code_evicted')).toBe(1);
      expect(await workerdProcesses(stack)).toHaveLength(1);
      // The spare left is hello's: process-id is fetched and started anew.
      const hitsBefore = await hits(stack);
      expect((await stack.invoke({ code_id: 'process-id' })).statusCode).toBe(200);
      expect(await hits(stack)).toBe(hitsBefore);
    } finally {
      await stack.close();
    }
  });

  test('after SPARE_IDLE_MS unused, their cgroup free again', async () => {
    const stack = await startStack({ pool: { count: 2 }, env: { SPARES_MAX: '1', SPARE_IDLE_MS: '300' } });
    try {
      await stack.invoke({ code_id: 'process-id' });
      await sparesReady(stack, 1);
      await waitFor('the idle spare to go', async () => (await killed(stack, 'idle')) === 1);
      await sparesReady(stack, 0);
      expect(await stack.leftovers()).toEqual(noLeftovers);
      expect(stack.pool.free).toBe(2);
    } finally {
      await stack.close();
    }
  });

  test('at shutdown, with nothing left behind', async () => {
    const stack = await startStack({ pool: { count: 2 }, env: { SPARES_MAX: '1' } });
    const runtime = stack.config.runtimePath;
    await stack.invoke({ code_id: 'process-id' });
    await sparesReady(stack, 1);
    expect(await processesMentioning(runtime)).toHaveLength(1);
    await stack.app.close();
    expect(await processesMentioning(runtime)).toEqual([]);
    expect(await killed(stack, 'shutdown')).toBe(1);
    await stack.close();
  });
});
