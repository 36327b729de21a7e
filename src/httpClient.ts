import http from 'node:http';
import https from 'node:https';
import type { Readable } from 'node:stream';
import { abortError, type ErrorCode, ServiceError } from './errors.js';

// Connections to the upstreams stay open between requests: a cold request calls both.
const keptAliveAgents = {
  'http:': new http.Agent({ keepAlive: true }),
  'https:': new https.Agent({ keepAlive: true }),
};

export interface SendOptions {
  readonly method: string;
  readonly headers?: http.OutgoingHttpHeaders;
  readonly body?: Buffer | string;
  /** Aborts the request, or the reading of its response. */
  readonly signal: AbortSignal;
  /** Keep the connection for the next request (an upstream), or close it after this one (a worker about to be killed). */
  readonly keepAlive: boolean;
}

/** Sends one HTTP(S) request; resolves with the response once its head has arrived, its body unread. */
export function send(url: string, options: SendOptions): Promise<http.IncomingMessage> {
  const target = new URL(url);
  const transport = target.protocol === 'https:' ? https : http;
  const agent = options.keepAlive ? keptAliveAgents[target.protocol as keyof typeof keptAliveAgents] : false;
  const attempt = (retry: boolean): Promise<http.IncomingMessage> =>
    new Promise((resolve, reject) => {
      const request = transport.request(
        target,
        { method: options.method, headers: options.headers, signal: options.signal, agent },
        resolve,
      );
      request.once('error', (error: NodeJS.ErrnoException) => {
        // A kept-alive connection that the server closed while it was idle fails before any
        // answer; the upstream calls only read, so once more on a new connection is safe.
        const staleConnection = request.reusedSocket && (error.code === 'ECONNRESET' || error.code === 'EPIPE');
        if (retry && staleConnection && !options.signal.aborted) resolve(attempt(false));
        else reject(error);
      });
      request.end(options.body);
    });
  return attempt(options.keepAlive);
}

/** Thrown by readCapped when a body is larger than allowed; the caller maps it to its own error. */
export class BodyTooLargeError extends Error {
  override readonly name = 'BodyTooLargeError';
  constructor(readonly maxBytes: number) {
    super(`body is larger than ${maxBytes} bytes`);
  }
}

/** Reads a whole body but never more than maxBytes of it, so an endless answer cannot fill memory. */
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

/** A signal that fires when its parent does or when its time is up, whichever is first. */
export interface Deadline {
  readonly signal: AbortSignal;
  /** Stops the timer and detaches from the parent; call it once the guarded work is over. */
  clear(): void;
}

/**
 * Starts a deadline. Built on a plain timer rather than AbortSignal.any(AbortSignal.timeout()),
 * whose combined signal Node 20 can garbage-collect before it fires, leaving a call without limit.
 */
export function startDeadline(parent: AbortSignal, timeoutMs: number): Deadline {
  const controller = new AbortController();
  const onParentAbort = () => controller.abort(parent.reason);
  const timer = setTimeout(
    () => controller.abort(new DOMException(`timed out after ${timeoutMs} ms`, 'TimeoutError')),
    timeoutMs,
  );
  const clear = () => {
    clearTimeout(timer);
    parent.removeEventListener('abort', onParentAbort);
  };
  if (parent.aborted) onParentAbort();
  else parent.addEventListener('abort', onParentAbort, { once: true });
  controller.signal.addEventListener('abort', clear, { once: true });
  return { signal: controller.signal, clear };
}

/** Runs an upstream call under its own deadline, and always clears it. */
export async function withDeadline<T>(
  parent: AbortSignal,
  timeoutMs: number,
  call: (signal: AbortSignal) => Promise<T>,
): Promise<T> {
  const deadline = startDeadline(parent, timeoutMs);
  try {
    return await call(deadline.signal);
  } finally {
    deadline.clear();
  }
}

/**
 * Maps a failed upstream call to the stage's error, unless the request itself was abandoned
 * (client gone, shutdown), which is not the upstream's fault.
 */
export function upstreamFailure(code: ErrorCode, requestSignal: AbortSignal, cause: unknown): ServiceError {
  if (cause instanceof ServiceError) return cause;
  if (requestSignal.aborted) return abortError(requestSignal);
  return new ServiceError(code, { cause });
}
