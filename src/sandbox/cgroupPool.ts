import { readFileSync } from 'node:fs';
import { access, readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { StartupError } from '../errors.js';
import type { WorkerdStandby } from './standby.js';

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

// One pool member. A process joins it by writing its pid into every file of procsFiles.
export interface Cgroup {
  readonly name: string;
  /** cgroup.procs of each controller: memory and cpu on v1, the single unified one on v2. */
  readonly procsFiles: readonly string[];
  /** The file whose oom_kill counter says the memory limit killed a process. */
  readonly oomFile: string;
}

// Finds out which cgroup version a root holds: v2 only if its unified hierarchy has the memory controller.
export async function detectCgroupVersion(root: string): Promise<1 | 2> {
  const controllers = await readFile(path.join(root, 'cgroup.controllers'), 'utf8').catch(() => '');
  if (controllers.split(/\s+/).includes('memory')) return 2;
  if (await exists(path.join(root, 'memory'))) return 1;
  throw new StartupError(
    `No cgroup memory controller under CGROUP_ROOT=${root}: neither a v2 hierarchy with memory nor a v1 memory mount`,
  );
}

// Lists the pool's cgroups in name order (workerd1, workerd2, … workerd10).
export async function discoverCgroups(root: string, version: 1 | 2, prefix: string): Promise<Cgroup[]> {
  const byNumber = (a: string, b: string) => a.localeCompare(b, 'en', { numeric: true });
  if (version === 2) {
    const names = (await subdirectories(root)).filter((name) => name.startsWith(prefix)).sort(byNumber);
    return names.map((name) => ({
      name,
      procsFiles: [path.join(root, name, 'cgroup.procs')],
      oomFile: path.join(root, name, 'memory.events'),
    }));
  }
  // v1: a pool member needs both controllers, or its CPU (or memory) would go uncapped.
  const inCpu = new Set(await subdirectories(path.join(root, 'cpu')));
  const names = (await subdirectories(path.join(root, 'memory')))
    .filter((name) => name.startsWith(prefix) && inCpu.has(name))
    .sort(byNumber);
  return names.map((name) => ({
    name,
    procsFiles: [path.join(root, 'memory', name, 'cgroup.procs'), path.join(root, 'cpu', name, 'cgroup.procs')],
    oomFile: path.join(root, 'memory', name, 'memory.oom_control'),
  }));
}

// The files of a cgroup are read synchronously: the kernel answers them from memory in about
// 10 µs, where an asynchronous read's trips through the thread pool cost about 300 µs of CPU, and a
// request reads five of them.

// Reads the number of processes the memory limit has killed in a cgroup since it was made.
export function readOomKills(cgroup: Cgroup): number {
  const text = readFileSync(cgroup.oomFile, 'utf8');
  const match = /^oom_kill (\d+)$/m.exec(text);
  return match ? Number(match[1]) : 0;
}

// Notes a cgroup's OOM-kill count now; the function it returns tells whether the memory limit has
// killed a process since. The cgroup's own counter, not a guess from the exit signal.
export function watchOom(cgroup: Cgroup): () => boolean {
  const before = readOomKills(cgroup);
  return () => readOomKills(cgroup) > before;
}

// Lists the pids in a cgroup, across all of its controllers.
export function readPids(cgroup: Cgroup): number[] {
  const texts = cgroup.procsFiles.map((file) => {
    try {
      return readFileSync(file, 'utf8');
    } catch {
      return '';
    }
  });
  const pids = new Set<number>();
  for (const line of texts.join('\n').split('\n')) if (line.trim() !== '') pids.add(Number(line));
  return [...pids];
}

// The pre-made cgroups that cap each workerd's memory and CPU, handed out one per invocation.
export class CgroupPool {
  readonly version: 1 | 2;
  readonly #all: readonly Cgroup[];
  readonly #free: Cgroup[];
  /** Cgroups found holding a process that is not ours; handed out again once they are empty. */
  readonly #occupied = new Set<Cgroup>();
  /** How many cgroups are being emptied after their invocation, and who waits for one. */
  #releasing = 0;
  #waiting: Array<() => void> = [];
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

  // Finds the pool on disk; refuses to start with an empty pool, as nothing could run.
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

  /** Number of cgroups in the pool. */
  get size(): number {
    return this.#all.length;
  }

  /** Number of cgroups ready to be handed out. */
  get free(): number {
    return this.#free.length;
  }

  /** Number of cgroups that could serve: free ones and ones in use, not ones someone else occupies. */
  get usable(): number {
    return this.#all.length - this.#occupied.size;
  }

  // Kills whatever a previous run of the service left in the pool (it may have been SIGKILLed
  // with workers running); returns how many processes it killed.
  async recover(): Promise<number> {
    let killed = 0;
    for (const cgroup of this.#all) killed += (await this.#drain(cgroup)).killed;
    return killed;
  }

  // From now on every free cgroup holds a standby made by prepare, the process that starts its
  // invocations' workerd: those free now get one at once, the others when they come back.
  keepStandbys(prepare: (cgroup: Cgroup) => WorkerdStandby): void {
    this.#prepare = prepare;
    for (const cgroup of this.#free) if (!this.#standbys.has(cgroup)) void this.#keepStandby(cgroup, undefined);
  }

  // Hands over the standby waiting in a cgroup just reserved, unless it has died; the caller
  // starts or stops it.
  takeStandby(cgroup: Cgroup): WorkerdStandby | undefined {
    const standby = this.#standbys.get(cgroup);
    this.#standbys.delete(cgroup);
    if (standby?.exited) return undefined;
    return standby;
  }

  /** The pids of the standbys waiting in free cgroups. */
  get standbyPids(): number[] {
    return [...this.#standbys.values()].flatMap((standby) => (standby.pid === undefined ? [] : [standby.pid]));
  }

  // Stops making standbys and kills those waiting; resolves once every standby the pool stopped
  // is gone. For shutdown.
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

  // Takes a free, empty cgroup, or undefined when none is left. Taking it is synchronous, so two
  // concurrent callers can never get the same one. A cgroup whose previous invocation is still
  // being cleaned up is worth the few milliseconds' wait: the caller would otherwise answer 503.
  async reserve(): Promise<Cgroup | undefined> {
    for (;;) {
      const cgroup = this.#takeEmpty();
      if (cgroup) return cgroup;
      if (this.#releasing === 0) return undefined;
      await new Promise<void>((resolve) => this.#waiting.push(resolve));
    }
  }

  #takeEmpty(): Cgroup | undefined {
    for (let cgroup = this.#free.shift(); cgroup; cgroup = this.#free.shift()) {
      const standby = this.#standbys.get(cgroup);
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

  // Gives a cgroup back once nothing of the invocation is left in it: after `ended` (the
  // invocation's own cleanup) settles, whatever is still inside is killed, except the cgroup's
  // standby (`standby`, or one never taken), which stays for the next invocation. From the call
  // on, the cgroup counts as on its way back, so reserve() waits for it instead of giving up.
  async release(cgroup: Cgroup, ended: Promise<unknown> = Promise.resolve(), standby?: WorkerdStandby): Promise<void> {
    this.#releasing += 1;
    try {
      await ended.catch(() => undefined);
      const kept = standby ?? this.#standbys.get(cgroup);
      this.#standbys.delete(cgroup);
      const { remaining } = await this.#drain(cgroup, kept?.exited ? undefined : kept?.pid);
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
      await new Promise((resolve) => setTimeout(resolve, drainPollMs));
    }
    return { killed: killed.size, remaining: pids.length };
  }
}

async function subdirectories(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { withFileTypes: true });
  return entries.filter((entry) => entry.isDirectory()).map((entry) => entry.name);
}

async function exists(file: string): Promise<boolean> {
  return access(file).then(
    () => true,
    () => false,
  );
}
