// Throwaway cgroup pools for the tests and the benchmark: made with the project's own setup
// scripts under a unique prefix, so they never touch a pool the service uses for real, and
// removed afterwards with whatever is left in them.
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { access, constants, readdir, readFile, rmdir } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { type Cgroup, detectCgroupVersion, discoverCgroups } from '../sandbox/cgroups.js';
import { cgroupSetupScript } from './cgroupSetupScript.js';

const run = promisify(execFile);
/** Where this machine's cgroup file systems are mounted. */
export const cgroupRoot = '/sys/fs/cgroup';
const setupTimeoutMs = 30_000;
// The kernel removes a cgroup only once its last process is fully gone, shortly after the kill.
const rmdirAttempts = 100;
const rmdirRetryMs = 20;

/** What pool to make. */
export interface ScratchPoolOptions {
  /** The start of the prefix; a random part follows, e.g. oytest1a2b3c4d-. */
  readonly stem: string;
  readonly count: number;
  /** Memory limit of each cgroup, e.g. 128M. */
  readonly memory: string;
  /** CPU cap of each cgroup, in percent of one core. */
  readonly cpuPercent: number;
}

/** A pool made for one test file or one bench run. */
export interface ScratchPool {
  readonly prefix: string;
  readonly version: 1 | 2;
  readonly cgroups: readonly Cgroup[];
  /** Kills whatever is still in the pool's cgroups and deletes them. */
  remove(): Promise<void>;
}

/** Why cgroups cannot be made here, or undefined when they can. */
export async function cgroupUnavailableReason(): Promise<string | undefined> {
  if (process.getuid?.() !== 0) return 'not running as root, so no cgroup can be created';
  // A machine with no memory controller at all fails the v1 check below, with a reason.
  if ((await detectCgroupVersion(cgroupRoot).catch(() => undefined)) === 2) return undefined;
  for (const controller of ['memory', 'cpu']) {
    const writable = await access(path.join(cgroupRoot, controller), constants.W_OK).then(
      () => true,
      () => false,
    );
    if (!writable) return `no writable cgroup memory and cpu controllers under ${cgroupRoot}`;
  }
  return undefined;
}

/** Creates a pool with the setup script for this machine's cgroup version. */
export async function createScratchPool(options: ScratchPoolOptions): Promise<ScratchPool> {
  const prefix = `${options.stem}${randomBytes(4).toString('hex')}-`;
  const version = await detectCgroupVersion(cgroupRoot);
  const script = cgroupSetupScript(version);
  const remove = () => removeCgroups(prefix);
  try {
    await run(script, [String(options.count), options.memory, String(options.cpuPercent)], {
      env: { ...process.env, CGROUP_PREFIX: prefix, CGROUP_ROOT: cgroupRoot },
      timeout: setupTimeoutMs,
    });
  } catch (error) {
    // The script may have made some of the cgroups before it failed.
    await remove().catch(() => undefined);
    throw error;
  }
  return { prefix, version, cgroups: await discoverCgroups(cgroupRoot, version, prefix), remove };
}

/**
 * Deletes every cgroup whose name starts with a prefix, in every hierarchy (a half-made v1 one
 * included), killing what is left in them.
 */
export async function removeCgroups(prefix: string): Promise<void> {
  const version = await detectCgroupVersion(cgroupRoot);
  const dirs =
    version === 2 ? [cgroupRoot] : ['memory', 'cpu', 'cpuacct'].map((controller) => path.join(cgroupRoot, controller));
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
  for (const pid of text
    .split('\n')
    .filter((line) => line.trim() !== '')
    .map(Number)) {
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
      await sleep(rmdirRetryMs);
    }
  }
}
