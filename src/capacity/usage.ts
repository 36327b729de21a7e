import { readFileSync } from 'node:fs';
import { type Cgroup, readCpuUsageUs } from '../sandbox/cgroups.js';

const kib = 1024;

/** What one invocation's workerd used, as the kernel counts it. */
export interface FunctionUsage {
  /**
   * CPU time of everything in its cgroup from just before its workerd was started (for a spare,
   * when the spare was) to its answer: workerd's own, and the standby's fork of it. Undefined
   * when the cgroup has no CPU counter.
   */
  readonly cpuMs: number | undefined;
  /** The highest resident memory of its workerd (VmHWM); undefined when workerd was gone before it answered. */
  readonly peakMemoryBytes: number | undefined;
}

/** Measures one invocation from the moment it is made. */
export interface UsageMeter {
  /** What the invocation has used so far; pid is its workerd's, while it runs. */
  read(pid: number | undefined): FunctionUsage;
}

/** Starts measuring what the next workerd in a cgroup uses. */
export function startUsageMeter(cgroup: Cgroup): UsageMeter {
  const cpuBefore = readCpuUsageUs(cgroup);
  return {
    read: (pid) => {
      const cpuNow = cpuBefore === undefined ? undefined : readCpuUsageUs(cgroup);
      return {
        cpuMs: cpuBefore === undefined || cpuNow === undefined ? undefined : (cpuNow - cpuBefore) / 1000,
        peakMemoryBytes: pid === undefined ? undefined : readPeakRss(pid),
      };
    },
  };
}

// VmHWM of a process, from /proc: its resident memory at its highest.
function readPeakRss(pid: number): number | undefined {
  try {
    const match = /^VmHWM:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return match ? Number(match[1]) * kib : undefined;
  } catch {
    return undefined;
  }
}
