// Memory and CPU of another process, from /proc: what the service itself costs, without the
// bench's own work and without the workerd processes it starts.
import { execFileSync } from 'node:child_process';
import { readFile } from 'node:fs/promises';

// Linux reports CPU time in clock ticks; 100 per second on every common kernel.
const fallbackTicksPerSecond = 100;
const kib = 1024;
const mib = 1024 * 1024;

let ticksPerSecond: number | undefined;

/** Resident memory now and its peak so far, in MiB. */
export interface MemoryUse {
  readonly rssMb: number;
  readonly peakRssMb: number;
}

/** Reads VmRSS and VmHWM (the high-water mark) of a process. */
export async function readMemory(pid: number): Promise<MemoryUse> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const field = (name: string) => {
    const match = new RegExp(`^${name}:\\s+(\\d+) kB$`, 'm').exec(status);
    if (!match) throw new Error(`no ${name} in /proc/${pid}/status`);
    return (Number(match[1]) * kib) / mib;
  };
  return { rssMb: field('VmRSS'), peakRssMb: field('VmHWM') };
}

/** CPU time (user + system) in milliseconds, of a process and of the children it has reaped. */
export interface CpuTimes {
  /** The process itself: forking and exec'ing its children included, their own work not. */
  readonly ownMs: number;
  /** Its children that have ended and been waited for, e.g. each bare workerd a driver spawned. */
  readonly reapedChildrenMs: number;
}

/** Reads utime + stime and cutime + cstime of a process. */
export async function readCpuTimes(pid: number): Promise<CpuTimes> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
  // The command name is in parentheses and may contain spaces: count fields after the last ')'.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // Fields 14 to 17 of proc(5) (utime, stime, cutime, cstime) are at 11 to 14 once pid and comm are dropped.
  const [utime, stime, cutime, cstime] = fields.slice(11, 15).map(Number);
  if (![utime, stime, cutime, cstime].every(Number.isFinite)) throw new Error(`cannot parse /proc/${pid}/stat`);
  const ms = (ticks: number) => (ticks * 1000) / clockTicksPerSecond();
  return { ownMs: ms(utime! + stime!), reapedChildrenMs: ms(cutime! + cstime!) };
}

/** CPU time the process itself has used, in milliseconds: its reaped children (workerd) not included. */
export async function readCpuMs(pid: number): Promise<number> {
  return (await readCpuTimes(pid)).ownMs;
}

function clockTicksPerSecond(): number {
  if (ticksPerSecond === undefined) {
    try {
      ticksPerSecond =
        Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8', timeout: 5_000 }).trim()) ||
        fallbackTicksPerSecond;
    } catch {
      ticksPerSecond = fallbackTicksPerSecond;
    }
  }
  return ticksPerSecond;
}
