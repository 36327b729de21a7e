import { guardHeader, type ResponseGuard, settleRequest } from '../code/responseGuard.js';
import { send, startDeadline } from '../httpClient.js';

/**
 * How the work a function handed to waitUntil ended: it settled, or it was cut short at the
 * invocation's time limit or its CPU limit, by the service's shutdown, or because workerd could not be asked
 * (it died, say).
 */
export type SettleOutcome = 'settled' | 'time_limit' | 'cpu_limit' | 'shutdown' | 'failed';

export interface SettleOptions {
  /** The port the function's workerd listens on, on 127.0.0.1. */
  readonly port: number;
  /** The guard in the function's isolate, which answers the settle request. */
  readonly guard: ResponseGuard;
  /** What is left of the invocation's time limit. */
  readonly timeoutMs: number;
  /** Fires when shutdown gives up waiting. */
  readonly shutdown: AbortSignal;
  /** Fires when the invocation has used its CPU time. */
  readonly cpuLimit?: AbortSignal;
}

/**
 * After the answer has gone: waits until the function's waitUntil work has settled (the guard
 * answers the settle request then), within what is left of the time limit. Never throws: the
 * caller kills workerd whatever the outcome.
 */
export async function settleWork(options: SettleOptions): Promise<SettleOutcome> {
  if (options.timeoutMs <= 0) return 'time_limit';
  const { shutdown, cpuLimit } = options;
  const deadline = startDeadline(cpuLimit ? AbortSignal.any([shutdown, cpuLimit]) : shutdown, options.timeoutMs);
  try {
    const response = await send(`http://127.0.0.1:${options.port}/`, {
      method: 'GET',
      headers: { [guardHeader]: `${options.guard.secret} ${settleRequest}` },
      signal: deadline.signal,
      keepAlive: false,
    });
    response.resume();
    return 'settled';
  } catch {
    if (shutdown.aborted) return 'shutdown';
    if (cpuLimit?.aborted) return 'cpu_limit';
    return deadline.signal.aborted ? 'time_limit' : 'failed';
  } finally {
    deadline.clear();
  }
}
