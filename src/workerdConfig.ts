import { randomUUID } from 'node:crypto';
import { mkdir, readdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { ServiceError } from './errors.js';

const scriptFileName = 'worker.js';
// Invocation directories are named by randomUUID(); nothing else in RUNTIME_PATH is ever deleted.
const invocationDirName = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const configFileName = 'config.capnp';

export interface WorkerdConfigOptions {
  /** File name of the worker script, relative to the config file. */
  readonly scriptFileName: string;
  /** compatibilityDate for the worker; must not be newer than the workerd binary. */
  readonly compatibilityDate: string;
  /** Whether the worker may fetch public internet addresses. Private and loopback ones are never allowed. */
  readonly allowPublicEgress: boolean;
}

// Renders the capnp config for one service-worker script, served over HTTP on loopback.
export function renderWorkerdConfig(options: WorkerdConfigOptions): string {
  // "public" excludes loopback, private and link-local ranges: user code can never reach the
  // attestation server, the storage server or this service.
  const allow = options.allowPublicEgress ? '"public"' : '';
  // Port 0: the kernel picks a free port at bind time, and workerd reports it on the control fd,
  // so there is no window in which another process can take the port.
  return `using Workerd = import "/workerd/workerd.capnp";

const config :Workerd.Config = (
  services = [
    (name = "main", worker = .worker),
    (name = "egress", network = (allow = [${allow}], tlsOptions = (trustBrowserCas = true))),
  ],
  sockets = [(name = "http", address = "127.0.0.1:0", http = (), service = "main")],
);

const worker :Workerd.Worker = (
  serviceWorkerScript = embed ${JSON.stringify(options.scriptFileName)},
  compatibilityDate = ${JSON.stringify(options.compatibilityDate)},
  globalOutbound = "egress",
);
`;
}

// The files of one invocation: a private directory holding the code and its config.
export interface WorkerFiles {
  readonly dir: string;
  readonly configPath: string;
}

export interface WriteWorkerFilesOptions extends Omit<WorkerdConfigOptions, 'scriptFileName'> {
  /** Directory under which each invocation gets its own directory. */
  readonly runtimePath: string;
  readonly code: Buffer;
}

// Writes the code and its config into a new directory whose name is random, never the code_id.
export async function writeWorkerFiles(options: WriteWorkerFilesOptions): Promise<WorkerFiles> {
  const dir = path.join(options.runtimePath, randomUUID());
  const files = { dir, configPath: path.join(dir, configFileName) };
  try {
    await mkdir(dir, { mode: 0o700 });
  } catch (cause) {
    throw new ServiceError('CODE_FILE_FAILED', { cause });
  }
  const config = renderWorkerdConfig({ ...options, scriptFileName });
  // Mode 0600 and exclusive create: no other user can read the code, and no existing file is reused.
  const [code, conf] = await Promise.allSettled([
    writeFile(path.join(dir, scriptFileName), options.code, { mode: 0o600, flag: 'wx' }),
    writeFile(files.configPath, config, { mode: 0o600, flag: 'wx' }),
  ]);
  if (code.status === 'rejected' || conf.status === 'rejected') {
    await removeWorkerFiles(files);
    if (code.status === 'rejected') throw new ServiceError('CODE_FILE_FAILED', { cause: code.reason });
    throw new ServiceError('CONFIG_FILE_FAILED', { cause: conf.status === 'rejected' ? conf.reason : undefined });
  }
  return files;
}

// Deletes an invocation's directory and everything in it.
export async function removeWorkerFiles(files: WorkerFiles): Promise<void> {
  await rm(files.dir, { recursive: true, force: true });
}

// Makes the runtime directory (readable by the service's user only) and deletes the invocation
// directories a killed run left in it; returns how many it deleted.
export async function removeStaleWorkerFiles(runtimePath: string): Promise<number> {
  await mkdir(runtimePath, { recursive: true, mode: 0o700 });
  const stale = (await readdir(runtimePath)).filter((name) => invocationDirName.test(name));
  await Promise.all(stale.map((name) => rm(path.join(runtimePath, name), { recursive: true, force: true })));
  return stale.length;
}
