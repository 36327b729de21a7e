import { describe, expect, test } from 'vitest';
import { AdmissionQueue } from '../../src/capacity/admissionQueue.js';
import { isServiceError, ServiceError } from '../../src/errors.js';

// Places handed out by hand: the test frees one, and the queue is told as the pool tells it.
function queueOver(options: { maxLength?: number; maxWaitMs?: number } = {}) {
  const free: string[] = [];
  const givenBack: string[] = [];
  let placing: Promise<void> | undefined;
  const queue = new AdmissionQueue<string>({
    maxLength: options.maxLength ?? 8,
    maxWaitMs: options.maxWaitMs ?? 10_000,
    // What is free when a look begins is what it finds, however long it takes.
    place: async (codeId) => {
      const place = free.shift();
      await placing;
      return place && `${place} for ${codeId}`;
    },
    giveBack: (placement) => givenBack.push(placement),
    busy: ({ queued, waitedMs }) => new ServiceError('SERVER_BUSY', { data: { queued, waited_ms: waitedMs } }),
  });
  const freeOne = (place: string) => {
    free.push(place);
    queue.wake();
  };
  const slowPlacing = () => {
    let done: () => void = () => {};
    placing = new Promise((resolve) => (done = resolve));
    return () => {
      placing = undefined;
      done();
    };
  };
  return { queue, freeOne, givenBack, slowPlacing };
}

const failureOf = (promise: Promise<unknown>) =>
  promise.then(
    () => undefined,
    (error: unknown) => error,
  );
const signal = () => new AbortController().signal;
// Lets the queue's look for a place that is under way end.
const settle = () => new Promise((resolve) => setImmediate(resolve));

describe('the admission queue', () => {
  test('gives each freed place to the oldest waiter', async () => {
    const { queue, freeOne } = queueOver();
    const first = queue.wait('a', signal());
    const second = queue.wait('b', signal());
    const third = queue.wait('c', signal());
    expect(queue.length).toBe(3);
    freeOne('cgroup1');
    expect(await first).toBe('cgroup1 for a');
    freeOne('cgroup2');
    freeOne('cgroup3');
    expect([await second, await third]).toEqual(['cgroup2 for b', 'cgroup3 for c']);
    expect(queue.length).toBe(0);
  });

  test('answers SERVER_BUSY at once when maxLength wait already, and with none at all for 0', async () => {
    const { queue } = queueOver({ maxLength: 1 });
    void failureOf(queue.wait('a', signal()));
    const refused = await failureOf(queue.wait('b', signal()));
    expect(isServiceError(refused, 'SERVER_BUSY')).toBe(true);
    expect((refused as ServiceError).data).toEqual({ queued: 1, waited_ms: 0 });
    const none = queueOver({ maxLength: 0 }).queue;
    expect(isServiceError(await failureOf(none.wait('a', signal())), 'SERVER_BUSY')).toBe(true);
    queue.refuseAll(new ServiceError('SHUTTING_DOWN'));
  });

  test('answers SERVER_BUSY after maxWaitMs, and the waiter is gone from the queue', async () => {
    const { queue } = queueOver({ maxWaitMs: 50 });
    const started = performance.now();
    const refused = await failureOf(queue.wait('a', signal()));
    expect(performance.now() - started).toBeGreaterThanOrEqual(49);
    expect((refused as ServiceError).data).toEqual({ queued: 0, waited_ms: 50 });
    expect(queue.length).toBe(0);
  });

  test('lets a waiter whose client went away leave, with the signal reason, and serves the next', async () => {
    const { queue, freeOne } = queueOver();
    const client = new AbortController();
    const leaving = failureOf(queue.wait('a', client.signal));
    const staying = queue.wait('b', signal());
    client.abort(new ServiceError('CLIENT_CLOSED'));
    expect(isServiceError(await leaving, 'CLIENT_CLOSED')).toBe(true);
    expect(queue.length).toBe(1);
    freeOne('cgroup1');
    expect(await staying).toBe('cgroup1 for b');
  });

  test('gives back a place found for a waiter that left while it was being found', async () => {
    const { queue, freeOne, givenBack, slowPlacing } = queueOver();
    const client = new AbortController();
    const leaving = failureOf(queue.wait('a', client.signal));
    await settle();
    const done = slowPlacing();
    freeOne('cgroup1');
    client.abort(new ServiceError('CLIENT_CLOSED'));
    await leaving;
    done();
    await settle();
    expect(givenBack).toEqual(['cgroup1 for a']);
  });

  test('looks again when a place is freed while it is looking', async () => {
    const { queue, freeOne, slowPlacing } = queueOver();
    const waiting = queue.wait('a', signal());
    await settle();
    const done = slowPlacing();
    queue.wake();
    // Freed after the look began, which then finds it.
    freeOne('cgroup1');
    done();
    expect(await waiting).toBe('cgroup1 for a');
  });

  test('answers every waiter at once with the refusal of draining or shutdown', async () => {
    const { queue } = queueOver();
    const waiting = [queue.wait('a', signal()), queue.wait('b', signal())].map(failureOf);
    queue.refuseAll(new ServiceError('DRAINING'));
    for (const error of await Promise.all(waiting)) expect(isServiceError(error, 'DRAINING')).toBe(true);
    expect(queue.length).toBe(0);
  });
});
