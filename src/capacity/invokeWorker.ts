import type http from 'node:http';
import { guardHeader, guardVerdict, type ResponseGuard } from '../code/responseGuard.js';
import { abortError, ServiceError } from '../errors.js';
import { BodyTooLargeError, readCapped, send } from '../httpClient.js';

/** The HTTP request the function receives. */
export interface FunctionRequest {
  readonly method: string;
  /** The path and query, from "/". */
  readonly target: string;
  readonly headers: http.OutgoingHttpHeaders;
  readonly body: Buffer;
}

export interface InvokeOptions {
  /** The port workerd listens on, on 127.0.0.1. */
  readonly port: number;
  readonly request: FunctionRequest;
  /** A response larger than this is refused. */
  readonly maxResponseBytes: number;
  /** The guard in front of the function, whose refusals are told apart by its secret. */
  readonly guard: ResponseGuard;
  /** Fires at the time limit or when the request is abandoned. */
  readonly signal: AbortSignal;
}

/** What the function answered: its status, headers and whole body. */
export interface Invocation {
  readonly statusCode: number;
  readonly headers: http.IncomingHttpHeaders;
  readonly body: Buffer;
}

/** The function's answer, and whether work it handed to waitUntil still runs. */
export interface WorkerAnswer {
  readonly answer: Invocation;
  readonly waitUntilPending: boolean;
}

/** Sends the input to a running workerd and reads its whole answer, within the caller's time limit. */
export async function invokeWorker(options: InvokeOptions): Promise<WorkerAnswer> {
  try {
    const { method, target, headers, body } = options.request;
    const response = await send(`http://127.0.0.1:${options.port}${target}`, {
      method,
      headers,
      body,
      signal: options.signal,
      // This workerd is about to be killed: a kept-alive connection to it would be useless.
      keepAlive: false,
    });
    const verdict = guardVerdict(options.guard, response.headers[guardHeader]);
    const waitUntilPending = verdict === 'pending';
    // The guard refused the function's answer: none of it is passed on.
    if (verdict && !waitUntilPending) {
      response.destroy();
      if (verdict === 'too-large') throw new BodyTooLargeError(options.maxResponseBytes);
      throw new ServiceError('USER_CODE_FAILED', {
        cause: new Error(`the function ${verdict === 'threw' ? 'threw' : "broke its answer's stream"}`),
      });
    }
    // The guard's word is for the service, not part of the function's answer.
    if (waitUntilPending) delete response.headers[guardHeader];
    const answer = {
      statusCode: response.statusCode!,
      headers: response.headers,
      body: await readCapped(response, options.maxResponseBytes),
    };
    return { answer, waitUntilPending };
  } catch (error) {
    if (error instanceof ServiceError) throw error;
    if (error instanceof BodyTooLargeError) {
      throw new ServiceError('RESPONSE_TOO_LARGE', { data: { max_response_bytes: error.maxBytes }, cause: error });
    }
    if (options.signal.aborted) throw abortError(options.signal);
    // The connection failed: workerd died (killed, out of memory) or never answered.
    throw new ServiceError('INVOCATION_FAILED', { cause: error });
  }
}
