import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, test } from 'vitest';
import { watchCpu } from '../../src/capacity/cpuLimit.js';
import { isServiceError } from '../../src/errors.js';

// A CPU counter that runs at `pace` CPUs from now on, and counts how often it was read.
function counter(pace: number) {
  const startedMs = performance.now();
  const read = { count: 0 };
  const readUs = () => {
    read.count += 1;
    return (performance.now() - startedMs) * pace * 1000;
  };
  return { read, readUs };
}

function fired(signal: AbortSignal): Promise<number> {
  const startedMs = performance.now();
  return new Promise((resolve) =>
    signal.addEventListener('abort', () => resolve(performance.now() - startedMs), { once: true }),
  );
}

describe('the CPU limit watch', () => {
  test('fires with CPU_LIMIT_EXCEEDED once the counter passes the limit, not before', async () => {
    const { readUs } = counter(1);
    const watch = watchCpu({ limitMs: 40, readUs, parent: new AbortController().signal, cpus: 2 });
    const afterMs = await fired(watch.signal);
    expect(afterMs).toBeGreaterThanOrEqual(39);
    expect(afterMs).toBeLessThan(60);
    expect(isServiceError(watch.signal.reason, 'CPU_LIMIT_EXCEEDED')).toBe(true);
  });

  test('a counter as fast as every CPU at once is caught at its limit too', async () => {
    const { readUs } = counter(4);
    const watch = watchCpu({ limitMs: 40, readUs, parent: new AbortController().signal, cpus: 4 });
    expect(await fired(watch.signal)).toBeLessThan(10 + 20);
  });

  test('an invocation well under its limit costs one read', async () => {
    const { read, readUs } = counter(1);
    const watch = watchCpu({ limitMs: 1_000, readUs, parent: new AbortController().signal, cpus: 2 });
    await sleep(20);
    watch.clear();
    await sleep(600);
    expect(read.count).toBe(1);
    expect(watch.signal.aborted).toBe(false);
  });

  test("the parent's end passes on with its reason", async () => {
    const parent = new AbortController();
    const watch = watchCpu({ limitMs: 1_000, readUs: counter(1).readUs, parent: parent.signal });
    parent.abort('gone');
    expect(watch.signal.reason).toBe('gone');
  });

  test('without a counter to read, nothing fires: the wall-clock limit is then the bound', async () => {
    const watch = watchCpu({ limitMs: 1, readUs: () => undefined, parent: new AbortController().signal });
    await sleep(20);
    expect(watch.signal.aborted).toBe(false);
  });
});
