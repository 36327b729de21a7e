import { type ChildProcess, spawn } from 'node:child_process';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import getPort from 'get-port';
import { request } from 'undici';
import { rawDocumentPath } from '../../src/dev/attestationServer.js';
import type { RunningServer } from '../../src/dev/listen.js';
import { serviceNodeFlags } from '../../src/serviceNodeFlags.js';
import { cgroupRoot, type TestPool } from './cgroups.js';
import { projectRoot } from './projectRoot.js';

const defaultStartTimeoutMs = 10_000;

// The built service (`npm start`) running as its own process.
export interface ServiceProcess {
  readonly url: string;
  readonly child: ChildProcess;
  /** Everything it wrote to stdout and stderr so far. */
  output(): string;
  /** Resolves with the exit code (or signal) once it has exited. */
  readonly exited: Promise<number | NodeJS.Signals | null>;
}

/** How the service's process is started, besides its environment. */
export interface ServiceStartOptions {
  /** Node's flags; the service's own (serviceNodeFlags) unless told. */
  readonly nodeFlags?: readonly string[];
  /** How long it may take to listen (longer in an emulated guest, see test/v2/). */
  readonly startTimeoutMs?: number;
  /** Its limit on open files (RLIMIT_NOFILE, soft and hard), set by prlimit; ours unless told. */
  readonly openFileLimit?: number;
}

// Runs dist/src/main.js with the given environment and nothing else from ours but PATH.
async function spawnService(
  env: Readonly<Record<string, string>>,
  options: ServiceStartOptions = {},
): Promise<ServiceProcess> {
  const port = env.PORT ? Number(env.PORT) : await getPort({ host: '127.0.0.1' });
  const command = [
    process.execPath,
    ...(options.nodeFlags ?? serviceNodeFlags),
    path.join(projectRoot, 'dist/src/main.js'),
  ];
  // prlimit sets the limit and then runs the service in its own process, under the same PID.
  const limited =
    options.openFileLimit === undefined
      ? command
      : ['prlimit', `--nofile=${options.openFileLimit}:${options.openFileLimit}`, '--', ...command];
  const child = spawn(limited[0]!, limited.slice(1), {
    cwd: projectRoot,
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOST: '127.0.0.1', PORT: String(port), ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
  const exited = new Promise<number | NodeJS.Signals | null>((resolve) =>
    child.once('exit', (code, signal) => resolve(code ?? signal)),
  );
  return { url: `http://127.0.0.1:${port}`, child, output: () => output, exited };
}

// Starts the service and resolves once it listens; fails with its output if it exits first or
// takes longer than its start time-out.
export async function startService(
  env: Readonly<Record<string, string>>,
  options: ServiceStartOptions = {},
): Promise<ServiceProcess> {
  const { startTimeoutMs = defaultStartTimeoutMs } = options;
  const service = await spawnService(env, options);
  let exited = false;
  void service.exited.then(() => (exited = true));
  for (const deadline = Date.now() + startTimeoutMs; !exited && Date.now() < deadline; ) {
    const answered = await request(`${service.url}/health`).then(
      async (response) => {
        await response.body.dump();
        return true;
      },
      () => false,
    );
    if (answered) return service;
    await sleep(20);
  }
  service.child.kill('SIGKILL');
  throw new Error(`the service did not start:\n${service.output()}`);
}

// Starts the service expecting it to refuse; resolves with its exit code and output.
export async function refusedStart(env: Readonly<Record<string, string>>): Promise<{ code: unknown; output: string }> {
  const service = await spawnService(env);
  const timer = setTimeout(() => service.child.kill('SIGKILL'), defaultStartTimeoutMs);
  const code = await service.exited;
  clearTimeout(timer);
  return { code, output: service.output() };
}

export interface ServiceEnvOptions {
  readonly pool: TestPool;
  readonly runtimePath: string;
  readonly attestation: RunningServer;
  readonly storage: RunningServer;
}

// The settings that point a service at a test pool, its own runtime directory and the development servers.
export function serviceEnv(options: ServiceEnvOptions): Record<string, string> {
  return {
    CGROUP_ROOT: cgroupRoot,
    CGROUP_PREFIX: options.pool.prefix,
    RUNTIME_PATH: options.runtimePath,
    ATTESTATION_URL: `${options.attestation.url}${rawDocumentPath}`,
    STORAGE_URL: `${options.storage.url}/load`,
  };
}
