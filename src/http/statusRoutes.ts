import type { FastifyPluginAsync } from 'fastify';
import type { Service } from '../service.js';

/** GET /health for load balancers and supervisors, GET /metrics for Prometheus. */
export const statusRoutes: FastifyPluginAsync<{ readonly service: Service }> = async (app, { service }) => {
  const { pool, metrics } = service;

  app.get('/health', async (_request, reply) => {
    const healthy = !service.shuttingDown && !service.draining && pool.usable > 0;
    return reply.code(healthy ? 200 : 503).send({
      status: healthy ? 'success' : 'error',
      message: healthMessage(service, healthy),
      data: {
        pool_size: pool.size,
        free: pool.free,
        usable: pool.usable,
        draining: service.draining,
        in_flight: service.inFlight,
      },
    });
  });

  app.get('/metrics', async (_request, reply) => {
    return reply.type(metrics.registry.contentType).send(await metrics.registry.metrics());
  });
};

function healthMessage(service: Service, healthy: boolean): string {
  if (service.shuttingDown) return 'Shutting down';
  if (service.draining) return 'Draining';
  return healthy ? 'Serving' : 'No usable cgroup in the pool';
}
