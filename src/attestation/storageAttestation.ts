import { performance } from 'node:perf_hooks';
import { fetchAttestation } from './fetchAttestation.js';

export interface StorageAttestationOptions {
  /** The enclave's attestation server: its raw document endpoint. */
  readonly url: string;
  /** Limit for each fetch, connection to last byte. */
  readonly timeoutMs: number;
  /** How long one document is presented again after it was asked for; 0 asks for one per download. */
  readonly reuseMs: number;
}

/** A document to present to the storage server, and whether it was presented before. */
export interface PresentedAttestation {
  readonly document: Buffer;
  /** A reused document may be one the storage server now finds too old. */
  readonly reused: boolean;
}

/**
 * The attestation document the service presents to the storage server with each download. It
 * carries no nonce and no key, so one document proves the same thing to every download for a
 * while: it is reused for `reuseMs`, counted from before it was asked for, and dropped as soon as
 * the storage server refuses it.
 */
export class StorageAttestation {
  readonly #options: StorageAttestationOptions;
  #kept: { readonly document: Buffer; readonly until: number } | undefined;

  constructor(options: StorageAttestationOptions) {
    this.#options = options;
  }

  /** A document still within its reuse, or a new one from the attestation server. */
  async get(signal: AbortSignal): Promise<PresentedAttestation> {
    const kept = this.#kept;
    const asked = performance.now();
    if (kept && asked < kept.until) return { document: kept.document, reused: true };
    const { url, timeoutMs, reuseMs } = this.#options;
    const document = await fetchAttestation({ url, timeoutMs, signal });
    if (reuseMs > 0) this.#kept = { document, until: asked + reuseMs };
    return { document, reused: false };
  }

  /** The storage server refused this document: the next download asks for a new one. */
  refused(document: Buffer): void {
    if (this.#kept?.document === document) this.#kept = undefined;
  }
}
