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

/**
 * CPU time (user + system) the process itself has used, in milliseconds. Reaped children count
 * separately (cutime, cstime), so workerd's own CPU is not in it; forking and exec'ing them is.
 */
export async function readCpuMs(pid: number): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
  // The command name is in parentheses and may contain spaces: count fields after the last ')'.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // Fields 14 and 15 of proc(5) (utime, stime) are at 11 and 12 once pid and comm are dropped.
  const utime = Number(fields[11]);
  const stime = Number(fields[12]);
  if (!Number.isFinite(utime) || !Number.isFinite(stime)) throw new Error(`cannot parse /proc/${pid}/stat`);
  return ((utime + stime) * 1000) / clockTicksPerSecond();
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
