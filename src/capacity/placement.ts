import type { RunnableCode } from '../code/workerCode.js';
import { ServiceError } from '../errors.js';
import { readCpuUsageUs, watchOom } from '../sandbox/cgroups.js';
import type { WorkerdProcess } from '../sandbox/standby.js';
import type { Lease } from './cgroupPool.js';
import { type FunctionUsage, startUsageMeter, type UsageMeter } from './usage.js';
import type { FilesLease } from './workerFileStore.js';

/**
 * One cgroup's worth of capacity: the cgroup with the standby waiting in it, the files of the code
 * it is to run, and the workerd the standby starts there. An invocation's lease holds one, and so
 * does a spare, which is a placement whose workerd was started ahead; one release gives it all back.
 */
export class Placement {
  readonly #lease: Lease;
  #code: RunnableCode | undefined;
  #files: FilesLease | undefined;
  /** Aborts the start; each caller that waits for it ties its own limit to it. */
  readonly #starting = new AbortController();
  #worker: Promise<WorkerdProcess> | undefined;
  #usage: UsageMeter | undefined;
  #oomKilled: (() => boolean) | undefined;
  #released = false;

  constructor(lease: Lease) {
    this.#lease = lease;
  }

  /** The code placed here, once its files are. */
  get code(): RunnableCode | undefined {
    return this.#code;
  }

  /** Puts the code's files here; placed after a release, they are let go of at once. */
  place(code: RunnableCode, files: FilesLease): void {
    this.#code = code;
    this.#files = files;
    if (this.#released) files.release();
  }

  /**
   * Starts workerd with the placed files (on the first call only) and counts what the cgroup uses
   * and whether its memory limit kills anything from then on. Throws when the counters cannot be read.
   */
  start(): Promise<WorkerdProcess> {
    if (!this.#worker) {
      if (!this.#files) throw new Error('a placement starts workerd only once its files are placed');
      this.#usage = startUsageMeter(this.#lease.cgroup);
      this.#oomKilled = watchOom(this.#lease.cgroup);
      this.#worker = this.#lease.standby.start(this.#files.configPath, this.#starting.signal);
    }
    return this.#worker;
  }

  /** Its workerd once it listens, started now if it is not yet; `limit` ends the wait, and the start with it. */
  listening(limit: AbortSignal): Promise<WorkerdProcess> {
    const worker = this.start();
    const abort = () => this.#starting.abort(limit.reason);
    if (limit.aborted) abort();
    else limit.addEventListener('abort', abort, { once: true });
    return worker.finally(() => limit.removeEventListener('abort', abort));
  }

  /** Ends a start that is still going on, for this reason. */
  abortStart(reason: unknown): void {
    this.#starting.abort(reason);
  }

  /** What everything in the cgroup has used since the start; pid is its workerd's while it runs. */
  usage(pid: number | undefined): FunctionUsage {
    return this.#usage?.read(pid) ?? { cpuMs: undefined, peakMemoryBytes: undefined };
  }

  /** The CPU time everything in the cgroup has used so far, in microseconds; undefined without a counter. */
  cpuUsageUs(): number | undefined {
    return readCpuUsageUs(this.#lease.cgroup);
  }

  /** Whether the memory limit has killed a process in the cgroup since the start. */
  oomKilled(): boolean {
    return this.#oomKilled?.() ?? false;
  }

  /**
   * Gives everything back, once: kills workerd after `before` settles (work it still does after
   * the answer), hands the cgroup out again once the process is gone, then lets go of the files.
   * Resolves with what failed, each part on its own.
   */
  async release(before?: Promise<unknown>): Promise<unknown[]> {
    if (this.#released) return [];
    this.#released = true;
    const worker = this.#worker;
    const stopped = Promise.resolve(before)
      .catch(() => undefined)
      .then(() => {
        // A start still going on is ended; its failure is its waiter's business.
        this.#starting.abort(new ServiceError('SHUTTING_DOWN'));
        return worker?.then(
          (listening) => listening.stop(),
          () => undefined,
        );
      });
    const files = this.#files;
    const outcomes = await Promise.allSettled([
      stopped,
      this.#lease.release(stopped),
      stopped.then(() => files?.release()),
    ]);
    return outcomes.flatMap((outcome) => (outcome.status === 'rejected' ? [outcome.reason] : []));
  }
}
