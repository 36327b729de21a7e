import { randomUUID } from 'node:crypto';
import { mkdirSync, rmdirSync, unlinkSync, writeFileSync } from 'node:fs';
import { mkdir, readdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { ServiceError } from '../errors.js';
import { guardedScript, guardModuleName, guardModuleSource, type ResponseGuard } from './responseGuard.js';
import type { ModuleType, WorkerBinding, WorkerCode } from './workerCode.js';

// Invocation directories are named by randomUUID(); nothing else in RUNTIME_PATH is ever deleted.
const invocationDirName = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const configFileName = 'config.capnp';
const scriptFileName = 'worker.js';

/**
 * How the config declares the worker's code: files (relative to the config) and, for modules,
 * the name each is imported by. The first module is the main one.
 */
export type CodeFiles = (
  | { readonly format: 'service-worker'; readonly file: string }
  | {
      readonly format: 'modules';
      readonly modules: ReadonlyArray<{ readonly name: string; readonly type: ModuleType; readonly file: string }>;
    }
) & {
  /** The bindings, those whose value is a part by the file it was written to. */
  readonly bindings: readonly BindingFile[];
};

/** A binding as the config declares it: a value inline, or a file that holds it. */
export type BindingFile =
  | { readonly name: string; readonly type: 'text' | 'json' | 'secretText'; readonly value: string }
  | { readonly name: string; readonly type: 'wasmModule' | 'textBlob' | 'dataBlob'; readonly file: string };

/** What code gets that does not say: the service's COMPATIBILITY_DATE and COMPATIBILITY_FLAGS. */
export interface RuntimeDefaults {
  readonly compatibilityDate: string;
  readonly compatibilityFlags: readonly string[];
}

export interface WorkerdConfigOptions {
  readonly code: CodeFiles;
  /** compatibilityDate for the worker; workerd refuses one newer than its binary. */
  readonly compatibilityDate: string;
  /** compatibilityFlags for the worker; workerd refuses one it does not know. */
  readonly compatibilityFlags: readonly string[];
  /** Whether the worker may fetch public internet addresses. Private and loopback ones are never allowed. */
  readonly allowPublicEgress: boolean;
  /** Address blocks the worker may never reach, even when they count as public (src/code/egress.ts). */
  readonly deniedEgress: readonly string[];
  /** Flags for V8, such as its heap limits (src/sandbox/heapLimit.ts); none when undefined. */
  readonly v8Flags?: readonly string[];
  /** Whether workerd sends the worker's trace of each invocation to the worker's own tail handler (the guard's). */
  readonly traced?: boolean;
}

/** Renders the capnp config for one worker, served over HTTP on loopback. */
export function renderWorkerdConfig(options: WorkerdConfigOptions): string {
  // "public" excludes loopback, private and link-local ranges, and the deny list the rest of what
  // leads back to this machine: user code can never reach the attestation server, the storage
  // server or this service.
  const allow = options.allowPublicEgress ? '"public"' : '';
  const deny = options.deniedEgress.map(quote).join(', ');
  const v8Flags = options.v8Flags?.length ? `\n  v8Flags = [${options.v8Flags.map(quote).join(', ')}],` : '';
  // Port 0: the kernel picks a free port at bind time, and workerd reports it on the control fd,
  // so there is no window in which another process can take the port.
  return `using Workerd = import "/workerd/workerd.capnp";

const config :Workerd.Config = (
  services = [
    (name = "main", worker = .worker),
    (name = "egress", network = (allow = [${allow}], deny = [${deny}], tlsOptions = (trustBrowserCas = true))),
  ],
  sockets = [(name = "http", address = "127.0.0.1:0", http = (), service = "main")],${v8Flags}
);

const worker :Workerd.Worker = (
  ${renderCode(options.code)},
  compatibilityDate = ${quote(options.compatibilityDate)},
  compatibilityFlags = [${options.compatibilityFlags.map(quote).join(', ')}],${renderBindings(options.code.bindings)}
  globalOutbound = "egress",${options.traced ? '\n  tails = ["main"],' : ''}
);
`;
}

function renderCode(code: CodeFiles): string {
  if (code.format === 'service-worker') return `serviceWorkerScript = embed ${quote(code.file)}`;
  const modules = code.modules.map(
    (module) => `    (name = ${quote(module.name)}, ${module.type} = embed ${quote(module.file)}),`,
  );
  return `modules = [\n${modules.join('\n')}\n  ]`;
}

// The capnp field of each kind of binding; a blob is embedded from its file, as text or as bytes.
const bindingFields = {
  text: 'text',
  secretText: 'text',
  json: 'json',
  wasmModule: 'wasmModule',
  textBlob: 'text',
  dataBlob: 'data',
} as const;

function renderBindings(bindings: readonly BindingFile[]): string {
  if (bindings.length === 0) return '';
  const rendered = bindings.map((binding) => {
    const value = 'value' in binding ? quote(binding.value) : `embed ${quote(binding.file)}`;
    return `    (name = ${quote(binding.name)}, ${bindingFields[binding.type]} = ${value}),`;
  });
  return `\n  bindings = [\n${rendered.join('\n')}\n  ],`;
}

/**
 * A capnp text literal. Printable ASCII stands as it is, but for the quote and the backslash;
 * every other byte of the UTF-8 text is written as \xNN, which capnp reads back as that byte, so
 * no name, value or source can end the literal or the config early.
 */
export function quote(text: string): string {
  let literal = '"';
  for (const byte of Buffer.from(text, 'utf8')) {
    const printable = byte >= 0x20 && byte < 0x7f && byte !== 0x22 && byte !== 0x5c;
    literal += printable ? String.fromCharCode(byte) : `\\x${byte.toString(16).padStart(2, '0')}`;
  }
  return `${literal}"`;
}

/** The files of one invocation: a private directory holding the code and its config. */
export interface WorkerFiles {
  readonly dir: string;
  readonly configPath: string;
  /** Every file written into dir. */
  readonly paths: readonly string[];
}

export interface WriteWorkerFilesOptions
  extends Omit<WorkerdConfigOptions, 'code' | 'compatibilityDate' | 'compatibilityFlags'> {
  /** Directory under which each invocation gets its own directory. */
  readonly runtimePath: string;
  readonly code: WorkerCode;
  /** The date and flags of code that does not name its own. */
  readonly defaults: RuntimeDefaults;
  /** The guard put between the socket and the function (src/code/responseGuard.ts); none for bare workerd. */
  readonly guard: ResponseGuard | undefined;
}

// Code and config up to this size are written synchronously: an asynchronous write is a
// thread-pool round trip for each mkdir, open, write and close, which cost more of the service's
// CPU than putting a few KiB into the page cache (docs/performance.md). Larger code goes through
// the thread pool, so that a bundle of megabytes does not stop the event loop.
const syncWriteMaxBytes = 64 * 1024;

/**
 * Writes the code and its config into a new directory whose name is random, never the code_id;
 * module files are numbered, never named after the modules.
 */
export async function writeWorkerFiles(options: WriteWorkerFilesOptions): Promise<WorkerFiles> {
  const dir = path.join(options.runtimePath, randomUUID());
  const { code, files: codeFiles } = planCodeFiles(options.code, options.guard);
  const configPath = path.join(dir, configFileName);
  const files = { dir, configPath, paths: [...codeFiles.map(({ file }) => path.join(dir, file)), configPath] };
  const { settings } = options.code;
  const config = renderWorkerdConfig({
    ...options,
    code,
    compatibilityDate: settings.compatibilityDate ?? options.defaults.compatibilityDate,
    compatibilityFlags: settings.compatibilityFlags ?? options.defaults.compatibilityFlags,
    traced: options.guard !== undefined,
  });
  const sync =
    codeFiles.reduce((bytes, { content }) => bytes + content.length, Buffer.byteLength(config)) <= syncWriteMaxBytes;
  try {
    if (sync) mkdirSync(dir, { mode: 0o700 });
    else await mkdir(dir, { mode: 0o700 });
  } catch (cause) {
    throw new ServiceError('CODE_FILE_FAILED', { cause });
  }
  // Mode 0600 and exclusive create: no other user can read the code, and no existing file is reused.
  const exclusive = { mode: 0o600, flag: 'wx' } as const;
  const write = async (file: string, content: Buffer | string) =>
    sync ? writeFileSync(file, content, exclusive) : writeFile(file, content, exclusive);
  const written = await Promise.allSettled([
    ...codeFiles.map(({ file, content }) => write(path.join(dir, file), content)),
    write(configPath, config),
  ]);
  const failed = written.findIndex((result) => result.status === 'rejected');
  if (failed !== -1) {
    // A directory this cannot remove goes at the next start.
    try {
      removeWorkerFiles(files);
    } catch {
      // The write's failure is the one to report.
    }
    const cause = (written[failed] as PromiseRejectedResult).reason;
    throw new ServiceError(failed < codeFiles.length ? 'CODE_FILE_FAILED' : 'CONFIG_FILE_FAILED', { cause });
  }
  return files;
}

/**
 * Decides the file of each piece of code: worker.js for a script, module0, module1, … for
 * modules, binding0, binding1, … for the parts that bindings hold. With a guard, the script starts
 * with it, or a module of the guard's comes first and is the main one.
 */
function planCodeFiles(
  code: WorkerCode,
  guard: ResponseGuard | undefined,
): { code: CodeFiles; files: Array<{ file: string; content: Buffer }> } {
  const files: Array<{ file: string; content: Buffer }> = [];
  const fileFor = (prefix: string, content: Buffer) => {
    const file = `${prefix}${files.length}`;
    files.push({ file, content });
    return file;
  };
  const bindings = code.settings.bindings.map(
    (binding: WorkerBinding): BindingFile =>
      'value' in binding
        ? binding
        : { name: binding.name, type: binding.type, file: fileFor('binding', binding.content) },
  );
  if (code.format === 'service-worker') {
    files.push({ file: scriptFileName, content: guard ? guardedScript(guard, code.script) : code.script });
    return { code: { format: 'service-worker', file: scriptFileName, bindings }, files };
  }
  const guardModule = guard && {
    name: guardModuleName,
    type: 'esModule' as const,
    content: Buffer.from(guardModuleSource(guard, code.modules[0]!.name)),
  };
  const modules = [...(guardModule ? [guardModule] : []), ...code.modules].map((module) => ({
    name: module.name,
    type: module.type,
    file: fileFor('module', module.content),
  }));
  return { code: { format: 'modules', modules, bindings }, files };
}

/**
 * Deletes an invocation's directory and everything in it. Its files are known, so each is unlinked
 * by name: a recursive rm would first look at every one of them. Synchronous: it runs after the
 * answer has gone, and a few quick system calls (one per file written, and workersUpload caps the
 * parts of a bundle) cost a fraction of the CPU that their trips through the thread pool would.
 */
export function removeWorkerFiles(files: WorkerFiles): void {
  // Every removal is tried, whatever fails; the first failure is reported.
  let failure: unknown;
  const attempt = (remove: () => void) => {
    try {
      remove();
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') failure ??= error;
    }
  };
  // A file that a failed write never made is not there to delete.
  for (const file of files.paths) attempt(() => unlinkSync(file));
  attempt(() => rmdirSync(files.dir));
  if (failure !== undefined) throw failure;
}

/**
 * Makes the runtime directory (readable by the service's user only) and deletes the invocation
 * directories a killed run left in it; returns how many it deleted.
 */
export async function removeStaleWorkerFiles(runtimePath: string): Promise<number> {
  await mkdir(runtimePath, { recursive: true, mode: 0o700 });
  const stale = (await readdir(runtimePath)).filter((name) => invocationDirName.test(name));
  await Promise.all(stale.map((name) => rm(path.join(runtimePath, name), { recursive: true, force: true })));
  return stale.length;
}
