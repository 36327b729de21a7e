import Fastify, {
  type FastifyBaseLogger,
  type FastifyInstance,
  type FastifyReply,
  type FastifyRequest,
  LogController,
} from 'fastify';
import { ServiceError } from '../errors.js';
import type { Service } from '../service/service.js';
import { type StageName, StageTimer } from '../stages.js';
import { attestationRoute } from './attestationRoute.js';
import { connectionCap, holdConnections, readOpenFileLimit } from './connectionRoom.js';
import { answerFailures } from './failures.js';
import { functionRoute } from './functionRoute.js';
import { invokeRoute } from './invokeRoute.js';
import { statusRoutes } from './statusRoutes.js';

/** How often Node looks for connections past their request or headers time-out (30 s unless told). */
const connectionsCheckMs = 500;

declare module 'fastify' {
  interface FastifyRequest {
    /** The stages this request has been through, with their durations. */
    stages: StageTimer;
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
  const cap = connectionCap(config.maxConnections, service.capacity.cgroups.size, readOpenFileLimit());
  if (cap.by !== 'MAX_CONNECTIONS') {
    service.log.warn(
      { maxConnections: config.maxConnections, connections: cap.connections },
      'the open-file limit holds client connections below MAX_CONNECTIONS',
    );
  }
  holdConnections(app.server, cap.connections, () => service.metrics.connectionClosedForRoom());
  // JSON only: Fastify's default text/plain parser would turn other bodies into a 400, not a 415.
  app.removeContentTypeParser('text/plain');
  answerFailures(app);

  // Each cgroup holds the standby that starts its invocations' workerd, from the start (after
  // main has cleared what a previous run left) until the end.
  app.addHook('onReady', async () => service.start());
  app.addHook('onClose', () => service.close());

  app.decorateRequest('stages', null as unknown as StageTimer);
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
      { method, url, statusCode, responseTimeMs: elapsedTime, code: request.failureCode, outcome: request.outcome },
      'request completed',
    );
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
