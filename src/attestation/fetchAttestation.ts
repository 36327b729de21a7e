import { ServiceError } from '../errors.js';
import { readCapped, send, upstreamFailure, withDeadline } from '../httpClient.js';
import { maxDocumentBytes } from './limits.js';

export interface AttestationOptions {
  /** The enclave's attestation server: its raw document endpoint. */
  readonly url: string;
  /** The key the document is to attest (the signer's, x || y), passed on as public_key. */
  readonly publicKey?: Uint8Array;
  /** A client's nonce, passed on as nonce, so that the document is fresh for it. */
  readonly nonce?: Uint8Array;
  /** Passed on as user_data: the sealing key's id and public key, where sealing is on. */
  readonly userData?: Uint8Array;
  /** Limit for the whole call, connection to last byte. */
  readonly timeoutMs: number;
  /** Fires when the client goes away. */
  readonly signal: AbortSignal;
}

/** Gets a fresh attestation document from the enclave's attestation server, as its exact bytes. */
export async function fetchAttestation(options: AttestationOptions): Promise<Buffer> {
  try {
    return await withDeadline(options.signal, options.timeoutMs, async (signal) => {
      const response = await send(documentUrl(options), { method: 'GET', signal, keepAlive: true });
      if (response.statusCode !== 200) {
        // An error's body is not read: closing the connection bounds it, however long it is.
        response.destroy();
        throw new ServiceError('ATTESTATION_FAILED', {
          cause: new Error(`attestation server answered ${response.statusCode}`),
        });
      }
      // Bytes, never text: the document is binary CBOR and decoding it as UTF-8 would corrupt it.
      return await readCapped(response, maxDocumentBytes);
    });
  } catch (error) {
    throw upstreamFailure('ATTESTATION_FAILED', options.signal, error);
  }
}

// The query parameters of Marlin's attestation servers: hex without 0x.
function documentUrl({ url, publicKey, nonce, userData }: AttestationOptions): string {
  if (!publicKey && !nonce && !userData) return url;
  const target = new URL(url);
  const query = { public_key: publicKey, user_data: userData, nonce };
  for (const [name, bytes] of Object.entries(query))
    if (bytes) target.searchParams.set(name, Buffer.from(bytes).toString('hex'));
  return target.href;
}
