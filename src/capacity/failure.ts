import { withoutGuardFrames } from '../code/responseGuard.js';
import { type ErrorCode, isServiceError, ServiceError, toServiceError } from '../errors.js';
import type { WorkerdProcess } from '../sandbox/standby.js';

// How long a lost connection to workerd waits for workerd's exit before calling it a crash.
const exitWaitMs = 200;
// What workerd prints as it ends itself at V8's heap limit (--max-old-space-size); nothing else says so.
const heapLimitReached = 'V8 fatal error; location = Reached heap limit';
// The failures whose answer carries the end of what the function printed.
const endedWithOutput: ReadonlySet<ErrorCode> = new Set([
  'USER_CODE_FAILED',
  'EXECUTION_TIMEOUT',
  'CPU_LIMIT_EXCEEDED',
]);

/**
 * Says why an invocation whose workerd was started failed, once that workerd is gone: the
 * cgroup's memory limit or V8's heap limit, a crash, the time limit or the function's own error,
 * each with the end of what the function printed. `worker` is undefined when it failed before it
 * listened. A workerd that finished the request (the guard refused its answer) is kept for up to
 * traceWaitMs, for the trace it then sends.
 */
export async function whyItFailed(
  error: unknown,
  worker: WorkerdProcess | undefined,
  oomKilled: () => boolean,
  traceWaitMs = 0,
): Promise<ServiceError> {
  if (traceWaitMs > 0 && (isServiceError(error, 'USER_CODE_FAILED') || isServiceError(error, 'RESPONSE_TOO_LARGE')))
    await worker?.traced(traceWaitMs);
  // A dropped connection is usually workerd dying; its exit may reach us a moment after the socket error.
  const connectionLost = isServiceError(error, 'INVOCATION_FAILED');
  const exitedByItself = connectionLost && worker !== undefined && (await worker.exitsWithin(exitWaitMs));
  await worker?.stop();
  const output = worker?.output();
  const printed = output ?? (isServiceError(error) ? error.data : null);
  // workerd ends itself at V8's heap limit while it runs, or before it listens (a global scope that fills the heap).
  const endedByItself = exitedByItself || isServiceError(error, 'USER_CODE_INVALID');
  const heapFull = endedByItself && typeof printed === 'string' && printed.includes(heapLimitReached);
  if (oomKilled() || heapFull) return new ServiceError('OUT_OF_MEMORY', { data: printed, cause: error });
  if (exitedByItself) return new ServiceError('WORKERD_CRASHED', { data: output, cause: error });
  if (isServiceError(error) && endedWithOutput.has(error.code)) {
    const data = output === undefined ? null : error.code === 'USER_CODE_FAILED' ? exceptionFirst(output) : output;
    return new ServiceError(error.code, { data, cause: error.cause });
  }
  return interrupted(toServiceError(error));
}

// A 503 promises that no user code ran, so it is safe to retry anywhere; once workerd has started,
// a shutdown that cuts the request short answers 500 instead.
function interrupted(failure: ServiceError): ServiceError {
  if (failure.code !== 'SHUTTING_DOWN') return failure;
  return new ServiceError('SHUTDOWN_INTERRUPTED', { cause: failure });
}

// workerd prints a module worker's uncaught exception as this line, then its stack, one "    at"
// line per frame; a service worker's as one console line, its stack inside.
const uncaughtLine = /^Uncaught |message\(\) = \["Uncaught", /;
const stackFrame = /^\s+at /;

/**
 * The function's output with its first uncaught exception and stack moved to the front, so that an
 * error answer begins with what its developer wrote; the guard's own frames are left out of that stack.
 */
export function exceptionFirst(output: string): string {
  const lines = output.split('\n');
  const start = lines.findIndex((line) => uncaughtLine.test(line));
  if (start === -1) return output;
  let end = start + 1;
  while (end < lines.length && stackFrame.test(lines[end]!)) end += 1;
  const exception = withoutGuardFrames(lines.slice(start, end).join('\n'));
  return [exception, ...lines.slice(0, start), ...lines.slice(end)].join('\n');
}
