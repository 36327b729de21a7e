import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';
import type { Capacity, CapacityEvents } from './capacity/capacity.js';
import type { SettleOutcome } from './capacity/settleWork.js';
import type { SpareKill } from './capacity/spares.js';
import type { FunctionUsage } from './capacity/usage.js';
import type { CodeCache } from './code/codeCache.js';
import type { Outcome } from './errors.js';
import type { StageName } from './stages.js';

// From 1 ms (a cache hit, a cgroup reservation) to 30 s (the default time limit).
const durationBuckets = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];
const mib = 1024 * 1024;
// From well under an idle workerd (about 30 MiB) to past the pool's default limit (100M).
const memoryBuckets = [16, 24, 32, 40, 48, 64, 96, 128, 256, 512, 1024].map((size) => size * mib);

/** What the gauges read when /metrics is asked. */
export interface MetricsSources {
  readonly capacity: Capacity;
  readonly codeCache: CodeCache;
}

/**
 * The numbers operators need, in the Prometheus text format: requests by answer, time per stage,
 * the pool, out-of-memory kills and time-outs, the code cache, and the process itself.
 */
export class Metrics implements CapacityEvents {
  readonly registry = new Registry();
  readonly #requests: Counter<'status' | 'code' | 'outcome'>;
  readonly #stages: Histogram<'stage'>;
  readonly #outOfMemory: Counter;
  readonly #timeouts: Counter;
  readonly #idleCollections: Counter;
  readonly #waitUntil: Counter<'outcome'>;
  readonly #functionCpu: Histogram<'outcome'>;
  readonly #functionMemory: Histogram<'outcome'>;
  readonly #sparesReady: Counter;
  readonly #sparesKilled: Counter<'reason'>;
  readonly #closedForRoom: Counter;

  constructor() {
    const registers = [this.registry];
    // A coarse event-loop monitor: the default 10 ms one wakes an idle service 100 times a second.
    collectDefaultMetrics({ register: this.registry, prefix: 'oyster_', eventLoopMonitoringPrecision: 100 });
    this.#requests = new Counter({
      name: 'oyster_requests_total',
      help: 'Answers of POST /api/serverless and /fn/…, by HTTP status, error code (OK for a success) and outcome',
      labelNames: ['status', 'code', 'outcome'],
      registers,
    });
    this.#stages = new Histogram({
      name: 'oyster_stage_duration_seconds',
      help: 'Time spent in each stage of a request: admission, queue, attestation, download, files, start, execution, ledger, cleanup',
      labelNames: ['stage'],
      buckets: durationBuckets,
      registers,
    });
    this.#outOfMemory = new Counter({
      name: 'oyster_out_of_memory_total',
      help: 'Functions killed by their cgroup memory limit',
      registers,
    });
    this.#timeouts = new Counter({
      name: 'oyster_timeouts_total',
      help: 'Functions killed at EXECUTION_TIMEOUT_MS',
      registers,
    });
    this.#idleCollections = new Counter({
      name: 'oyster_idle_collections_total',
      help: 'Full garbage collections run after a burst of invocations, once the service was idle for IDLE_GC_MS',
      registers,
    });
    this.#waitUntil = new Counter({
      name: 'oyster_wait_until_total',
      help: 'Invocations answered while work handed to waitUntil still ran, by how that work ended: settled, time_limit, cpu_limit, shutdown or failed',
      labelNames: ['outcome'],
      registers,
    });
    this.#functionCpu = new Histogram({
      name: 'oyster_function_cpu_seconds',
      help: "CPU time of each invocation's workerd, its start included, by outcome",
      labelNames: ['outcome'],
      buckets: durationBuckets,
      registers,
    });
    this.#functionMemory = new Histogram({
      name: 'oyster_function_peak_memory_bytes',
      help: "Highest resident memory of each invocation's workerd, by outcome",
      labelNames: ['outcome'],
      buckets: memoryBuckets,
      registers,
    });
    this.#sparesReady = new Counter({
      name: 'oyster_spares_ready_total',
      help: 'Spares (workerd started ahead for cached code) that listened',
      registers,
    });
    this.#sparesKilled = new Counter({
      name: 'oyster_spares_killed_total',
      help: 'Spares killed before an invocation took them, by why: code_evicted, other_code, idle, start_failed, ended, drain or shutdown',
      labelNames: ['reason'],
      registers,
    });
    this.#closedForRoom = new Counter({
      name: 'oyster_connections_closed_for_room_total',
      help: 'Client connections closed at the connection cap to make room for a new one (or the new one, when every other was being answered)',
      registers,
    });
  }

  /** Adds the gauges and counters that read the pool, the spares and the code cache when they are collected. */
  watch(sources: MetricsSources): void {
    const registers = [this.registry];
    const { capacity, codeCache } = sources;
    const gauge = (name: string, help: string, read: () => number) =>
      new Gauge({
        name,
        help,
        registers,
        collect() {
          this.set(read());
        },
      });
    gauge('oyster_pool_size', 'cgroups in the pool', () => capacity.cgroups.size);
    gauge('oyster_pool_free', 'cgroups ready to be handed out', () => capacity.cgroups.free);
    gauge('oyster_pool_usable', 'cgroups not occupied by a foreign process', () => capacity.cgroups.usable);
    gauge('oyster_admission_queue_length', 'Requests waiting for a free cgroup', () => capacity.queued);
    // The cache keeps its own tallies; these counters catch up with them whenever they are read.
    const counter = (name: string, help: string, read: () => number) => {
      let counted = 0;
      return new Counter({
        name,
        help,
        registers,
        collect() {
          const now = read();
          this.inc(now - counted);
          counted = now;
        },
      });
    };
    counter('oyster_code_cache_hits_total', 'Requests whose code came from the code cache', () => codeCache.hits);
    counter(
      'oyster_code_cache_misses_total',
      'Requests whose code was fetched from the storage server',
      () => codeCache.misses,
    );
    gauge('oyster_spares', 'Spares now, listening or starting', () => capacity.spares.count);
    counter('oyster_spare_hits_total', 'Invocations that took a spare', () => capacity.spares.hits);
    counter(
      'oyster_spare_misses_total',
      'Invocations of cached code that found no spare of it, while spares are on',
      () => capacity.spares.misses,
    );
    gauge(
      'oyster_code_cache_bytes',
      "What the code cache holds costs, in bytes: its code in memory and on disk, and each entry's overhead",
      () => codeCache.bytes,
    );
  }

  /** Counts one garbage collection after a burst. */
  countIdleCollection(): void {
    this.#idleCollections.inc();
  }

  /** Counts one invocation's waitUntil work by how it ended. */
  waitUntilEnded(outcome: SettleOutcome): void {
    this.#waitUntil.inc({ outcome });
  }

  /** Records what one invocation's workerd used, by its outcome. */
  recordUsage(outcome: Outcome, usage: FunctionUsage): void {
    if (usage.cpuMs !== undefined) this.#functionCpu.observe({ outcome }, usage.cpuMs / 1000);
    if (usage.peakMemoryBytes !== undefined) this.#functionMemory.observe({ outcome }, usage.peakMemoryBytes);
  }

  /** Counts one spare that listened. */
  spareReady(): void {
    this.#sparesReady.inc();
  }

  /** Counts one spare killed unused, by why. */
  spareKilled(reason: SpareKill): void {
    this.#sparesKilled.inc({ reason });
  }

  /** Counts one client connection closed at the connection cap. */
  connectionClosedForRoom(): void {
    this.#closedForRoom.inc();
  }

  /** Records how long one invocation's cleanup took, a stage that ends after the answer. */
  cleanedUp(ms: number): void {
    this.#stages.observe({ stage: 'cleanup' }, ms / 1000);
  }

  /** Counts one answer of POST /api/serverless with the time each of its stages took. */
  recordRequest(
    status: number,
    code: string,
    outcome: Outcome,
    stages: ReadonlyArray<readonly [StageName, number]>,
  ): void {
    this.#requests.inc({ status: String(status), code, outcome });
    for (const [stage, ms] of stages) this.#stages.observe({ stage }, ms / 1000);
    if (code === 'OUT_OF_MEMORY') this.#outOfMemory.inc();
    if (code === 'EXECUTION_TIMEOUT') this.#timeouts.inc();
  }
}
