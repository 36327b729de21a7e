// The built service (dist/src/main.js with its Node flags, as `npm start` runs it) as a process of its own, with its
// own cgroup pool and runtime directory, watched through /proc.
import os from 'node:os';
import path from 'node:path';
import { rawDocumentPath } from '../src/dev/attestationServer.js';
import { projectRoot } from '../src/dev/projectRoot.js';
import { makeTempDir, removeTempDir } from '../src/dev/tempDir.js';
import { serviceNodeFlags } from '../src/serviceNodeFlags.js';
import { startNodeChild } from './child.js';
import type { Cleanup } from './cleanup.js';
import type { BenchPool } from './pool.js';
import { cgroupRoot } from './pool.js';
import { type MemoryUse, readCpuMs, readMemory } from './procStats.js';
import type { Upstreams } from './upstreamProcess.js';

const serviceScript = path.join(projectRoot, 'dist/src/main.js');
// Short, so a stop at the end of the bench does not wait long for a stuck request.
const shutdownGraceMs = 2_000;
const stopGraceMs = 5_000;

export interface ServiceProcess {
  readonly name: string;
  readonly url: string;
  readonly pid: number;
  memory(): Promise<MemoryUse>;
  cpuMs(): Promise<number>;
  /** CPU of the workerd it started and of its standby shells, from its pool's cgroups (see BenchPool.cpuMs). */
  workerdCpuMs(): number | undefined;
  /** The last part of its log. */
  output(): string;
  /** SIGTERM (its graceful shutdown), then SIGKILL; deletes its runtime directory. */
  stop(): Promise<void>;
}

export interface StartServiceOptions {
  readonly name: string;
  readonly pool: BenchPool;
  readonly upstreams: Upstreams;
  /** Settings on top of the bench's own, e.g. CODE_CACHE_MAX_BYTES. */
  readonly env: Readonly<Record<string, string>>;
  /** The service's entry point; this checkout's build unless another build is compared. */
  readonly script?: string;
  readonly cleanup: Cleanup;
}

/** Starts the service on a free loopback port and resolves once it listens. */
export async function startServiceProcess(options: StartServiceOptions): Promise<ServiceProcess> {
  const runtimePath = await makeTempDir('oyster-bench-runtime-');
  const removeRuntime = options.cleanup.add(`remove ${runtimePath}`, () => removeTempDir(runtimePath));
  const { child, match } = await startNodeChild({
    name: `service (${options.name})`,
    nodeArgs: serviceNodeFlags,
    script: options.script ?? serviceScript,
    // Not the project directory: a developer's .env there must not change the bench.
    cwd: os.tmpdir(),
    // Everything else at its default, as deployed (LOG_LEVEL info included: logging is part of the cost).
    env: {
      PATH: process.env.PATH ?? '/usr/bin:/bin',
      HOST: '127.0.0.1',
      PORT: '0',
      CGROUP_ROOT: cgroupRoot,
      CGROUP_VERSION: String(options.pool.version),
      CGROUP_PREFIX: options.pool.prefix,
      RUNTIME_PATH: runtimePath,
      ATTESTATION_URL: `${options.upstreams.attestationUrl}${rawDocumentPath}`,
      STORAGE_URL: options.upstreams.storageUrl,
      SHUTDOWN_GRACE_MS: String(shutdownGraceMs),
      // As deployed with a usage ledger: its commit is the `ledger` stage of each request.
      LEDGER_PATH: path.join(runtimePath, 'ledger', 'usage.sqlite'),
      ...options.env,
    },
    ready: /Server listening at (http:\/\/127\.0\.0\.1:\d+)/,
    cleanup: options.cleanup,
  });
  const pid = child.pid;
  return {
    name: options.name,
    url: match[1]!,
    pid,
    memory: () => readMemory(pid),
    cpuMs: () => readCpuMs(pid),
    workerdCpuMs: () => options.pool.cpuMs(),
    output: () => child.output(),
    stop: async () => {
      await child.stop(stopGraceMs);
      await removeRuntime();
    },
  };
}
