import { ServiceError } from '../errors.js';
import { readCapped, send, upstreamFailure, withDeadline } from './upstream.js';

// An attestation document is a few KiB of CBOR; anything far larger is not one.
const maxAttestationBytes = 64 * 1024;

export interface AttestationOptions {
  /** The enclave's attestation server. */
  readonly url: string;
  /** Limit for the whole call, connection to last byte. */
  readonly timeoutMs: number;
  /** Fires when the client goes away. */
  readonly signal: AbortSignal;
}

/** Gets a fresh attestation document from the enclave's attestation server, as its exact bytes. */
export async function fetchAttestation(options: AttestationOptions): Promise<Buffer> {
  try {
    return await withDeadline(options.signal, options.timeoutMs, async (signal) => {
      const response = await send(options.url, { method: 'GET', signal, keepAlive: true });
      if (response.statusCode !== 200) {
        // An error's body is not read: closing the connection bounds it, however long it is.
        response.destroy();
        throw new ServiceError('ATTESTATION_FAILED', {
          cause: new Error(`attestation server answered ${response.statusCode}`),
        });
      }
      // Bytes, never text: the document is binary CBOR and decoding it as UTF-8 would corrupt it.
      return await readCapped(response, maxAttestationBytes);
    });
  } catch (error) {
    throw upstreamFailure('ATTESTATION_FAILED', options.signal, error);
  }
}
