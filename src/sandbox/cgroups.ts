import { readFileSync } from 'node:fs';
import { access, readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { StartupError } from '../errors.js';

/** One pool member. A process joins it by writing its pid into every file of procsFiles. */
export interface Cgroup {
  readonly name: string;
  /** cgroup.procs of each controller: memory, cpu (and cpuacct) on v1, the single unified one on v2. */
  readonly procsFiles: readonly string[];
  /** The file whose oom_kill counter says the memory limit killed a process. */
  readonly oomFile: string;
  /**
   * The kernel's count of the CPU time of everything in the cgroup: cpu.stat (usage_usec) on v2,
   * cpuacct.usage (nanoseconds) on v1; undefined on v1 without a cpuacct cgroup of the same name.
   */
  readonly cpuCounter: { readonly file: string; readonly format: 'cpu.stat' | 'cpuacct.usage' } | undefined;
}

/** Finds out which cgroup version a root holds: v2 only if its unified hierarchy has the memory controller. */
export async function detectCgroupVersion(root: string): Promise<1 | 2> {
  const controllers = await readFile(path.join(root, 'cgroup.controllers'), 'utf8').catch(() => '');
  if (controllers.split(/\s+/).includes('memory')) return 2;
  if (await exists(path.join(root, 'memory'))) return 1;
  throw new StartupError(
    `No cgroup memory controller under CGROUP_ROOT=${root}: neither a v2 hierarchy with memory nor a v1 memory mount`,
  );
}

/** Lists the pool's cgroups in name order (workerd1, workerd2, … workerd10). */
export async function discoverCgroups(root: string, version: 1 | 2, prefix: string): Promise<Cgroup[]> {
  const byNumber = (a: string, b: string) => a.localeCompare(b, 'en', { numeric: true });
  if (version === 2) {
    const names = (await subdirectories(root)).filter((name) => name.startsWith(prefix)).sort(byNumber);
    return names.map((name) => ({
      name,
      procsFiles: [path.join(root, name, 'cgroup.procs')],
      oomFile: path.join(root, name, 'memory.events'),
      cpuCounter: { file: path.join(root, name, 'cpu.stat'), format: 'cpu.stat' as const },
    }));
  }
  // v1: a pool member needs both controllers, or its CPU (or memory) would go uncapped.
  const inCpu = new Set(await subdirectories(path.join(root, 'cpu')));
  const names = (await subdirectories(path.join(root, 'memory')))
    .filter((name) => name.startsWith(prefix) && inCpu.has(name))
    .sort(byNumber);
  // The cpuacct controller counts CPU time; a pool made without it still runs, uncounted.
  const inCpuacct = new Set(await subdirectories(path.join(root, 'cpuacct')).catch(() => []));
  return names.map((name) => {
    const counted = inCpuacct.has(name);
    return {
      name,
      procsFiles: [
        path.join(root, 'memory', name, 'cgroup.procs'),
        path.join(root, 'cpu', name, 'cgroup.procs'),
        ...(counted ? [path.join(root, 'cpuacct', name, 'cgroup.procs')] : []),
      ],
      oomFile: path.join(root, 'memory', name, 'memory.oom_control'),
      cpuCounter: counted
        ? { file: path.join(root, 'cpuacct', name, 'cpuacct.usage'), format: 'cpuacct.usage' as const }
        : undefined,
    };
  });
}

// The files of a cgroup are read synchronously: the kernel answers them from memory, far faster
// than an asynchronous read's trips through the thread pool, and a request reads several of them.

/** Reads the number of processes the memory limit has killed in a cgroup since it was made. */
export function readOomKills(cgroup: Cgroup): number {
  const text = readFileSync(cgroup.oomFile, 'utf8');
  const match = /^oom_kill (\d+)$/m.exec(text);
  return match ? Number(match[1]) : 0;
}

/**
 * Notes a cgroup's OOM-kill count now; the function it returns tells whether the memory limit has
 * killed a process since. The cgroup's own counter, not a guess from the exit signal.
 */
export function watchOom(cgroup: Cgroup): () => boolean {
  const before = readOomKills(cgroup);
  return () => readOomKills(cgroup) > before;
}

// Above this, a v1 memory limit is "no limit" (the kernel reports the largest page-aligned value).
const noMemoryLimit = 2 ** 60;

/** A cgroup's memory limit in bytes (memory.max on v2, memory.limit_in_bytes on v1); undefined when it has none. */
export function readMemoryLimit(cgroup: Cgroup): number | undefined {
  const v2 = path.basename(cgroup.oomFile) === 'memory.events';
  const file = path.join(path.dirname(cgroup.oomFile), v2 ? 'memory.max' : 'memory.limit_in_bytes');
  let text: string;
  try {
    text = readFileSync(file, 'utf8').trim();
  } catch {
    return undefined;
  }
  const bytes = Number(text);
  return Number.isSafeInteger(bytes) && bytes < noMemoryLimit ? bytes : undefined;
}

/** The CPU time everything in a cgroup has used since it was made, in microseconds; undefined without a counter. */
export function readCpuUsageUs(cgroup: Cgroup): number | undefined {
  const counter = cgroup.cpuCounter;
  if (!counter) return undefined;
  let text: string;
  try {
    text = readFileSync(counter.file, 'utf8');
  } catch {
    // A counter that cannot be read leaves the figure out; it never fails an invocation.
    return undefined;
  }
  if (counter.format === 'cpuacct.usage') return Number(text.trim()) / 1000;
  const match = /^usage_usec (\d+)$/m.exec(text);
  return match ? Number(match[1]) : undefined;
}

/** Lists the pids in a cgroup, across all of its controllers. */
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
