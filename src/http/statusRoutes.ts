import type { FastifyPluginAsync } from 'fastify';
import type { Service } from '../service/service.js';
import { sendEnvelope } from './envelope.js';

/** GET /health for load balancers and supervisors, GET /metrics for Prometheus. */
export const statusRoutes: FastifyPluginAsync<{ readonly service: Service }> = async (app, { service }) => {
  const { capacity, metrics } = service;

  app.get('/health', async (_request, reply) => {
    // While shutting down, every request (this one too) is answered 503 SHUTTING_DOWN by app.ts.
    const { size, free, usable } = capacity.cgroups;
    const healthy = !service.gates.draining && usable > 0;
    return sendEnvelope(
      reply.code(healthy ? 200 : 503),
      healthy ? 'success' : 'error',
      service.gates.draining ? 'Draining' : healthy ? 'Serving' : 'No usable cgroup in the pool',
      {
        pool_size: size,
        free,
        usable,
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
