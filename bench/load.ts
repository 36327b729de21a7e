// Throughput: a closed loop of `concurrency` clients, each starting its next invocation as soon as
// the previous one ends, for a fixed time. The same loop drives every side (autocannon could drive
// only the HTTP ones), cut into slices that alternate between the sides against machine drift.
import { performance } from 'node:perf_hooks';
import { orderForRound } from './latency.js';
import { InvocationError, type Side, type SideKey } from './sides.js';

/**
 * How long a client waits after "503 Server busy" before retrying. The service asks for 1 s
 * (Retry-After); a short pause keeps the pool saturated without a storm of instant retries.
 */
export const busyBackoffMs = 10;

/** One side's totals at one concurrency, over all of its slices. */
export interface LoadResult {
  ok: number;
  /** Failed invocations by kind, e.g. {"HTTP 503": 12}. */
  errors: Record<string, number>;
  /** Time under load, from each slice's start until its last invocation ended. */
  elapsedMs: number;
  /** Latency of each successful invocation. */
  latenciesMs: number[];
  /** CPU the service process used during this side's slices, when the side is a service. */
  serviceCpuMs?: number;
}

export interface LoadOptions {
  readonly concurrency: number;
  readonly durationS: number;
  readonly sliceS: number;
  /** Called after each slice. */
  readonly onSlice?: (done: number, total: number) => void;
}

/** Loads every side for durationS in total at the given concurrency; returns the totals by side. */
export async function runLoad(sides: readonly Side[], options: LoadOptions): Promise<Map<SideKey, LoadResult>> {
  const results = new Map<SideKey, LoadResult>(
    sides.map((side) => [side.key, { ok: 0, errors: {}, elapsedMs: 0, latenciesMs: [] }]),
  );
  const rounds = Math.max(1, Math.round(options.durationS / options.sliceS));
  const sliceMs = (options.durationS * 1000) / rounds;
  let done = 0;
  for (let round = 0; round < rounds; round += 1) {
    for (const side of orderForRound(sides, round)) {
      const result = results.get(side.key)!;
      const cpuBefore = await side.service?.cpuMs();
      await runSlice(side, options.concurrency, sliceMs, result);
      const cpuAfter = await side.service?.cpuMs();
      if (cpuBefore !== undefined && cpuAfter !== undefined)
        result.serviceCpuMs = (result.serviceCpuMs ?? 0) + cpuAfter - cpuBefore;
      done += 1;
      options.onSlice?.(done, rounds * sides.length);
    }
  }
  return results;
}

// Runs `concurrency` clients against one side until sliceMs have passed, then waits for the
// invocations in flight (bounded by each invocation's own time limit).
async function runSlice(side: Side, concurrency: number, sliceMs: number, result: LoadResult): Promise<void> {
  const start = performance.now();
  const end = start + sliceMs;
  const client = async () => {
    while (performance.now() < end) {
      const begun = performance.now();
      try {
        await side.invoke();
        result.latenciesMs.push(performance.now() - begun);
        result.ok += 1;
      } catch (error) {
        const kind = error instanceof InvocationError ? error.kind : 'failed';
        result.errors[kind] = (result.errors[kind] ?? 0) + 1;
        if (error instanceof InvocationError && error.busy)
          await new Promise((resolve) => setTimeout(resolve, busyBackoffMs));
      }
    }
  };
  await Promise.all(Array.from({ length: concurrency }, client));
  result.elapsedMs += performance.now() - start;
}
