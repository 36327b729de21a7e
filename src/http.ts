import type { Readable } from 'node:stream';
import { abortError, type ErrorCode, ServiceError } from './errors.js';

// Thrown by readCapped when a body is larger than allowed; the caller maps it to its own error.
export class BodyTooLargeError extends Error {
  override readonly name = 'BodyTooLargeError';
  constructor(readonly maxBytes: number) {
    super(`body is larger than ${maxBytes} bytes`);
  }
}

// Reads a whole body but never more than maxBytes of it, so an endless answer cannot fill memory.
export async function readCapped(body: Readable, maxBytes: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of body) {
    size += (chunk as Buffer).length;
    if (size > maxBytes) {
      body.destroy();
      throw new BodyTooLargeError(maxBytes);
    }
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks, size);
}

// One signal that fires when the caller gives up or the time limit passes, whichever is first.
export function withTimeout(signal: AbortSignal, timeoutMs: number): AbortSignal {
  return AbortSignal.any([signal, AbortSignal.timeout(timeoutMs)]);
}

// Maps a failed upstream call to the stage's error, unless the request itself was abandoned
// (client gone, shutdown), which is not the upstream's fault.
export function upstreamFailure(code: ErrorCode, requestSignal: AbortSignal, cause: unknown): ServiceError {
  if (cause instanceof ServiceError) return cause;
  if (requestSignal.aborted) return abortError(requestSignal);
  return new ServiceError(code, { cause });
}
