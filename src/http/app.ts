import Fastify, {
  type FastifyBaseLogger,
  type FastifyError,
  type FastifyInstance,
  type FastifyReply,
  type FastifyRequest,
  LogController,
} from 'fastify';
import { serializerCompiler, validatorCompiler } from 'fastify-type-provider-zod';
import { type ErrorCode, ServiceError, toServiceError } from '../errors.js';
import type { Service } from '../service/service.js';
import { type StageName, StageTimer } from '../stages.js';
import { attestationRoute } from './attestationRoute.js';
import { functionRoute } from './functionRoute.js';
import { invokeRoute } from './invokeRoute.js';
import { statusRoutes } from './statusRoutes.js';

/** Seconds a client (or load balancer) is asked to wait before retrying a busy server. */
const retryAfterSeconds = 1;
/** The header on every answer of the service's own failures, with its error code. */
export const errorHeader = 'x-oyster-error';
/** How often Node looks for connections past their request or headers time-out (30 s unless told). */
const connectionsCheckMs = 500;

declare module 'fastify' {
  interface FastifyRequest {
    /** The stages this request has been through, with their durations. */
    stages: StageTimer;
    /** The error code it was answered with, if it failed. */
    failureCode: ErrorCode | undefined;
  }
}

// Fastify's own logging, less its two lines for every request: the onResponse hook writes one
// instead (logging is a measurable part of what a request costs the service). Its lines for
// failures that never reach a handler, such as a broken response stream, stay.
class OneLinePerRequest extends LogController {
  override incomingRequest(): void {}

  override requestCompleted(error: Error | null | undefined, ...rest: [FastifyRequest, FastifyReply]): void {
    if (error) super.requestCompleted(error, ...rest);
  }
}

/** The service's HTTP API around a service, ready for inject() or listen(); it never listens by itself. */
export function buildApp(service: Service): FastifyInstance {
  const { config } = service;
  const app = Fastify({
    loggerInstance: service.log as FastifyBaseLogger,
    bodyLimit: config.maxBodyBytes,
    // A client that sends its request slowly, or not at all, holds a connection and a file
    // descriptor: it gets a 408 once the time is up.
    requestTimeout: config.requestTimeoutMs,
    keepAliveTimeout: config.keepAliveTimeoutMs,
    http: { headersTimeout: config.requestTimeoutMs, connectionsCheckingInterval: connectionsCheckMs },
    // Answers during shutdown come from our own hook, in the usual envelope.
    return503OnClosing: false,
    logController: new OneLinePerRequest(),
  });
  app.server.maxConnections = config.maxConnections;
  // JSON only: Fastify's default text/plain parser would turn other bodies into a 400, not a 415.
  app.removeContentTypeParser('text/plain');
  app.setValidatorCompiler(validatorCompiler);
  app.setSerializerCompiler(serializerCompiler);

  // Each cgroup holds the standby that starts its invocations' workerd, from the start (after
  // main has cleared what a previous run left) until the end.
  app.addHook('onReady', async () => service.start());
  app.addHook('onClose', () => service.close());

  app.decorateRequest('stages', null as unknown as StageTimer);
  app.decorateRequest('failureCode', undefined);
  app.addHook('onRequest', async (request) => {
    request.stages = new StageTimer();
    if (service.gates.shuttingDown) throw new ServiceError('SHUTTING_DOWN');
  });
  app.addHook('onSend', async (request, reply) => {
    // A function's own Server-Timing, on the HTTP route, is part of its answer and stays as it is.
    if (!reply.hasHeader('server-timing')) {
      void reply.header('server-timing', serverTiming(request.stages.durations, reply.elapsedTime));
    }
    // A kept-alive connection would hold the closing server open after its last answer.
    if (service.gates.shuttingDown) void reply.header('connection', 'close');
  });
  app.addHook('onResponse', async (request, reply) => {
    const { method, url } = request;
    const { statusCode, elapsedTime } = reply;
    request.log.info(
      { method, url, statusCode, responseTimeMs: elapsedTime, code: request.failureCode },
      'request completed',
    );
  });

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
    return reply.code(failure.status).send({ status: 'error', message: failure.message, data: failure.data });
  });

  void app.register(statusRoutes, { service });
  void app.register(attestationRoute, { service });
  void app.register(invokeRoute, { service });
  void app.register(functionRoute, { service });
  return app;
}

/**
 * Shuts the service down as SIGTERM asks: no new connections or invocations, those in flight
 * finish for up to graceMs and are then killed, and every cleanup is waited for.
 */
export async function shutdown(app: FastifyInstance, service: Service, graceMs: number): Promise<void> {
  const closed = app.close();
  await service.gates.drain(graceMs);
  await closed;
}

// The Server-Timing header: each stage the request went through, then the total, in milliseconds.
function serverTiming(stages: ReadonlyArray<readonly [StageName, number]>, totalMs: number): string {
  return [...stages, ['total', totalMs] as const].map(([name, ms]) => `${name};dur=${ms.toFixed(2)}`).join(', ');
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
