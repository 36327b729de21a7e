// What one bench run measures, from BENCH_* environment variables with defaults for a full run.
import { existsSync } from 'node:fs';
import path from 'node:path';

const defaultSamples = 100;
const defaultWarmupRounds = 5;
// V8 optimises a service's per-request JavaScript only after thousands of invocations: the service
// cost 2.8 ms of CPU per warm invocation over its first 500 and 1.7 ms from its 3,000th on.
const defaultWarmupInvocations = 3000;
// Long enough for kernel state that back-to-back invocations keep warm to go cold again (the RCU
// grace period a cgroup migration waits for, ~15 ms here, is skipped within ~20 ms of the last one).
const defaultGapMs = 50;
const defaultDurationS = 10;
const defaultSliceS = 2;
const defaultPoolSize = 4;
// An idle service is one that has had no request for a while: it gives back the heap a burst grew
// once it has been idle for IDLE_GC_MS (10 s by default).
const defaultIdleS = 20;

export interface BenchSettings {
  /** Timed invocations per side in the latency section. */
  readonly samples: number;
  /** Untimed rounds first, so caches, JIT and page cache are warm on every side alike. */
  readonly warmupRounds: number;
  /**
   * Untimed invocations per loaded side before anything is measured, at concurrency = pool size:
   * each process's JavaScript is then optimised as it is in a process that has run for a while.
   */
  readonly warmupInvocations: number;
  /** Idle time before each sequential invocation, as between the requests of a lightly loaded service. */
  readonly gapMs: number;
  /** Load time per side and concurrency level in the throughput section. */
  readonly durationS: number;
  /** The load is cut into slices this long that alternate between the sides. */
  readonly sliceS: number;
  /** Cgroups in each service's pool; throughput runs at this concurrency and twice it. */
  readonly poolSize: number;
  /** Quiet time before an idle memory reading (after the warm-up and at the end). */
  readonly idleS: number;
  /**
   * Another checkout of the project, built (its dist/src/main.js), whose service runs cold and warm
   * beside this one's in the same run: how a change is measured against the build before it.
   */
  readonly baseline: string | undefined;
}

/** Reads the settings; a bad value stops the bench with a message naming it. */
export function readSettings(env: Readonly<Record<string, string | undefined>>): BenchSettings {
  return {
    samples: integer(env, 'BENCH_SAMPLES', defaultSamples, 1),
    warmupRounds: integer(env, 'BENCH_WARMUP', defaultWarmupRounds, 0),
    warmupInvocations: integer(env, 'BENCH_WARMUP_LOAD', defaultWarmupInvocations, 0),
    gapMs: integer(env, 'BENCH_GAP_MS', defaultGapMs, 0),
    durationS: number(env, 'BENCH_DURATION_S', defaultDurationS),
    sliceS: number(env, 'BENCH_SLICE_S', defaultSliceS),
    poolSize: integer(env, 'BENCH_POOL_SIZE', defaultPoolSize, 1),
    idleS: number(env, 'BENCH_IDLE_S', defaultIdleS),
    baseline: builtCheckout(env, 'BENCH_BASELINE'),
  };
}

function integer(
  env: Readonly<Record<string, string | undefined>>,
  name: string,
  fallback: number,
  min: number,
): number {
  const text = env[name];
  if (text === undefined || text === '') return fallback;
  const value = Number(text);
  if (!Number.isInteger(value) || value < min) throw new Error(`${name} must be an integer >= ${min}, got '${text}'`);
  return value;
}

function builtCheckout(env: Readonly<Record<string, string | undefined>>, name: string): string | undefined {
  const text = env[name];
  if (text === undefined || text === '') return undefined;
  const root = path.resolve(text);
  if (!existsSync(baselineScript(root)))
    throw new Error(`${name} must be a built checkout (run npm run build there): no ${baselineScript(root)}`);
  return root;
}

/** The service's entry point in a built checkout. */
export function baselineScript(root: string): string {
  return path.join(root, 'dist', 'src', 'main.js');
}

function number(env: Readonly<Record<string, string | undefined>>, name: string, fallback: number): number {
  const text = env[name];
  if (text === undefined || text === '') return fallback;
  const value = Number(text);
  if (!Number.isFinite(value) || value <= 0) throw new Error(`${name} must be a positive number, got '${text}'`);
  return value;
}
