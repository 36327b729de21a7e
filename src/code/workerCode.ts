/** The kinds of module a worker can be made of, by the capnp field that declares each one. */
export type ModuleType = 'esModule' | 'commonJsModule' | 'wasm' | 'json' | 'text' | 'data';

/** One module of a bundle: its name as other modules import it, its kind and its bytes. */
export interface WorkerModule {
  readonly name: string;
  readonly type: ModuleType;
  readonly content: Buffer;
}

/**
 * A value the worker is given under a name: on `env` for modules, as a global for a service
 * worker. Text (plain or secret, a secret perhaps sealed) and JSON come from the upload's metadata; a WebAssembly module,
 * text or data blob from one of its parts.
 */
export type WorkerBinding =
  | { readonly name: string; readonly type: 'text' | 'json' | 'secretText'; readonly value: string }
  | { readonly name: string; readonly type: 'wasmModule' | 'textBlob' | 'dataBlob'; readonly content: Buffer };

/** The limits code asks for (the upload's `limits`); within the operator's bounds (docs/api.md#limits). */
export interface WorkerLimits {
  /** CPU time of one invocation, in ms (`limits.cpu_ms`, as wrangler sends it). */
  readonly cpuMs?: number;
  /** Memory of its workerd, in MiB (`limits.memory_mb`): V8's heap limits are set as for a cgroup of that size. */
  readonly memoryMb?: number;
}

/** What the code asks of the runtime; what it leaves out, the service's defaults fill in. */
export interface WorkerSettings {
  readonly compatibilityDate: string | undefined;
  readonly compatibilityFlags: readonly string[] | undefined;
  readonly bindings: readonly WorkerBinding[];
  readonly limits?: WorkerLimits;
}

/** What workerd runs: a single service-worker script, or modules whose first is the main one. */
export type WorkerCode = (
  | { readonly format: 'service-worker'; readonly script: Buffer }
  | { readonly format: 'modules'; readonly modules: readonly WorkerModule[] }
) & { readonly settings: WorkerSettings };

/** The settings of code that came without metadata: all the service's defaults, no bindings. */
export const noSettings: WorkerSettings = { compatibilityDate: undefined, compatibilityFlags: undefined, bindings: [] };

/**
 * What the storage server answered for a code_id: the bytes and how they are typed (one script,
 * or a multipart bundle of modules).
 */
export interface StoredCode {
  readonly bytes: Buffer;
  readonly contentType: string | undefined;
}

/** Code ready to run: a code_id's download (as the code cache holds it), its sha256, and what workerd runs of it. */
export interface RunnableCode {
  readonly codeId: string;
  readonly stored: StoredCode;
  /** sha256 of the bytes as the storage server served them. */
  readonly sha256: Buffer;
  /** The download parsed, its sealed secrets opened. */
  readonly code: WorkerCode;
}
