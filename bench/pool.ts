// Real cgroup pools for one bench run, made by the project's own setup script under a unique
// prefix, so they never touch a pool the service uses for real.
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { access, constants, readdir, readFile, rmdir } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);
const projectRoot = path.resolve(import.meta.dirname, '../..');
export const cgroupRoot = '/sys/fs/cgroup';
// Same limits a deployment gets from the setup scripts' defaults.
const memoryLimit = '100M';
const cpuPercent = 100;
const setupTimeoutMs = 30_000;
// The kernel removes a cgroup only once its last process is fully gone, shortly after the kill.
const rmdirAttempts = 100;
const rmdirRetryMs = 20;

export interface BenchPool {
  readonly prefix: string;
  readonly version: 1 | 2;
  readonly size: number;
  /** For each cgroup, the cgroup.procs files a process writes its pid into to join it. */
  readonly procsFiles: ReadonlyArray<readonly string[]>;
  /** Kills whatever is still in the pool's cgroups and deletes them. */
  remove(): Promise<void>;
}

// Why real cgroups cannot be made here, or undefined when they can.
export async function cgroupUnavailableReason(): Promise<string | undefined> {
  if (process.getuid?.() !== 0) return 'not running as root, so no cgroup can be created';
  if ((await cgroupVersion()) === 2) return undefined;
  for (const controller of ['memory', 'cpu']) {
    const writable = await access(path.join(cgroupRoot, controller), constants.W_OK).then(
      () => true,
      () => false,
    );
    if (!writable) return `no writable cgroup memory and cpu controllers under ${cgroupRoot}`;
  }
  return undefined;
}

// Creates `size` cgroups named ob<random>-1..size with the setup script for this machine's cgroup version.
export async function createBenchPool(size: number): Promise<BenchPool> {
  const prefix = `ob${randomBytes(4).toString('hex')}-`;
  const version = await cgroupVersion();
  const script = path.join(projectRoot, version === 2 ? 'cgroupv2_setup.sh' : 'cgroupv1_setup.sh');
  const dirs = controllerDirs(version);
  const remove = () => removePool(dirs, prefix);
  try {
    await run(script, [String(size), memoryLimit, String(cpuPercent)], {
      env: { ...process.env, CGROUP_PREFIX: prefix, CGROUP_ROOT: cgroupRoot },
      timeout: setupTimeoutMs,
    });
  } catch (error) {
    // The script may have made some of the cgroups before it failed.
    await remove().catch(() => undefined);
    throw error;
  }
  const procsFiles = Array.from({ length: size }, (_, i) => dirs.map((dir) => path.join(dir, `${prefix}${i + 1}`, 'cgroup.procs')));
  return { prefix, version, size, procsFiles, remove };
}

async function cgroupVersion(): Promise<1 | 2> {
  const controllers = await readFile(path.join(cgroupRoot, 'cgroup.controllers'), 'utf8').catch(() => '');
  return /\bmemory\b/.test(controllers) ? 2 : 1;
}

// Where the pool's cgroups live: the unified root on v2, the memory and cpu hierarchies on v1.
function controllerDirs(version: 1 | 2): string[] {
  return version === 2 ? [cgroupRoot] : [path.join(cgroupRoot, 'memory'), path.join(cgroupRoot, 'cpu')];
}

async function removePool(dirs: readonly string[], prefix: string): Promise<void> {
  for (const dir of dirs) {
    const names = (await readdir(dir).catch(() => [] as string[])).filter((name) => name.startsWith(prefix));
    for (const name of names) {
      await killMembers(path.join(dir, name, 'cgroup.procs'));
      await removeWhenEmpty(path.join(dir, name));
    }
  }
}

async function killMembers(procsFile: string): Promise<void> {
  const text = await readFile(procsFile, 'utf8').catch(() => '');
  for (const pid of text.split('\n').filter((line) => line.trim() !== '').map(Number)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // Gone already.
    }
  }
}

async function removeWhenEmpty(dir: string): Promise<void> {
  for (let attempt = 0; ; attempt += 1) {
    try {
      await rmdir(dir);
      return;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return;
      if (attempt >= rmdirAttempts) throw error;
      await new Promise((resolve) => setTimeout(resolve, rmdirRetryMs));
    }
  }
}
