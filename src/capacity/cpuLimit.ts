import { availableParallelism } from 'node:os';
import { ServiceError } from '../errors.js';

/** The shortest wait between two looks at the counter, near the limit. */
const minLookMs = 1;

export interface CpuLimitOptions {
  /** The CPU time allowed, in ms. */
  readonly limitMs: number;
  /** The cgroup's CPU counter in microseconds; undefined when it cannot be read. */
  readonly readUs: () => number | undefined;
  /** Fires when the invocation ends another way; the watch then stops. */
  readonly parent: AbortSignal;
  /** How many CPUs the cgroup's processes can use at once (the counter's fastest pace); the machine's by default. */
  readonly cpus?: number;
}

/** A watch on one invocation's CPU time: its signal fires at the limit, or with its parent. */
export interface CpuWatch {
  readonly signal: AbortSignal;
  /** Stops looking; the signal no longer fires at the limit. */
  clear(): void;
}

/**
 * Watches the CPU time a cgroup uses from now on and fires at the limit, with CPU_LIMIT_EXCEEDED.
 * The counter cannot grow faster than `cpus` per ms of wall time, so each look comes only when
 * what is left could first have been used: none before limit / cpus, then ever more often near
 * the limit, every minLookMs at the last. An invocation well under its limit costs one read.
 */
export function watchCpu(options: CpuLimitOptions): CpuWatch {
  const { limitMs, readUs, parent } = options;
  const cpus = options.cpus ?? availableParallelism();
  const controller = new AbortController();
  const startUs = readUs();
  let timer: NodeJS.Timeout | undefined;
  const clear = () => {
    clearTimeout(timer);
    parent.removeEventListener('abort', onParentAbort);
  };
  const onParentAbort = () => controller.abort(parent.reason);
  const lookIn = (leftMs: number) => {
    timer = setTimeout(look, Math.max(minLookMs, leftMs / cpus));
  };
  const look = () => {
    const nowUs = readUs();
    // A counter that can no longer be read ends nothing: the wall-clock limit still holds.
    if (nowUs === undefined || startUs === undefined) return;
    const usedMs = (nowUs - startUs) / 1000;
    if (usedMs < limitMs) return lookIn(limitMs - usedMs);
    controller.abort(new ServiceError('CPU_LIMIT_EXCEEDED'));
  };
  controller.signal.addEventListener('abort', clear, { once: true });
  if (parent.aborted) onParentAbort();
  else {
    parent.addEventListener('abort', onParentAbort, { once: true });
    if (startUs !== undefined) lookIn(limitMs);
  }
  return { signal: controller.signal, clear };
}
