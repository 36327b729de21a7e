import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, test } from 'vitest';
import { warmUp } from '../../../bench/load.js';
import { InvocationError, type Side, type SideKey } from '../../../bench/sides.js';

// Invocations in flight on any side.
const all = { inFlight: 0, mostInFlight: 0 };

// A side that counts its invocations and how many ran at once, and whose process uses 2 ms of CPU
// for each; every third one fails.
function countingSide(key: SideKey) {
  const seen = { invocations: 0, inFlight: 0, mostInFlight: 0 };
  const side: Side = {
    key,
    label: key,
    stages: new Map(),
    cpu: async () => ({ process: 2 * seen.invocations, workerd: undefined }),
    invoke: async () => {
      seen.invocations += 1;
      seen.inFlight += 1;
      all.inFlight += 1;
      seen.mostInFlight = Math.max(seen.mostInFlight, seen.inFlight);
      all.mostInFlight = Math.max(all.mostInFlight, all.inFlight);
      await sleep(1);
      seen.inFlight -= 1;
      all.inFlight -= 1;
      if (seen.invocations % 3 === 0) throw new InvocationError('HTTP 503', 'busy', true);
    },
  };
  return { side, seen };
}

describe("the bench's warm-up", () => {
  test('runs the given number of invocations on each side, one side at a time, at the given concurrency, failures and all', async () => {
    const [first, second] = [countingSide('limit'), countingSide('warm')];
    const order: SideKey[] = [];
    const steady = await warmUp([first.side, second.side], {
      concurrency: 4,
      invocations: 30,
      onSide: (side) => order.push(side.key),
    });
    expect(order).toEqual(['limit', 'warm']);
    // Never both sides at once.
    expect(all.mostInFlight).toBe(4);
    for (const { seen } of [first, second]) expect(seen).toEqual({ invocations: 30, inFlight: 0, mostInFlight: 4 });
    // The last third is timed: each side's own CPU over it, per invocation.
    expect(steady).toEqual([
      { key: 'limit', invocations: 10, processMsPerInvocation: 2 },
      { key: 'warm', invocations: 10, processMsPerInvocation: 2 },
    ]);
  });
});
