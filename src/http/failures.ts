import type { FastifyRequest } from 'fastify';
import { type ServiceError, toServiceError } from '../errors.js';

/**
 * Logs why an invocation failed, with the request's id and stage, and returns the failure to
 * answer with. A busy or closing server is no fault of the request or the service: the request's
 * own line (with its code) says it, and under overload one line per refusal is all the log can
 * afford. The function's own error status is the function's business, not the service's.
 */
export function reportFailure(request: FastifyRequest, error: unknown): ServiceError {
  const failure = toServiceError(error);
  if (failure.status === 503) return failure;
  const serviceFault = failure.status >= 500 && failure.code !== 'FUNCTION_ERROR_STATUS';
  const details = { stage: request.stages.current, code: failure.code, err: failure.cause ?? failure };
  if (serviceFault) request.log.error(details, failure.message);
  else request.log.info(details, failure.message);
  return failure;
}
