import Fastify, { type FastifyBaseLogger, type FastifyInstance, type FastifyReply } from 'fastify';
import type { Service } from '../service/service.js';

// A claimant's nonce: 1 to 64 bytes, in hex.
const claimNonce = /^(?:[0-9a-fA-F]{2}){1,64}$/;

/**
 * The operator endpoints, on a listener of their own (ADMIN_HOST:ADMIN_PORT, loopback by
 * default), never on the public one: draining takes the instance out of rotation, resuming puts
 * it back (each answers with the state it leaves, in the service's envelope); the usage ledger's
 * totals, and signed claims of its usage.
 */
export function buildAdminApp(service: Service): FastifyInstance {
  const app = Fastify({ loggerInstance: service.log as FastifyBaseLogger });
  const state = (message: string) => ({
    status: 'success',
    message,
    data: { draining: service.gates.draining, in_flight: service.gates.inFlight },
  });
  const refuse = (reply: FastifyReply, status: number, message: string) =>
    reply.code(status).send({ status: 'error', message, data: null });

  app.post('/admin/drain', async () => {
    service.gates.setDraining(true);
    service.log.info({ inFlight: service.gates.inFlight }, 'draining: no new invocations');
    return state('Draining');
  });
  app.post('/admin/resume', async () => {
    service.gates.setDraining(false);
    service.log.info('resumed: taking invocations again');
    return state('Serving');
  });
  app.get('/admin/status', async () => state(service.gates.draining ? 'Draining' : 'Serving'));
  // Totals per code_id of the invocations answered in [from, to), in ms since the epoch.
  app.get<{ Querystring: { from?: string; to?: string } }>('/admin/usage', async (request, reply) => {
    const ledger = service.ledger;
    if (!ledger) return refuse(reply, 404, 'No usage ledger (LEDGER_PATH)');
    const from = Number(request.query.from ?? 0);
    const to = Number(request.query.to ?? Date.now() + 1);
    if (!Number.isSafeInteger(from) || !Number.isSafeInteger(to) || from < 0 || to < from)
      return refuse(reply, 400, 'from and to are ms since the epoch, from <= to');
    return { status: 'success', message: 'Usage', data: { from, to, codes: ledger.totals(from, to) } };
  });
  // Usage claims: the usage not claimed yet, per code_id, signed and marked claimed at once.
  const claimOf = (reply: FastifyReply, body: string) =>
    reply.type('application/json').send(`{"status":"success","message":"Claim","data":${body}}`);
  app.post<{ Body: { nonce?: unknown; until_ms?: unknown } | undefined }>('/admin/claims', async (request, reply) => {
    const { ledger, signer } = service;
    if (!ledger || !signer)
      return refuse(reply, 404, 'Claims need a usage ledger (LEDGER_PATH) and a key (SIGNER_KEY_PATH)');
    const nonce = request.body?.nonce;
    const now = Date.now();
    const until = request.body?.until_ms ?? now;
    if (typeof nonce !== 'string' || !claimNonce.test(nonce))
      return refuse(reply, 400, 'nonce must be 1 to 64 bytes in hex');
    if (typeof until !== 'number' || !Number.isSafeInteger(until) || until < 0 || until > now)
      return refuse(reply, 400, 'until_ms must be ms since the epoch, not after now');
    return claimOf(
      reply,
      ledger.claim(nonce.toLowerCase(), until, (claim) => signer.sign(claim)),
    );
  });
  app.get('/admin/claims/latest', async (_request, reply) => {
    const latest = service.ledger?.latestClaim();
    return latest === undefined ? refuse(reply, 404, 'No claim yet') : claimOf(reply, latest);
  });
  app.setNotFoundHandler(async (_request, reply) => refuse(reply, 404, 'No such endpoint'));
  return app;
}
