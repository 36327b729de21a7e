import type { CodeCache } from '../code/codeCache.js';
import type { RunnableCode, StoredCode } from '../code/workerCode.js';
import { ServiceError } from '../errors.js';
import type { WorkerdProcess } from '../sandbox/standby.js';
import type { CgroupPool } from './cgroupPool.js';
import { Placement } from './placement.js';
import type { WorkerFileStore } from './workerFileStore.js';

/** Why a spare was killed before any invocation took it, as /metrics counts it. */
export type SpareKill = 'code_evicted' | 'other_code' | 'idle' | 'start_failed' | 'ended' | 'drain' | 'shutdown';

export interface SparesOptions {
  readonly pool: CgroupPool;
  readonly codeCache: CodeCache;
  readonly workerFiles: WorkerFileStore;
  /** Most spares at once, of all code together; 0 starts none. */
  readonly max: number;
  /** Most spares of one code_id's code at once. */
  readonly perCode: number;
  /** A spare no invocation took for this long is killed. */
  readonly idleMs: number;
  /** A spare that does not listen within this long is killed, and its code gets no spare until a start of it succeeds. */
  readonly startTimeoutMs: number;
  /** Told of each spare that listens. */
  readonly onReady?: () => void;
  /** Told of each spare killed unused, and why. */
  readonly onKilled?: (reason: SpareKill) => void;
  /** Told when the cleanup after a killed spare failed. */
  readonly onCleanupFailed?: (error: unknown) => void;
}

/** How many spares there are and how often they served, for /health and /metrics. */
export interface SpareCounts {
  /** Spares now, listening or still starting. */
  readonly count: number;
  /** Spares now that listen. */
  readonly listening: number;
  /** Invocations that took a spare. */
  readonly hits: number;
  /** Invocations of cached code that found no spare of it (and got a cgroup), while spares are on. */
  readonly misses: number;
}

interface Spare {
  readonly placement: Placement;
  readonly code: RunnableCode;
  /** Set once it listens. */
  listening: WorkerdProcess | undefined;
  /** Its start limit, until it listens. */
  timer: NodeJS.Timeout | undefined;
}

/**
 * Spares: a fresh workerd started for cached code right after an invocation of it has ended, in a
 * free cgroup, that listens and waits for the next invocation of that code, so that invocation
 * skips the start. Each serves one invocation at most and is killed after it, like any workerd;
 * one no invocation takes is killed when its code leaves the cache, when its cgroup is needed for
 * other code (oldest first), after idleMs, at drain and at shutdown.
 */
export class Spares implements SpareCounts {
  readonly #options: SparesOptions;
  /** Oldest first: the spare of the least recently used code comes first. */
  readonly #spares = new Set<Spare>();
  /** Code whose last start failed: it gets no spare until a start of it succeeds. */
  readonly #failedStarts = new WeakSet<StoredCode>();
  /** Cleanups of killed spares, which close() waits for. */
  readonly #ending = new Set<Promise<void>>();
  /** Starts that hold a cgroup but are not spares yet, by code; each counts against the limits. */
  readonly #starting = new Map<StoredCode, number>();
  /** Who waits for one of them to become a spare (or give up). */
  #startWaiters: Array<() => void> = [];
  #paused = false;
  #closed = false;
  /** Invocations that took a spare. */
  hits = 0;
  /** Invocations of cached code that found no spare of it (and got a cgroup), while spares are on. */
  misses = 0;

  constructor(options: SparesOptions) {
    this.#options = options;
  }

  /** Spares now, listening or still starting. */
  get count(): number {
    return this.#spares.size;
  }

  /** Spares now that listen. */
  get listening(): number {
    let listening = 0;
    for (const spare of this.#spares) if (spare.listening) listening += 1;
    return listening;
  }

  /**
   * Takes a spare of the code the cache holds for a code_id, if there is one, once the cache's copy
   * has passed its check (a copy found corrupt lets the spare go, and the invocation fetches the
   * code anew): its cgroup, files and workerd are the invocation's from now on.
   */
  take(codeId: string): Placement | undefined {
    const { codeCache } = this.#options;
    const held = codeCache.peek(codeId);
    for (const spare of this.#spares) {
      if (!held || spare.code.stored !== held) continue;
      if (spare.listening?.exited) {
        this.#kill(spare, 'ended');
        continue;
      }
      this.#spares.delete(spare);
      clearTimeout(spare.timer);
      if (codeCache.lookup(codeId)?.code !== held) {
        this.#end(spare);
        return undefined;
      }
      this.hits += 1;
      return spare.placement;
    }
    return undefined;
  }

  /**
   * A cgroup for an invocation of code that has no spare: a free one, or else one that a spare
   * holds, whose spare (the oldest) is killed for it. Spares never cost a request its cgroup.
   * `cached`: whether the cache holds the invocation's code, which makes it a miss.
   */
  async admit(cached: boolean): Promise<Placement | undefined> {
    for (;;) {
      const lease = await this.#options.pool.reserve();
      if (lease) {
        if (cached && this.#options.max > 0) this.misses += 1;
        return new Placement(lease);
      }
      const oldest = this.#spares.values().next().value;
      if (!oldest) {
        // A cgroup that a start holds for a spare becomes a spare, which can then be killed for it.
        if (this.#startingTotal() === 0) return undefined;
        await new Promise<void>((resolve) => this.#startWaiters.push(resolve));
        continue;
      }
      // Its cgroup is on its way back from here on, so the next reserve() waits for it.
      this.#kill(oldest, 'other_code');
    }
  }

  /** Records how a start of some code ended: code whose last start failed gets no spares. */
  started(stored: StoredCode, listened: boolean): void {
    if (listened) this.#failedStarts.delete(stored);
    else this.#failedStarts.add(stored);
  }

  /**
   * Starts a spare of code that an invocation has just run, if the limits allow: spares are on,
   * the code is still what the cache holds, its last start succeeded, it has fewer than perCode,
   * and the pool has a free cgroup besides the one the spare would take.
   */
  offer(code: RunnableCode): void {
    const { max, perCode, pool, codeCache } = this.#options;
    if (this.#paused || this.#spares.size >= max) return;
    if (this.#failedStarts.has(code.stored) || !codeCache.holds(code.codeId, code.stored)) return;
    let same = this.#starting.get(code.stored) ?? 0;
    for (const spare of this.#spares) if (spare.code.stored === code.stored) same += 1;
    // The last free cgroup stays free: a request for other code never waits for a spare's end.
    if (same >= perCode || this.#spares.size + this.#startingTotal() >= max || pool.free < 2) return;
    this.#starting.set(code.stored, (this.#starting.get(code.stored) ?? 0) + 1);
    this.#track(
      this.#start(code).finally(() => {
        const left = (this.#starting.get(code.stored) ?? 1) - 1;
        if (left === 0) this.#starting.delete(code.stored);
        else this.#starting.set(code.stored, left);
        for (const wake of this.#startWaiters.splice(0)) wake();
      }),
    );
  }

  #startingTotal(): number {
    let total = 0;
    for (const count of this.#starting.values()) total += count;
    return total;
  }

  /** Kills the spares of code the cache let go of. */
  discard(stored: StoredCode): void {
    for (const spare of this.#spares) if (spare.code.stored === stored) this.#kill(spare, 'code_evicted');
  }

  /** Kills every spare and starts none until resume() (draining), or for good (shutdown). */
  pause(reason: 'drain' | 'shutdown'): void {
    this.#paused = true;
    if (reason === 'shutdown') this.#closed = true;
    for (const spare of this.#spares) this.#kill(spare, reason);
  }

  /** Starts spares again after a pause for draining. */
  resume(): void {
    if (!this.#closed) this.#paused = false;
  }

  /** Kills every spare for good and waits until each is gone, its cgroup back in the pool. */
  async close(): Promise<void> {
    this.pause('shutdown');
    await this.settled();
  }

  /** Resolves once every spare killed so far is gone, its cgroup back in the pool and its files let go of. */
  async settled(): Promise<void> {
    while (this.#ending.size > 0) await Promise.all(this.#ending);
  }

  async #start(code: RunnableCode): Promise<void> {
    const { pool, workerFiles, codeCache } = this.#options;
    // Never waits: offer() saw a free cgroup, and nothing has run since.
    const lease = await pool.reserve();
    if (!lease) return;
    const placement = new Placement(lease);
    let worker: Promise<WorkerdProcess>;
    try {
      placement.place(
        code,
        await workerFiles.acquire(code.stored, code.code, codeCache.holds(code.codeId, code.stored)),
      );
      // The code may have left the cache meanwhile: its files then go with this release.
      if (this.#paused || !codeCache.holds(code.codeId, code.stored)) {
        this.letGo(placement);
        return;
      }
      worker = placement.start();
    } catch (error) {
      // No files, or the cgroup's counters cannot be read: no spare there, and nothing kept.
      this.letGo(placement);
      throw error;
    }
    const spare: Spare = { placement, code, listening: undefined, timer: undefined };
    this.#spares.add(spare);
    spare.timer = setTimeout(
      () => placement.abortStart(new ServiceError('EXECUTION_TIMEOUT')),
      this.#options.startTimeoutMs,
    ).unref();
    worker.then(
      (listening) => {
        if (!this.#spares.has(spare)) return;
        spare.listening = listening;
        clearTimeout(spare.timer);
        this.#options.onReady?.();
        // Killed after idleMs, or let go of as soon as it ends by itself; taken, it is someone else's.
        void listening.exitsWithin(this.#options.idleMs).then((ended) => this.#kill(spare, ended ? 'ended' : 'idle'));
      },
      () => {
        // A spare killed or taken meanwhile is not this code's failure.
        if (!this.#spares.has(spare)) return;
        this.#failedStarts.add(code.stored);
        this.#kill(spare, 'start_failed');
      },
    );
  }

  // Kills a spare no invocation took, and counts why.
  #kill(spare: Spare, reason: SpareKill): void {
    if (!this.#spares.delete(spare)) return;
    this.#end(spare);
    this.#options.onKilled?.(reason);
  }

  // Ends a spare: its workerd, then its cgroup back to the pool, then its files.
  #end(spare: Spare): void {
    clearTimeout(spare.timer);
    this.letGo(spare.placement);
  }

  /** Gives back a placement that no invocation and no spare keeps, telling each part of it that failed. */
  letGo(placement: Placement): void {
    this.#track(
      placement.release().then((failures) => {
        for (const failure of failures) this.#options.onCleanupFailed?.(failure);
      }),
    );
  }

  #track(work: Promise<unknown>): void {
    const ending: Promise<void> = work.then(
      () => undefined,
      (error: unknown) => this.#options.onCleanupFailed?.(error),
    );
    this.#ending.add(ending);
    void ending.finally(() => this.#ending.delete(ending));
  }
}
