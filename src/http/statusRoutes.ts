import type { FastifyPluginAsync } from 'fastify';
import { ServiceError } from '../errors.js';
import type { Service } from '../service/service.js';
import { sendEnvelope } from './envelope.js';
import { errorHeader } from './failures.js';

/** GET /health for load balancers and supervisors, GET /metrics for Prometheus. */
export const statusRoutes: FastifyPluginAsync<{ readonly service: Service }> = async (app, { service }) => {
  const { capacity, metrics } = service;

  app.get('/health', async (_request, reply) => {
    // While shutting down, every request (this one too) is answered 503 SHUTTING_DOWN by app.ts.
    const { size, free, usable } = capacity.cgroups;
    const unhealthy = service.gates.draining ? 'DRAINING' : usable === 0 ? 'POOL_UNUSABLE' : undefined;
    // Named as every refusal of the service's own is, for a load balancer that reads the header.
    if (unhealthy) void reply.header(errorHeader, unhealthy);
    return sendEnvelope(
      reply.code(unhealthy ? 503 : 200),
      unhealthy ? 'error' : 'success',
      service.gates.draining ? 'Draining' : unhealthy ? new ServiceError(unhealthy).message : 'Serving',
      {
        pool_size: size,
        free,
        usable,
        queued: capacity.queued,
        spares: capacity.spares.count,
        draining: service.gates.draining,
        in_flight: service.gates.inFlight,
        sealing: service.sealing.state,
      },
    );
  });

  app.get('/metrics', async (_request, reply) => {
    return reply.type(metrics.registry.contentType).send(await metrics.registry.metrics());
  });
};
