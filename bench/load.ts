// Throughput: a closed loop of `concurrency` clients, each starting its next invocation as soon as
// the previous one ends, for a fixed time. The same loop drives every side (autocannon could drive
// only the HTTP ones), cut into slices that alternate between the sides against machine drift.
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
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
  /** CPU used during this side's slices, by process, where the side tells its own. */
  cpu?: LoadCpu;
}

/** CPU in ms used during a side's slices, by process. */
export interface LoadCpu {
  /** The side's own process: the service, or the driver that spawns bare workerd. */
  process: number;
  /** The workerd it ran (see SideCpu); undefined when it cannot be read. */
  workerd: number | undefined;
  /** The development upstream servers, which only the cold service calls. */
  upstreams: number;
  /** This process: the clients of the closed loop. */
  client: number;
}

export interface LoadOptions {
  readonly concurrency: number;
  readonly durationS: number;
  readonly sliceS: number;
  /** Called after each slice. */
  readonly onSlice?: (done: number, total: number) => void;
  /** The CPU in ms the upstream servers have used so far, when they run. */
  readonly upstreamsCpuMs?: () => Promise<number>;
}

/** A side's own process's CPU per invocation over the last third of its warm-up, alone under steady load. */
export interface SteadyCpu {
  readonly key: SideKey;
  readonly invocations: number;
  /** Gross: the process's whole CPU over those invocations, its idle background included. */
  readonly processMsPerInvocation: number;
}

/**
 * Runs `invocations` invocations on each side in turn at the given concurrency, so that what is
 * measured afterwards is each process as it runs once V8 has optimised its code. The last third
 * is timed for CPU where the side tells it: each side alone and kept busy, as the alternating
 * slices of the throughput section never find it.
 */
export async function warmUp(
  sides: readonly Side[],
  options: { readonly concurrency: number; readonly invocations: number; readonly onSide?: (side: Side) => void },
): Promise<SteadyCpu[]> {
  const steady: SteadyCpu[] = [];
  for (const side of sides) {
    options.onSide?.(side);
    const timed = Math.floor(options.invocations / 3);
    await invokeMany(side, options.concurrency, options.invocations - timed);
    const before = await side.cpu?.();
    await invokeMany(side, options.concurrency, timed);
    const after = await side.cpu?.();
    if (before && after && timed > 0)
      steady.push({
        key: side.key,
        invocations: timed,
        processMsPerInvocation: (after.process - before.process) / timed,
      });
  }
  return steady;
}

// Runs `count` invocations at `concurrency`, whatever they answer; a busy service is retried after a pause.
async function invokeMany(side: Side, concurrency: number, count: number): Promise<void> {
  let left = count;
  const client = async () => {
    while (left > 0) {
      left -= 1;
      await side.invoke().catch(async (error: unknown) => {
        if (error instanceof InvocationError && error.busy) await sleep(busyBackoffMs);
      });
    }
  };
  await Promise.all(Array.from({ length: concurrency }, client));
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
      const before = await readCpu(side, options);
      await runSlice(side, options.concurrency, sliceMs, result);
      const after = await readCpu(side, options);
      if (before && after) result.cpu = addCpu(result.cpu, before, after);
      done += 1;
      options.onSlice?.(done, rounds * sides.length);
    }
  }
  return results;
}

// What a side's processes, the upstream servers and this process have used so far.
async function readCpu(side: Side, options: LoadOptions): Promise<LoadCpu | undefined> {
  const own = await side.cpu?.();
  if (!own) return undefined;
  const client = process.cpuUsage();
  return {
    process: own.process,
    workerd: own.workerd,
    upstreams: (await options.upstreamsCpuMs?.()) ?? 0,
    client: (client.user + client.system) / 1000,
  };
}

// Adds what was used between two readings to a side's totals; workerd's stays unknown once a reading lacks it.
function addCpu(total: LoadCpu | undefined, before: LoadCpu, after: LoadCpu): LoadCpu {
  const start = total ?? { process: 0, workerd: 0, upstreams: 0, client: 0 };
  const workerd =
    start.workerd === undefined || before.workerd === undefined || after.workerd === undefined
      ? undefined
      : start.workerd + after.workerd - before.workerd;
  return {
    process: start.process + after.process - before.process,
    workerd,
    upstreams: start.upstreams + after.upstreams - before.upstreams,
    client: start.client + after.client - before.client,
  };
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
        if (error instanceof InvocationError && error.busy) await sleep(busyBackoffMs);
      }
    }
  };
  await Promise.all(Array.from({ length: concurrency }, client));
  result.elapsedMs += performance.now() - start;
}
