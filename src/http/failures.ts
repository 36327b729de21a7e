import type { FastifyError, FastifyInstance } from 'fastify';
import { serializerCompiler, validatorCompiler } from 'fastify-type-provider-zod';
import { type ErrorCode, ServiceError, toServiceError } from '../errors.js';
import { sendEnvelope } from './envelope.js';

/** The header on every answer of the service's own failures, with its error code. */
export const errorHeader = 'x-oyster-error';
/** Seconds a client (or load balancer) is asked to wait before retrying a busy server. */
const retryAfterSeconds = 1;

declare module 'fastify' {
  interface FastifyRequest {
    /** The error code it was answered with, if it failed. */
    failureCode: ErrorCode | undefined;
  }
}

/**
 * Makes a listener fail as the service does, the public one and the operator's alike: schemas are
 * zod's, and every failure (ours, Fastify's, a schema's, a path no route has) is answered with its
 * code's status, the X-Oyster-Error header and the envelope.
 */
export function answerFailures(app: FastifyInstance): void {
  app.setValidatorCompiler(validatorCompiler);
  app.setSerializerCompiler(serializerCompiler);
  app.decorateRequest('failureCode', undefined);
  app.setNotFoundHandler(() => {
    throw new ServiceError('ROUTE_NOT_FOUND');
  });
  app.setErrorHandler((error: FastifyError | ServiceError, request, reply) => {
    const failure = fromFramework(error);
    if (failure.code !== error.code) request.log.info({ code: failure.code, err: error }, failure.message);
    request.failureCode = failure.code;
    if (failure.code === 'SERVER_BUSY' || failure.code === 'DRAINING')
      void reply.header('retry-after', String(retryAfterSeconds));
    // Tells the service's own answers from a function's on the HTTP route, where any status and
    // body can be the function's; a load balancer can act on it (SERVER_BUSY, DRAINING, SHUTTING_DOWN).
    void reply.header(errorHeader, failure.code);
    return sendEnvelope(reply.code(failure.status), 'error', failure.message, failure.data);
  });
}

// Maps Fastify's own errors (body parsing, validation) to ours.
function fromFramework(error: FastifyError | ServiceError): ServiceError {
  if (error instanceof ServiceError) return error;
  if (error.validation) return new ServiceError('INVALID_PAYLOAD', { data: error.validation, cause: error });
  switch (error.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return new ServiceError('PAYLOAD_TOO_LARGE', { cause: error });
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return new ServiceError('UNSUPPORTED_MEDIA_TYPE', { cause: error });
  }
  const status = error.statusCode ?? 500;
  if (status >= 400 && status < 500) return new ServiceError('INVALID_PAYLOAD', { data: error.message, cause: error });
  return toServiceError(error);
}
