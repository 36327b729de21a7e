import { cgroupUnavailableReason, createScratchPool, type ScratchPool } from '../../src/dev/scratchPool.js';

export { cgroupRoot, removeCgroups } from '../../src/dev/scratchPool.js';
export type TestPool = ScratchPool;

// Decides once per file whether the real-cgroup tests run; under CI a skip is a failure.
export async function cgroupsOrSkip(): Promise<boolean> {
  const reason = await cgroupUnavailableReason();
  if (reason === undefined) return true;
  if (process.env.CI === 'true') throw new Error(`CI=true but the cgroup tests cannot run: ${reason}`);
  console.warn(`Skipping the tests that need real cgroups: ${reason}`);
  return false;
}

export interface TestPoolOptions {
  readonly count?: number;
  readonly memory?: string;
  readonly cpuPercent?: number;
}

// Creates a real cgroup pool under a unique oytest… prefix with the project's own setup script.
export function createTestPool(options: TestPoolOptions = {}): Promise<TestPool> {
  return createScratchPool({
    stem: 'oytest',
    count: options.count ?? 3,
    memory: options.memory ?? '128M',
    cpuPercent: options.cpuPercent ?? 100,
  });
}
