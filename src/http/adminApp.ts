import Fastify, { type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import type { Service } from '../service.js';

/**
 * The operator endpoints, on a listener of their own (ADMIN_HOST:ADMIN_PORT, loopback by
 * default), never on the public one: draining takes the instance out of rotation, resuming puts
 * it back. Each answers with the state it leaves, in the service's envelope.
 */
export function buildAdminApp(service: Service): FastifyInstance {
  const app = Fastify({ loggerInstance: service.log as FastifyBaseLogger });
  const state = (message: string) => ({
    status: 'success',
    message,
    data: { draining: service.draining, in_flight: service.inFlight },
  });

  app.post('/admin/drain', async () => {
    service.setDraining(true);
    service.log.info({ inFlight: service.inFlight }, 'draining: no new invocations');
    return state('Draining');
  });
  app.post('/admin/resume', async () => {
    service.setDraining(false);
    service.log.info('resumed: taking invocations again');
    return state('Serving');
  });
  app.get('/admin/status', async () => state(service.draining ? 'Draining' : 'Serving'));
  // Totals per code_id of the invocations answered in [from, to), in ms since the epoch.
  app.get<{ Querystring: { from?: string; to?: string } }>('/admin/usage', async (request, reply) => {
    const ledger = service.ledger;
    if (!ledger) return reply.code(404).send({ status: 'error', message: 'No usage ledger (LEDGER_PATH)', data: null });
    const from = Number(request.query.from ?? 0);
    const to = Number(request.query.to ?? Date.now() + 1);
    if (!Number.isSafeInteger(from) || !Number.isSafeInteger(to) || from < 0 || to < from)
      return reply
        .code(400)
        .send({ status: 'error', message: 'from and to are ms since the epoch, from <= to', data: null });
    return { status: 'success', message: 'Usage', data: { from, to, codes: ledger.totals(from, to) } };
  });
  app.setNotFoundHandler(async (_request, reply) =>
    reply.code(404).send({ status: 'error', message: 'No such endpoint', data: null }),
  );
  return app;
}
