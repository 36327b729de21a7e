import type { FastifyReply, FastifyRequest } from 'fastify';
import type { FunctionRequest } from '../capacity/invokeWorker.js';
import { ServiceError, toServiceError } from '../errors.js';
import type { RunResult } from '../pipeline/runFunction.js';
import type { Service } from '../service/service.js';

/** The header that names an answered invocation's row in the usage ledger. */
export const invocationHeader = 'x-oyster-invocation';

/**
 * Runs one invocation for a request of either route: the client going away aborts it, its stages
 * are the request's, and a failure is logged with the request's id before it is answered.
 */
export async function invokeFor(
  service: Service,
  request: FastifyRequest,
  reply: FastifyReply,
  codeId: string,
  asked: FunctionRequest,
): Promise<RunResult> {
  try {
    const result = await service.invoke({
      codeId,
      request: asked,
      signal: abandonOnClose(reply),
      stages: request.stages,
      log: request.log,
      onUsage: (usage) => {
        request.usage = { ...usage, bytesIn: asked.body.length, bytesOut: 0 };
      },
    });
    if (request.usage) request.usage.bytesOut = result.answer.body.length;
    if (result.invocationId !== undefined) void reply.header(invocationHeader, String(result.invocationId));
    return result;
  } catch (error) {
    throw reportFailure(request, error);
  }
}

/**
 * Logs why an invocation failed, with the request's id and stage, and returns the failure to
 * answer with. A busy or closing server is no fault of the request or the service: the request's
 * own line (with its code) says it, and under overload one line per refusal is all the log can
 * afford. The function's own error status is the function's business, not the service's.
 */
function reportFailure(request: FastifyRequest, error: unknown): ServiceError {
  const failure = toServiceError(error);
  if (failure.status === 503) return failure;
  const serviceFault = failure.status >= 500 && failure.code !== 'FUNCTION_ERROR_STATUS';
  const details = { stage: request.stages.current, code: failure.code, err: failure.cause ?? failure };
  if (serviceFault) request.log.error(details, failure.message);
  else request.log.info(details, failure.message);
  return failure;
}

/** A signal that fires when the client goes away before its answer is sent. */
export function abandonOnClose(reply: FastifyReply): AbortSignal {
  const controller = new AbortController();
  reply.raw.once('close', () => {
    if (!reply.raw.writableFinished) controller.abort(new ServiceError('CLIENT_CLOSED'));
  });
  return controller.signal;
}
