import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { access, constants, readFile, rmdir } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { discoverCgroups, readPids } from '../../src/cgroupPool.js';

const run = promisify(execFile);
const projectRoot = path.resolve(import.meta.dirname, '../..');
export const cgroupRoot = '/sys/fs/cgroup';

// Why real cgroups cannot be made here, or undefined when they can.
export async function cgroupUnavailableReason(): Promise<string | undefined> {
  if (process.getuid?.() !== 0) return 'not running as root, so no cgroup can be created';
  const controllers = await readFile(path.join(cgroupRoot, 'cgroup.controllers'), 'utf8').catch(() => '');
  if (/\bmemory\b/.test(controllers) && /\bcpu\b/.test(controllers)) return undefined;
  for (const controller of ['memory', 'cpu']) {
    const writable = await access(path.join(cgroupRoot, controller), constants.W_OK).then(
      () => true,
      () => false,
    );
    if (!writable) return `no writable cgroup memory and cpu controllers under ${cgroupRoot}`;
  }
  return undefined;
}

// Decides once per file whether the real-cgroup tests run; under CI a skip is a failure.
export async function cgroupsOrSkip(): Promise<boolean> {
  const reason = await cgroupUnavailableReason();
  if (reason === undefined) return true;
  if (process.env.CI === 'true') throw new Error(`CI=true but the cgroup tests cannot run: ${reason}`);
  console.warn(`Skipping the tests that need real cgroups: ${reason}`);
  return false;
}

export interface TestPool {
  readonly prefix: string;
  readonly version: 1 | 2;
  /** Deletes the pool's cgroups, killing whatever the tests left in them. */
  remove(): Promise<void>;
}

export interface TestPoolOptions {
  readonly count?: number;
  readonly memory?: string;
  readonly cpuPercent?: number;
}

// Creates a real cgroup pool under a unique prefix with the project's own setup script.
export async function createTestPool(options: TestPoolOptions = {}): Promise<TestPool> {
  const prefix = `oytest${randomBytes(4).toString('hex')}-`;
  const controllers = await readFile(path.join(cgroupRoot, 'cgroup.controllers'), 'utf8').catch(() => '');
  const version = /\bmemory\b/.test(controllers) ? 2 : 1;
  const script = path.join(projectRoot, version === 2 ? 'cgroupv2_setup.sh' : 'cgroupv1_setup.sh');
  const args = [String(options.count ?? 3), options.memory ?? '128M', String(options.cpuPercent ?? 100)];
  await run(script, args, { env: { ...process.env, CGROUP_PREFIX: prefix, CGROUP_ROOT: cgroupRoot } });
  return {
    prefix,
    version,
    remove: () => removeCgroups(prefix),
  };
}

// Deletes every cgroup under a prefix (made by a test, or by a script a test ran), killing what is
// left in them.
export async function removeCgroups(prefix: string): Promise<void> {
  const controllers = await readFile(path.join(cgroupRoot, 'cgroup.controllers'), 'utf8').catch(() => '');
  const version = /\bmemory\b/.test(controllers) ? 2 : 1;
  for (const cgroup of await discoverCgroups(cgroupRoot, version, prefix)) {
    for (const pid of await readPids(cgroup)) process.kill(pid, 'SIGKILL');
    for (const procs of cgroup.procsFiles) await removeWhenEmpty(path.dirname(procs));
  }
}

async function removeWhenEmpty(dir: string): Promise<void> {
  for (let attempt = 0; ; attempt += 1) {
    try {
      await rmdir(dir);
      return;
    } catch (error) {
      if (attempt >= 100) throw error;
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }
}
