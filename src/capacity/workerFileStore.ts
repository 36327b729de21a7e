import type { StoredCode, WorkerCode } from '../code/workerCode.js';
import { removeWorkerFiles, type WorkerFiles } from '../code/workerdConfig.js';

/** One invocation's use of the files workerd reads: its config and code. */
export interface FilesLease {
  readonly configPath: string;
  /** Ends this invocation's use; removes the files (synchronously) if nothing else will read them. Throws what the removal threw. */
  release(): void;
}

export interface WorkerFileStoreOptions {
  /** Writes the files of some code into a new directory of their own. */
  readonly write: (code: WorkerCode) => Promise<WorkerFiles>;
  /** Told when files that no invocation was waiting on could not be removed. */
  readonly onRemoveFailed: (error: unknown) => void;
}

// The files of one cached download, and the invocations using them.
interface Shared {
  readonly written: Promise<WorkerFiles>;
  files: WorkerFiles | undefined;
  users: number;
  retired: boolean;
}

/**
 * Writes each piece of code's files once for as long as the code cache holds the code, and shares
 * them between its invocations: the config is the same for every invocation of the same code (the
 * port comes from the control fd), and writing it costs more than everything else the service does
 * for a warm request. Code the cache does not hold gets files of its own, removed when released.
 */
export class WorkerFileStore {
  readonly #options: WorkerFileStoreOptions;
  /** By the cached download itself: code fetched again for the same code_id is new code. */
  readonly #shared = new Map<StoredCode, Shared>();
  #closed = false;

  constructor(options: WorkerFileStoreOptions) {
    this.#options = options;
  }

  /** The directories kept for code the cache still holds; a leftover of code it let go of is not one of them. */
  get sharedDirs(): string[] {
    return [...this.#shared.values()].flatMap((shared) => (shared.files ? [shared.files.dir] : []));
  }

  /**
   * Hands out the files of some code, writing them if they are not there yet; concurrent first
   * invocations of the same code share one write. `cached` says whether the code cache holds this
   * download for the code_id now: only then are its files kept.
   */
  async acquire(stored: StoredCode, code: WorkerCode, cached: boolean): Promise<FilesLease> {
    if (this.#closed || !cached) {
      const files = await this.#options.write(code);
      return { configPath: files.configPath, release: once(() => removeWorkerFiles(files)) };
    }
    const shared = this.#shared.get(stored) ?? this.#startWriting(stored, code);
    shared.users += 1;
    let files: WorkerFiles;
    try {
      files = await shared.written;
    } catch (error) {
      shared.users -= 1;
      throw error;
    }
    return {
      configPath: files.configPath,
      release: once(() => {
        shared.users -= 1;
        if (shared.retired && shared.users === 0) removeWorkerFiles(files);
      }),
    };
  }

  #startWriting(stored: StoredCode, code: WorkerCode): Shared {
    const shared: Shared = { written: this.#options.write(code), files: undefined, users: 0, retired: false };
    this.#shared.set(stored, shared);
    shared.written.then(
      (files) => (shared.files = files),
      // A failed write is not kept: the next invocation tries again.
      () => this.#forget(stored, shared),
    );
    return shared;
  }

  /**
   * Lets go of the files of code the cache no longer holds: removed now if unused, else by the
   * last invocation that uses them.
   */
  retire(stored: StoredCode): void {
    const shared = this.#shared.get(stored);
    if (!shared) return;
    this.#forget(stored, shared);
    shared.retired = true;
    if (shared.users === 0 && shared.files) this.#remove(shared.files);
  }

  /** For shutdown: every kept file goes (those in use when released), and nothing is kept from now on. */
  retireAll(): void {
    this.#closed = true;
    for (const stored of [...this.#shared.keys()]) this.retire(stored);
  }

  #forget(stored: StoredCode, shared: Shared): void {
    if (this.#shared.get(stored) === shared) this.#shared.delete(stored);
  }

  #remove(files: WorkerFiles): void {
    try {
      removeWorkerFiles(files);
    } catch (error) {
      this.#options.onRemoveFailed(error);
    }
  }
}

// A function that does its work on the first call only.
function once(work: () => void): () => void {
  let done = false;
  return () => {
    if (done) return;
    done = true;
    work();
  };
}
