import { createHash } from 'node:crypto';
import { isServiceError } from '../errors.js';
import type { StoredCode } from './workerCode.js';

/** A code_id names immutable code, so its bytes can be kept and reused without asking again. */
export interface CachedCode {
  readonly code: StoredCode;
  /** sha256 of the code's bytes, as fetched from the storage server. */
  readonly sha256: Buffer;
  /** Whether the code came from the cache (no attestation or storage call was made). */
  readonly hit: boolean;
}

/**
 * What one cached piece of code costs the machine beyond its bytes: its kept directory, its config
 * and its files rounded up to whole blocks under RUNTIME_PATH, and the service's bookkeeping for
 * it. Without it the byte budget would admit far more tiny entries than the machine can keep.
 */
export const entryOverheadBytes = 20 * 1024;

/** An entry's cost: its bytes twice (in memory, and as files that workerd reads) and the overhead. */
export function entryCost(code: StoredCode): number {
  return 2 * code.bytes.length + entryOverheadBytes;
}

export interface CodeCacheOptions {
  /** Most the cached entries may cost together, in bytes; 0 keeps nothing and every request fetches. */
  readonly maxBytes: number;
  /** What one entry costs, in bytes; entryCost unless told otherwise. */
  readonly cost?: (code: StoredCode) => number;
  /** Told of each piece of code the cache lets go of (evicted, found corrupt or replaced). */
  readonly onEvict?: (code: StoredCode) => void;
}

/**
 * Code by code_id, least recently used first out, with each entry's sha256 checked on every hit
 * and one fetch shared by concurrent first requests for the same code_id.
 */
export class CodeCache {
  readonly #maxBytes: number;
  readonly #cost: (code: StoredCode) => number;
  readonly #onEvict: ((code: StoredCode) => void) | undefined;
  /** Map order is use order: the first entry is the least recently used. */
  readonly #entries = new Map<string, { readonly code: StoredCode; readonly sha256: Buffer; readonly cost: number }>();
  readonly #inFlight = new Map<string, Promise<StoredCode>>();
  #bytes = 0;
  hits = 0;
  misses = 0;

  constructor(options: CodeCacheOptions) {
    this.#maxBytes = options.maxBytes;
    this.#cost = options.cost ?? entryCost;
    this.#onEvict = options.onEvict;
  }

  /** What the entries held now cost together, in bytes. */
  get bytes(): number {
    return this.#bytes;
  }

  /** Number of code_ids held now. */
  get size(): number {
    return this.#entries.size;
  }

  /** The download held for a code_id, unchecked and not marked as used; for a glance before admission. */
  peek(codeId: string): StoredCode | undefined {
    return this.#entries.get(codeId)?.code;
  }

  /** Whether this download is what the cache holds for the code_id right now. */
  holds(codeId: string, code: StoredCode): boolean {
    return this.#entries.get(codeId)?.code === code;
  }

  /**
   * The code cached for a code_id, checked against its sha256 and marked as just used; undefined
   * when there is none, or when its copy is corrupt (which lets it go).
   */
  lookup(codeId: string): CachedCode | undefined {
    const entry = this.#entries.get(codeId);
    if (!entry) return undefined;
    if (!sha256(entry.code.bytes).equals(entry.sha256)) {
      this.#remove(codeId);
      return undefined;
    }
    this.#entries.delete(codeId);
    this.#entries.set(codeId, entry);
    this.hits += 1;
    return { code: entry.code, sha256: entry.sha256, hit: true };
  }

  /** Returns the code for a code_id, calling fetch only when it is not cached (or its copy is corrupt). */
  async get(codeId: string, fetch: () => Promise<StoredCode>): Promise<CachedCode> {
    const cached = this.lookup(codeId);
    if (cached) return cached;
    this.misses += 1;
    const code = await this.#fetchOnce(codeId, fetch);
    const digest = sha256(code.bytes);
    this.#store(codeId, code, digest);
    return { code, sha256: digest, hit: false };
  }

  // Joins a fetch already running for the code_id, or starts one. A caller whose request was
  // abandoned (client gone, shutdown) must not fail the others who joined it: they fetch again.
  async #fetchOnce(codeId: string, fetch: () => Promise<StoredCode>): Promise<StoredCode> {
    const running = this.#inFlight.get(codeId);
    if (running) {
      try {
        return await running;
      } catch (error) {
        if (!isServiceError(error, 'CLIENT_CLOSED') && !isServiceError(error, 'SHUTTING_DOWN')) throw error;
        return this.#fetchOnce(codeId, fetch);
      }
    }
    const fetching = fetch();
    this.#inFlight.set(codeId, fetching);
    try {
      return await fetching;
    } finally {
      if (this.#inFlight.get(codeId) === fetching) this.#inFlight.delete(codeId);
    }
  }

  #store(codeId: string, code: StoredCode, digest: Buffer): void {
    const cost = this.#cost(code);
    if (cost > this.#maxBytes) return;
    // Every request that joined a fetch stores what it got: a download already held is not
    // evicted and put back, only marked as just used.
    const held = this.#entries.get(codeId);
    if (held?.code === code) {
      this.#entries.delete(codeId);
      this.#entries.set(codeId, held);
      return;
    }
    this.#remove(codeId);
    this.#entries.set(codeId, { code, sha256: digest, cost });
    this.#bytes += cost;
    for (const oldest of this.#entries.keys()) {
      if (this.#bytes <= this.#maxBytes) break;
      this.#remove(oldest);
    }
  }

  #remove(codeId: string): void {
    const entry = this.#entries.get(codeId);
    if (!entry) return;
    this.#entries.delete(codeId);
    this.#bytes -= entry.cost;
    this.#onEvict?.(entry.code);
  }
}

/** sha256 of some bytes. */
export function sha256(bytes: Buffer): Buffer {
  return createHash('sha256').update(bytes).digest();
}
