// The shape of one bench run's results, as printed and as written to bench-results/*.json.
import type { MachineInfo } from './machine.js';
import type { BenchSettings } from './settings.js';
import type { SideKey } from './sides.js';
import type { Summary } from './stats.js';

export interface SideLatency {
  readonly key: SideKey;
  readonly label: string;
  readonly summary: Summary;
  readonly failures: number;
  readonly errors: readonly string[];
  /** Each timed round's latency in ms, null where it failed. */
  readonly samplesMs: ReadonlyArray<number | null>;
}

/** Two sides compared round by round. */
export interface PairedRatio {
  readonly numerator: SideKey;
  readonly denominator: SideKey;
  /** Median of numerator/denominator over the rounds where both succeeded. */
  readonly medianOfPairs: number;
  /** numerator p50 / denominator p50, for reference. */
  readonly ratioOfP50s: number;
  readonly pairs: number;
}

export interface ThroughputSide {
  readonly key: SideKey;
  readonly label: string;
  readonly concurrency: number;
  readonly okPerS: number;
  readonly ok: number;
  readonly errors: Readonly<Record<string, number>>;
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly elapsedS: number;
  /** Service CPU per successful invocation, excluding workerd and the idle background; services only. */
  readonly serviceCpuMsPerOk?: number;
  /** CPU per successful invocation by process, idle background included; where the side tells its own. */
  readonly cpuMsPerOk?: CpuPerOk;
}

/** CPU in ms per successful invocation under load, by process (see LoadCpu in load.ts). */
export interface CpuPerOk {
  /** workerd: with the standby shells that start it (the service's cgroups), or reaped by the driver (bare). */
  readonly workerd: number | undefined;
  /** The side's own process: the service, or the driver that spawns bare workerd. */
  readonly process: number;
  /** The development upstream servers. */
  readonly upstreams: number;
  /** The bench process, whose clients drive the load. */
  readonly client: number;
  /** All of them; undefined when workerd's cannot be read. */
  readonly total: number | undefined;
}

/** What the service process itself cost, read from /proc; never includes workerd. */
export interface ServiceResources {
  readonly key: SideKey;
  readonly label: string;
  /** RSS right after start, before any request. */
  readonly rssFreshMb: number;
  /** RSS idle after the priming request and the warm-up rounds. */
  readonly rssAfterWarmupMb: number;
  /** RSS idle after the latency section. */
  readonly rssAfterLatencyMb: number;
  /** RSS idle at the end of the run, after the throughput section. */
  readonly rssEndMb: number;
  /** VmHWM: the highest RSS over the whole run. */
  readonly peakRssMb: number;
  /** CPU ms per invocation over back-to-back sequential requests, less the idle background. */
  readonly cpuMsPerInvocation: number;
  /** CPU ms per second it spends while idle (timers, metrics collection). */
  readonly idleCpuMsPerS: number;
}

/**
 * One stage of an invocation: as the service's Server-Timing header reports it, or as the bench
 * times bare workerd's start (spawn until listening), execution (POST until answered) and cleanup
 * (kill until reaped).
 */
export interface StageRow {
  readonly side: SideKey;
  readonly name: string;
  readonly p50Ms: number;
  readonly meanMs: number;
  readonly p99Ms: number;
}

export interface Target {
  readonly name: string;
  readonly value: number;
  readonly limit: number;
  readonly comparison: '<=' | '>=';
  /** undefined when the side it needs was skipped. */
  readonly pass: boolean | undefined;
  readonly note?: string;
}

export interface BenchResults {
  readonly machine: MachineInfo;
  readonly settings: BenchSettings;
  readonly command: string;
  readonly notes: readonly string[];
  /** Why the service sides were not measured, when they were not. */
  readonly serviceSkipped?: string;
  readonly latency: readonly SideLatency[];
  readonly ratios: readonly PairedRatio[];
  readonly throughput: readonly ThroughputSide[];
  readonly resources: readonly ServiceResources[];
  /** Stage durations over the latency section: bare workerd's, and the service's from Server-Timing if it sends it. */
  readonly stages: readonly StageRow[];
  readonly targets: readonly Target[];
  readonly durationS: number;
}
