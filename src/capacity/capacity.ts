import type { CodeCache } from '../code/codeCache.js';
import { type ResponseGuard, traceMarker } from '../code/responseGuard.js';
import type { StoredCode, WorkerCode } from '../code/workerCode.js';
import type { WorkerFiles } from '../code/workerdConfig.js';
import type { Config } from '../config.js';
import { abortError, ServiceError } from '../errors.js';
import { prepareWorkerd } from '../sandbox/standby.js';
import { AdmissionQueue } from './admissionQueue.js';
import { BackgroundWork } from './backgroundWork.js';
import type { CgroupPool } from './cgroupPool.js';
import type { Placement } from './placement.js';
import type { SettleOutcome } from './settleWork.js';
import { type SpareCounts, type SpareKill, Spares } from './spares.js';
import { WorkerFileStore } from './workerFileStore.js';
import { type ErrorLog, type LeaseContext, type LeaseRequest, WorkerLease } from './workerLease.js';

/** What the capacity module tells the metrics. */
export interface CapacityEvents {
  spareReady(): void;
  spareKilled(reason: SpareKill): void;
  /** How long one invocation's release took, after its answer. */
  cleanedUp(durationMs: number): void;
  waitUntilEnded(outcome: SettleOutcome): void;
}

export interface CapacityOptions {
  /** The cgroups workers run in. */
  readonly pool: CgroupPool;
  /** Code by code_id: spares run only what it holds, and its files are kept while it does. */
  readonly codeCache: CodeCache;
  /** Writes the files workerd reads for some code (src/code/workerdConfig.ts). */
  readonly writeFiles: (code: WorkerCode) => Promise<WorkerFiles>;
  /** What tells a complete answer of the function's from one it did not finish. */
  readonly guard: ResponseGuard;
  readonly events: CapacityEvents;
  /** Where the failures of cleanups that no request waits for are reported. */
  readonly log: ErrorLog;
  /** Whether a tail is open on a code_id: its invocations' workerd is then kept until its trace is in. */
  readonly tailed: (codeId: string) => boolean;
}

/** How many cgroups the pool has, as /health and /metrics report them. */
export interface CgroupCounts {
  readonly size: number;
  readonly free: number;
  readonly usable: number;
}

/**
 * What an invocation runs on: a workerd listening with its code in a cgroup of its own, leased
 * with one call and given back with one release. Behind it: the cgroup pool with the standby
 * waiting in each cgroup, the spares started ahead for cached code, the files of the code, and
 * the cleanups that go on after each answer.
 */
export class Capacity {
  readonly #pool: CgroupPool;
  readonly #codeCache: CodeCache;
  readonly #workerdPath: string;
  readonly #files: WorkerFileStore;
  readonly #spares: Spares;
  /** The requests that found no free cgroup, waiting for one. */
  readonly #queue: AdmissionQueue<Placement>;
  readonly #background = new BackgroundWork();
  /** Aborted when shutdown stops waiting: waitUntil work still running is cut short. */
  readonly #shutdown = new AbortController();
  readonly #context: LeaseContext;

  constructor(config: Config, options: CapacityOptions) {
    const { pool, codeCache, events, log } = options;
    this.#pool = pool;
    this.#codeCache = codeCache;
    this.#workerdPath = config.workerdPath;
    this.#files = new WorkerFileStore({
      write: options.writeFiles,
      onRemoveFailed: (error) =>
        log.error({ stage: 'cleanup', err: error }, 'removing the files of evicted code failed'),
    });
    this.#spares = new Spares({
      pool,
      codeCache,
      workerFiles: this.#files,
      max: config.sparesMax,
      perCode: config.sparesPerCode,
      idleMs: config.spareIdleMs,
      startTimeoutMs: config.executionTimeoutMs,
      onReady: () => events.spareReady(),
      onKilled: (reason) => events.spareKilled(reason),
      onCleanupFailed: (error) => log.error({ stage: 'cleanup', err: error }, 'cleanup after a spare failed'),
    });
    this.#queue = new AdmissionQueue({
      maxLength: config.admissionQueueMax,
      maxWaitMs: config.admissionWaitMs,
      place: (codeId) => this.#place(codeId),
      giveBack: (placement) => this.#spares.letGo(placement),
      busy: ({ queued, waitedMs }) =>
        new ServiceError('SERVER_BUSY', { data: { pool_size: pool.size, queued, waited_ms: Math.round(waitedMs) } }),
    });
    pool.onReleased(() => this.#queue.wake());
    this.#context = {
      timeLimitMs: config.executionTimeoutMs,
      // Code may ask for less CPU time or more, and gets no more than the operator's maximum.
      cpuLimitMs: (code) => Math.min(code.code.settings.limits?.cpuMs ?? config.cpuLimitMs, config.cpuLimitMaxMs),
      maxResponseBytes: config.maxResponseBytes,
      guard: options.guard,
      acquireFiles: (code) => this.#files.acquire(code.stored, code.code, codeCache.holds(code.codeId, code.stored)),
      background: this.#background,
      shutdown: this.#shutdown.signal,
      started: (code, listened) => this.#spares.started(code.stored, listened),
      // A freed cgroup goes to a waiting request before a spare.
      offer: (code) => {
        if (this.#queue.length === 0) this.#spares.offer(code);
      },
      tailed: options.tailed,
      cleanedUp: (ms) => events.cleanedUp(ms),
      waitUntilEnded: (outcome) => events.waitUntilEnded(outcome),
    };
  }

  /**
   * A workerd listening with the code for one invocation: a spare of the code the cache holds for
   * the code_id, or else a free cgroup, whose standby starts workerd once the code is prepared;
   * with none free, the cgroup of the oldest spare of other code, killed for it. None of either:
   * a wait in the admission queue, behind the requests that came first, then SERVER_BUSY, before
   * anything else is spent. A failed lease has given everything back.
   */
  async lease(request: LeaseRequest): Promise<WorkerLease> {
    const { codeId, signal, stages } = request;
    if (signal.aborted) throw abortError(signal);
    // Nobody overtakes a waiting request: with one waiting, a newcomer waits behind it.
    const placement =
      (this.#queue.length === 0 ? await stages.run('admission', () => this.#place(codeId)) : undefined) ??
      (await stages.run('queue', () => this.#queue.wait(codeId, signal)));
    const lease = new WorkerLease(placement, this.#context, request);
    try {
      await lease.start();
      return lease;
    } catch (error) {
      lease.release();
      throw error;
    }
  }

  // A spare of the code, a free cgroup, or a spare's cgroup; undefined when none is left.
  async #place(codeId: string): Promise<Placement | undefined> {
    return this.#spares.take(codeId) ?? (await this.#spares.admit(this.#codeCache.peek(codeId) !== undefined));
  }

  /** The pool's cgroups: all of them, those free now, and those that could serve. */
  get cgroups(): CgroupCounts {
    return { size: this.#pool.size, free: this.#pool.free, usable: this.#pool.usable };
  }

  /** Requests waiting now for a free cgroup. */
  get queued(): number {
    return this.#queue.length;
  }

  /** The spares, and how often they served. */
  get spares(): SpareCounts {
    return this.#spares;
  }

  /** The directories of code the cache holds, kept between its invocations. */
  get keptDirs(): readonly string[] {
    return this.#files.sharedDirs;
  }

  /** Puts a standby into every free cgroup; from then on each cgroup gets one back with it. */
  start(): void {
    const marker = traceMarker(this.#context.guard);
    this.#pool.keepStandbys((cgroup) =>
      prepareWorkerd({ workerdPath: this.#workerdPath, cgroup, traceMarker: marker }),
    );
  }

  /** Lets go of what was kept for code the cache let go of: its spares, then its files. */
  forget(code: StoredCode): void {
    this.#spares.discard(code);
    this.#files.retire(code);
  }

  /**
   * Kills every spare and starts none until resume() (draining), or for good (shutdown); the
   * requests waiting for a cgroup are answered at once, as the gates answer new ones.
   */
  pause(reason: 'drain' | 'shutdown'): void {
    this.#spares.pause(reason);
    this.#queue.refuseAll(new ServiceError(reason === 'drain' ? 'DRAINING' : 'SHUTTING_DOWN'));
  }

  /** Starts spares again after a pause for draining. */
  resume(): void {
    this.#spares.resume();
  }

  /** For shutdown: waitUntil work still running is cut short, and its workerd killed. */
  stopWaiting(): void {
    this.#shutdown.abort(new ServiceError('SHUTTING_DOWN'));
  }

  /** Resolves once every release so far has finished, every killed spare is gone, and what they started in turn. */
  async settled(): Promise<void> {
    await this.#background.settled();
    await this.#spares.settled();
  }

  /** Lets go of everything kept between invocations: the spares, the kept files, the standbys. */
  async close(): Promise<void> {
    await this.#spares.close();
    this.#files.retireAll();
    await this.#pool.discardStandbys();
  }
}
