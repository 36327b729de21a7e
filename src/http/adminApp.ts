import Fastify, { type FastifyBaseLogger, type FastifyInstance, type FastifyReply } from 'fastify';
import type { Service } from '../service/service.js';
import { sendEnvelope } from './envelope.js';
import { answerFailures } from './failures.js';
import { ledgerRoutes } from './ledgerRoutes.js';
import { tailRoute } from './tailRoute.js';

/**
 * The operator endpoints, on a listener of their own (ADMIN_HOST:ADMIN_PORT, loopback by
 * default), never on the public one: draining takes the instance out of rotation, resuming puts
 * it back (each answers with the state it leaves), the usage ledger's routes and the live tail. Their answers
 * and failures are the public listener's: the envelope, X-Oyster-Error, zod's schemas.
 */
export function buildAdminApp(service: Service): FastifyInstance {
  const app = Fastify({ loggerInstance: service.log as FastifyBaseLogger });
  answerFailures(app);
  const state = (reply: FastifyReply, message: string) =>
    sendEnvelope(reply, 'success', message, { draining: service.gates.draining, in_flight: service.gates.inFlight });

  app.post('/admin/drain', async (_request, reply) => {
    service.gates.setDraining(true);
    service.log.info({ inFlight: service.gates.inFlight }, 'draining: no new invocations');
    return state(reply, 'Draining');
  });
  app.post('/admin/resume', async (_request, reply) => {
    service.gates.setDraining(false);
    service.log.info('resumed: taking invocations again');
    return state(reply, 'Serving');
  });
  app.get('/admin/status', async (_request, reply) => state(reply, service.gates.draining ? 'Draining' : 'Serving'));
  void app.register(ledgerRoutes, { service });
  void app.register(tailRoute, { service });
  return app;
}
