import { setTimeout as sleep } from 'node:timers/promises';
import { StartupError } from '../errors.js';
import { type Cgroup, detectCgroupVersion, discoverCgroups, readMemoryLimit, readPids } from '../sandbox/cgroups.js';
import type { WorkerdStandby } from '../sandbox/standby.js';

// How often release() looks again while the processes it killed are still leaving the cgroup.
const drainPollMs = 5;
// After this long a cgroup that will not empty is kept out of the pool rather than handed out.
const drainTimeoutMs = 2_000;

export interface CgroupPoolOptions {
  /** Where the cgroup file systems are mounted, e.g. /sys/fs/cgroup. */
  readonly root: string;
  /** 1 or 2; detected from the root when undefined. */
  readonly version: 1 | 2 | undefined;
  /** Every cgroup whose name starts with this belongs to the pool. */
  readonly prefix: string;
}

/** A cgroup handed out for one invocation, with the standby waiting in it to start its workerd. */
export interface Lease {
  readonly cgroup: Cgroup;
  readonly standby: WorkerdStandby;
  /**
   * Gives the cgroup back once nothing of the invocation is left in it: after `ended` (the
   * invocation's own cleanup) settles, whatever else is still inside is killed, and the standby
   * stays for the next invocation if it still waits. From the call on, the cgroup counts as on its
   * way back, so reserve() waits for it instead of giving up.
   */
  release(ended?: Promise<unknown>): Promise<void>;
}

/** The pre-made cgroups that cap each workerd's memory and CPU, handed out one per invocation. */
export class CgroupPool {
  readonly version: 1 | 2;
  readonly #all: readonly Cgroup[];
  readonly #free: Cgroup[];
  /** Cgroups found holding a process that is not ours; handed out again once they are empty. */
  readonly #occupied = new Set<Cgroup>();
  /**
   * Cgroups the kernel let no standby into (on cgroup v2, one that passes controllers on to
   * cgroups below it): never handed out, as every invocation in them would fail.
   */
  readonly #unjoinable = new Set<Cgroup>();
  /** How many cgroups are being emptied after their invocation, and who waits for one. */
  #releasing = 0;
  #waiting: Array<() => void> = [];
  /** Told each time a release is over (a cgroup is free again, or kept out). */
  #onReleased: () => void = () => {};
  /** The process waiting in each free cgroup for its next invocation, and what makes them. */
  readonly #standbys = new Map<Cgroup, WorkerdStandby>();
  #prepare: ((cgroup: Cgroup) => WorkerdStandby) | undefined;
  /** Standbys being stopped, which discardStandbys() waits for. */
  readonly #stopping = new Set<Promise<void>>();

  private constructor(version: 1 | 2, cgroups: readonly Cgroup[]) {
    this.version = version;
    this.#all = cgroups;
    this.#free = [...cgroups];
  }

  /** Finds the pool on disk; refuses to start with an empty pool, as nothing could run. */
  static async open(options: CgroupPoolOptions): Promise<CgroupPool> {
    const version = options.version ?? (await detectCgroupVersion(options.root));
    const cgroups = await discoverCgroups(options.root, version, options.prefix).catch((cause: unknown) => {
      throw new StartupError(`Cannot read the cgroup pool under CGROUP_ROOT=${options.root}`, { cause });
    });
    if (cgroups.length === 0) {
      const script = version === 2 ? 'cgroupv2_setup.sh' : 'cgroupv1_setup.sh';
      throw new StartupError(
        `No cgroup named ${options.prefix}* for cgroup v${version} under CGROUP_ROOT=${options.root}: ` +
          `create the pool with ./${script} (or set CGROUP_PREFIX / CGROUP_VERSION)`,
      );
    }
    return new CgroupPool(version, cgroups);
  }

  /** The lowest memory limit of the pool's cgroups, in bytes, as it is now; undefined when none has one. */
  get memoryLimitBytes(): number | undefined {
    const limits = this.#all.map(readMemoryLimit).filter((limit) => limit !== undefined);
    return limits.length === 0 ? undefined : Math.min(...limits);
  }

  /** Number of cgroups in the pool. */
  get size(): number {
    return this.#all.length;
  }

  /** Number of cgroups ready to be handed out. */
  get free(): number {
    return this.#free.length;
  }

  /** Number of cgroups that could serve: free ones and ones in use, not ones someone else occupies or no standby can join. */
  get usable(): number {
    return this.#all.length - this.#occupied.size - this.#unjoinable.size;
  }

  /**
   * Kills whatever a previous run of the service left in the pool (it may have been SIGKILLed
   * with workers running); returns how many processes it killed.
   */
  async recover(): Promise<number> {
    let killed = 0;
    for (const cgroup of this.#all) killed += (await this.#drain(cgroup)).killed;
    return killed;
  }

  /**
   * From now on every free cgroup holds a standby made by prepare, the process that starts its
   * invocations' workerd: those free now get one at once, the others when they come back.
   */
  keepStandbys(prepare: (cgroup: Cgroup) => WorkerdStandby): void {
    this.#prepare = prepare;
    for (const cgroup of this.#free) if (!this.#standbys.has(cgroup)) void this.#keepStandby(cgroup, undefined);
  }

  /** The pids of the standbys waiting in free cgroups. */
  get standbyPids(): number[] {
    return [...this.#standbys.values()].flatMap((standby) => (standby.pid === undefined ? [] : [standby.pid]));
  }

  /**
   * Stops making standbys and kills those waiting; resolves once every standby the pool stopped
   * is gone. For shutdown.
   */
  async discardStandbys(): Promise<void> {
    this.#prepare = undefined;
    for (const standby of this.#standbys.values()) void this.#stop(standby);
    this.#standbys.clear();
    await Promise.all(this.#stopping);
  }

  #stop(standby: WorkerdStandby | undefined): Promise<void> {
    if (!standby) return Promise.resolve();
    const stopping = standby.stop().finally(() => this.#stopping.delete(stopping));
    this.#stopping.add(stopping);
    return stopping;
  }

  /**
   * Takes a free, empty cgroup with its standby, or undefined when none is left. Taking it is
   * synchronous, so two concurrent callers can never get the same one. A cgroup whose previous
   * invocation is still being cleaned up is worth the few milliseconds' wait: the caller would
   * otherwise answer 503. Only between keepStandbys() and discardStandbys().
   */
  async reserve(): Promise<Lease | undefined> {
    for (;;) {
      const prepare = this.#prepare;
      if (!prepare) throw new Error('the pool hands out cgroups only while it keeps standbys');
      const cgroup = this.#takeEmpty();
      if (cgroup) return this.#lease(cgroup, prepare);
      if (this.#releasing === 0) return undefined;
      await new Promise<void>((resolve) => this.#waiting.push(resolve));
    }
  }

  /** Tells listener each time a release is over, so that a request waiting for a cgroup can look again. */
  onReleased(listener: () => void): void {
    this.#onReleased = listener;
  }

  // The standby waiting in a cgroup just taken, unless it has died; made now if there is none, so
  // that it joins the cgroup while the invocation fetches its code.
  #lease(cgroup: Cgroup, prepare: (cgroup: Cgroup) => WorkerdStandby): Lease {
    const waiting = this.#standbys.get(cgroup);
    this.#standbys.delete(cgroup);
    const standby = waiting && !waiting.exited ? waiting : prepare(cgroup);
    return { cgroup, standby, release: (ended) => this.#release(cgroup, ended ?? Promise.resolve(), standby) };
  }

  #takeEmpty(): Cgroup | undefined {
    for (let cgroup = this.#free.shift(); cgroup; cgroup = this.#free.shift()) {
      const standby = this.#standbys.get(cgroup);
      if (standby?.cannotJoin) {
        this.#unjoinable.add(cgroup);
        this.#standbys.delete(cgroup);
        continue;
      }
      const own = standby && !standby.exited ? standby.pid : undefined;
      if (readPids(cgroup).every((pid) => pid === own)) return cgroup;
      this.#occupy(cgroup);
    }
    // Everything free was taken or occupied: see whether an occupied one has emptied since.
    for (const cgroup of [...this.#occupied]) {
      if (!this.#occupied.has(cgroup)) continue;
      this.#occupied.delete(cgroup);
      if (readPids(cgroup).length === 0) return cgroup;
      this.#occupied.add(cgroup);
    }
    return undefined;
  }

  // Keeps a cgroup that holds someone else's process out of the pool, with no standby in it.
  #occupy(cgroup: Cgroup): void {
    this.#occupied.add(cgroup);
    void this.#stop(this.#standbys.get(cgroup));
    this.#standbys.delete(cgroup);
  }

  async #release(cgroup: Cgroup, ended: Promise<unknown>, kept: WorkerdStandby): Promise<void> {
    this.#releasing += 1;
    try {
      await ended.catch(() => undefined);
      if (kept.cannotJoin) {
        this.#unjoinable.add(cgroup);
        return;
      }
      const { remaining } = await this.#drain(cgroup, kept.exited ? undefined : kept.pid);
      // A standby stopped here (after shutdown discarded the others, say) is gone before the
      // release is over, so whoever waits for the release waits for it too.
      if (remaining === 0) {
        this.#free.push(cgroup);
        await this.#keepStandby(cgroup, kept);
      } else {
        this.#occupied.add(cgroup);
        await this.#stop(kept);
      }
    } finally {
      this.#releasing -= 1;
      for (const wake of this.#waiting.splice(0)) wake();
      this.#onReleased();
    }
  }

  // Puts a standby into a free cgroup: the one it has if that still waits, or a new one; none once
  // standbys are discarded.
  #keepStandby(cgroup: Cgroup, standby: WorkerdStandby | undefined): Promise<void> {
    if (standby && !standby.exited && this.#prepare) {
      this.#standbys.set(cgroup, standby);
      return Promise.resolve();
    }
    if (this.#prepare) this.#standbys.set(cgroup, this.#prepare(cgroup));
    return this.#stop(standby);
  }

  // Kills every process in a cgroup and waits (bounded) until they have left; says how many it
  // killed and how many are still there.
  async #drain(cgroup: Cgroup, keep?: number): Promise<{ killed: number; remaining: number }> {
    const killed = new Set<number>();
    const deadline = Date.now() + drainTimeoutMs;
    const others = () => readPids(cgroup).filter((pid) => pid !== keep);
    let pids = others();
    for (; pids.length > 0 && Date.now() < deadline; pids = others()) {
      for (const pid of pids) {
        try {
          process.kill(pid, 'SIGKILL');
          killed.add(pid);
        } catch {
          // Already gone between the read and the kill.
        }
      }
      await sleep(drainPollMs);
    }
    return { killed: killed.size, remaining: pids.length };
  }
}
