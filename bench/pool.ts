// Real cgroup pools for one bench run, under a unique ob… prefix.
import { createScratchPool, type ScratchPool } from '../src/dev/scratchPool.js';
import { readCpuUsageUs } from '../src/sandbox/cgroups.js';
import type { Cleanup } from './cleanup.js';

export { cgroupRoot, cgroupUnavailableReason } from '../src/dev/scratchPool.js';

// Same limits a deployment gets from the setup scripts' defaults.
const memoryLimit = '100M';
const cpuPercent = 100;

export interface BenchPool extends ScratchPool {
  readonly size: number;
  /** For each cgroup, the cgroup.procs files a process writes its pid into to join it. */
  readonly procsFiles: ReadonlyArray<readonly string[]>;
  /**
   * CPU time in ms that everything in the pool's cgroups has used (standby shells, workerd, spares),
   * from the cgroups' own counters; undefined where a cgroup has none (v1 without cpuacct).
   */
  cpuMs(): number | undefined;
}

/** Creates `size` cgroups with the setup script for this machine's cgroup version; teardown removes them. */
export async function createBenchPool(size: number, cleanup: Cleanup): Promise<BenchPool> {
  const pool = await createScratchPool({ stem: 'ob', count: size, memory: memoryLimit, cpuPercent });
  cleanup.add(`remove cgroup pool ${pool.prefix}`, () => pool.remove());
  const cpuMs = () => {
    let totalUs = 0;
    for (const cgroup of pool.cgroups) {
      const us = readCpuUsageUs(cgroup);
      if (us === undefined) return undefined;
      totalUs += us;
    }
    return totalUs / 1000;
  };
  return { ...pool, size, procsFiles: pool.cgroups.map((cgroup) => cgroup.procsFiles), cpuMs };
}
