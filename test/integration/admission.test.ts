import { performance } from 'node:perf_hooks';
import { afterEach, beforeEach, describe, expect, test } from 'vitest';
import { isServiceError, ServiceError } from '../../src/errors.js';
import { StageTimer } from '../../src/stages.js';
import { cgroupsOrSkip } from '../helpers/cgroups.js';
import { noLeftovers, type Stack, startStack } from '../helpers/stack.js';
import { waitFor } from '../helpers/wait.js';

const cgroups = await cgroupsOrSkip();
// Far longer than any test here takes, so that only what the test does ends a wait.
const waitMs = 20_000;
// A refusal that comes "at once" comes within this.
const promptMs = 500;

// A request waiting for the one cgroup of the pool, which a slow invocation holds.
describe.runIf(cgroups)('a request waiting for a cgroup', () => {
  let stack: Stack;
  let holding: ReturnType<Stack['invoke']>;
  beforeEach(async () => {
    stack = await startStack({ pool: { count: 1 }, env: { ADMISSION_WAIT_MS: String(waitMs) } });
    holding = stack.invoke({ code_id: 'slow', input: { ms: 1500 } });
    await waitFor('the cgroup to be taken', async () => stack.service.capacity.cgroups.free === 0);
  });
  afterEach(async () => {
    await holding;
    expect(await stack.leftovers()).toEqual(noLeftovers);
    await stack.close();
  });

  const untilQueued = () => waitFor('the request to wait', async () => stack.service.capacity.queued === 1);

  test('gets the cgroup when it is given back, and says how long it waited in Server-Timing', async () => {
    const waiting = stack.invoke({ code_id: 'hello', input: { name: 'Ada' } });
    await untilQueued();
    const answer = await waiting;
    expect(answer.statusCode).toBe(200);
    expect(answer.body.data).toBe('Hello, Ada!');
    const queued = /\bqueue;dur=([\d.]+)/.exec(String(answer.headers['server-timing']));
    expect(Number(queued?.[1])).toBeGreaterThan(500);
  });

  test('is answered DRAINING at once when the instance is drained, while the one running finishes', async () => {
    const waiting = stack.invoke({ code_id: 'hello' });
    await untilQueued();
    const started = performance.now();
    stack.service.gates.setDraining(true);
    const refused = await waiting;
    expect(performance.now() - started).toBeLessThan(promptMs);
    expect(refused.statusCode).toBe(503);
    expect(refused.headers['x-oyster-error']).toBe('DRAINING');
    expect((await holding).statusCode).toBe(200);
    stack.service.gates.setDraining(false);
  });

  test('is answered SHUTTING_DOWN at once when shutdown begins', async () => {
    const waiting = stack.invoke({ code_id: 'hello' });
    await untilQueued();
    const started = performance.now();
    const drained = stack.service.gates.drain(5_000);
    const refused = await waiting;
    expect(performance.now() - started).toBeLessThan(promptMs);
    expect(refused.headers['x-oyster-error']).toBe('SHUTTING_DOWN');
    await drained;
  });

  test('leaves the queue when its client goes away, and the next one waits in its place', async () => {
    const client = new AbortController();
    const leaving = stack.service
      .invoke({
        codeId: 'hello',
        request: { method: 'POST', target: '/', headers: {}, body: Buffer.from('{}') },
        signal: client.signal,
        stages: new StageTimer(),
        log: { error: () => undefined },
      })
      .catch((error: unknown) => error);
    await untilQueued();
    client.abort(new ServiceError('CLIENT_CLOSED'));
    expect(isServiceError(await leaving, 'CLIENT_CLOSED')).toBe(true);
    expect(stack.service.capacity.queued).toBe(0);
    const next = stack.invoke({ code_id: 'hello', input: { name: 'Bo' } });
    await untilQueued();
    expect((await next).body.data).toBe('Hello, Bo!');
  });
});
