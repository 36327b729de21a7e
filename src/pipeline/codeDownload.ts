import type { StoredCode } from '../code/workerCode.js';
import { ServiceError } from '../errors.js';
import { BodyTooLargeError, readCapped, send, upstreamFailure, withDeadline } from '../httpClient.js';

export interface CodeDownloadOptions {
  /** The storage server's load endpoint. */
  readonly url: string;
  readonly codeId: string;
  /** The raw attestation document that proves to the storage server where the code will run. */
  readonly attestation: Buffer;
  /** Code larger than this is refused. */
  readonly maxBytes: number;
  /** Limit for the whole call, connection to last byte. */
  readonly timeoutMs: number;
  /** Fires when the client goes away. */
  readonly signal: AbortSignal;
}

/** The storage server's 401: it did not take the attestation document as proof (a reused one may have aged). */
export class AttestationRefusedError extends Error {
  override readonly name = 'AttestationRefusedError';
  constructor() {
    super('storage server answered 401: it refused the attestation document');
  }
}

/** Fetches the code stored under a code_id, presenting the attestation document as proof. */
export async function downloadCode(options: CodeDownloadOptions): Promise<StoredCode> {
  try {
    return await withDeadline(options.signal, options.timeoutMs, async (signal) => {
      const response = await send(options.url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', attestation: options.attestation.toString('base64') },
        body: JSON.stringify({ key: options.codeId }),
        signal,
        keepAlive: true,
      });
      if (response.statusCode !== 200) {
        // An error's body is not read: closing the connection bounds it, however long it is.
        response.destroy();
        if (response.statusCode === 404)
          throw new ServiceError('CODE_NOT_FOUND', { data: { code_id: options.codeId } });
        throw new ServiceError('CODE_DOWNLOAD_FAILED', {
          cause:
            response.statusCode === 401
              ? new AttestationRefusedError()
              : new Error(`storage server answered ${response.statusCode}`),
        });
      }
      const bytes = await readCapped(response, options.maxBytes);
      return { bytes, contentType: response.headers['content-type'] };
    });
  } catch (error) {
    if (error instanceof BodyTooLargeError) {
      throw new ServiceError('CODE_TOO_LARGE', { data: { max_code_bytes: error.maxBytes }, cause: error });
    }
    throw upstreamFailure('CODE_DOWNLOAD_FAILED', options.signal, error);
  }
}
