// Sequential latency: one invocation per side per round, the sides' order rotating each round, so
// drift of the machine (other load, thermal, page cache) lands on every side alike and each
// round gives one comparable pair of any two sides.
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { InvocationError, type Side, type SideKey } from './sides.js';

// A side failing this often means the bench is broken, not slow: stop rather than report noise.
const maxFailureShare = 0.1;
const maxFailuresAlways = 3;
const keptErrorMessages = 5;

/** One side's timed invocations, in round order; undefined where the invocation failed. */
export interface LatencySamples {
  samplesMs: Array<number | undefined>;
  failures: number;
  /** The first few failure messages. */
  errors: string[];
}

export interface LatencyOptions {
  readonly rounds: number;
  readonly warmupRounds: number;
  /** Idle time before each invocation, as between the requests of a lightly loaded service. */
  readonly gapMs: number;
  /** Called once the warm-up rounds are over, before the first timed one. */
  readonly afterWarmup?: () => Promise<void>;
  /** Called after each timed round. */
  readonly onRound?: (round: number) => void;
}

/** Runs the untimed warm-up rounds, then the timed ones; returns each side's samples by key. */
export async function measureLatency(
  sides: readonly Side[],
  options: LatencyOptions,
): Promise<Map<SideKey, LatencySamples>> {
  const results = new Map<SideKey, LatencySamples>(
    sides.map((side) => [side.key, { samplesMs: [], failures: 0, errors: [] }]),
  );
  for (let round = 0; round < options.warmupRounds; round += 1) {
    for (const side of orderForRound(sides, round)) {
      await sleep(options.gapMs);
      await side.invoke().catch(() => undefined);
    }
  }
  await options.afterWarmup?.();
  const failureBudget = Math.max(maxFailuresAlways, Math.ceil(options.rounds * maxFailureShare));
  for (let round = 0; round < options.rounds; round += 1) {
    for (const side of orderForRound(sides, round)) {
      const result = results.get(side.key)!;
      await sleep(options.gapMs);
      const start = performance.now();
      try {
        await side.invoke();
        result.samplesMs[round] = performance.now() - start;
      } catch (error) {
        result.samplesMs[round] = undefined;
        result.failures += 1;
        if (result.errors.length < keptErrorMessages)
          result.errors.push(error instanceof Error ? error.message : String(error));
        if (result.failures > failureBudget) {
          throw new Error(
            `${side.label} failed ${result.failures} times; the last: ${error instanceof InvocationError ? error.message : String(error)}`,
          );
        }
      }
    }
    options.onRound?.(round + 1);
  }
  return results;
}

/**
 * The sides starting at a different one each round, and in reverse every other cycle, so no side
 * always follows the same neighbour (Miniflare, say, leaves garbage behind in this process).
 */
export function orderForRound<T>(items: readonly T[], round: number): T[] {
  if (items.length === 0) return [];
  const shift = round % items.length;
  const rotated = [...items.slice(shift), ...items.slice(0, shift)];
  return Math.floor(round / items.length) % 2 === 1 ? rotated.reverse() : rotated;
}
