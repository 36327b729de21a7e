import type { FastifyPluginAsync } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { ServiceError } from '../errors.js';
import type { Service } from '../service/service.js';
import { JsonText, sendEnvelope } from './envelope.js';

const nonceMessage = 'nonce must be 1 to 64 bytes in hex';
const untilMessage = 'until_ms must be ms since the epoch, not after now';

// An end of GET /admin/usage's range: ms since the epoch, from the query string's text.
const rangeEnd = z.coerce.number().int().min(0).optional();
// The range [from, to): from 0 and to now unless told.
const usageQuery = z
  .object({ from: rangeEnd, to: rangeEnd })
  .transform(({ from, to }) => ({ from: from ?? 0, to: to ?? Date.now() + 1 }))
  .refine(({ from, to }) => from <= to, { error: 'from and to are ms since the epoch, from <= to', path: ['to'] });

// POST /admin/claims's body: a claimant's nonce (1 to 64 bytes, in hex) and the end of the usage claimed.
const claimBody = z.object(
  {
    nonce: z.string(nonceMessage).regex(/^(?:[0-9a-fA-F]{2}){1,64}$/, nonceMessage),
    until_ms: z
      .number(untilMessage)
      .int(untilMessage)
      .min(0, untilMessage)
      .refine((ms) => ms <= Date.now(), untilMessage)
      .optional(),
  },
  'the body must be a JSON object: {"nonce": <hex>, "until_ms"?: <ms>}',
);

/**
 * The usage ledger's operator routes: its totals per code_id over a time range, and usage claims
 * (the usage not claimed yet, per code_id, signed and marked claimed at once). A claim's answer is
 * the text the ledger stored, byte for byte, since its signature covers it.
 */
export const ledgerRoutes: FastifyPluginAsync<{ readonly service: Service }> = async (app, { service }) => {
  const routes = app.withTypeProvider<ZodTypeProvider>();
  routes.get('/admin/usage', { schema: { querystring: usageQuery } }, async (request, reply) => {
    const { ledger } = service;
    if (!ledger) throw new ServiceError('LEDGER_NOT_CONFIGURED');
    const { from, to } = request.query;
    return sendEnvelope(reply, 'success', 'Usage', { from, to, codes: ledger.totals(from, to) });
  });
  routes.post('/admin/claims', { schema: { body: claimBody } }, async (request, reply) => {
    const { ledger, signer } = service;
    if (!ledger || !signer) throw new ServiceError('CLAIMS_NOT_CONFIGURED');
    const { nonce, until_ms: until = Date.now() } = request.body;
    const claim = ledger.claim(nonce.toLowerCase(), until, (signed) => signer.sign(signed));
    return sendEnvelope(reply, 'success', 'Claim', new JsonText(claim));
  });
  routes.get('/admin/claims/latest', async (_request, reply) => {
    const { ledger } = service;
    if (!ledger) throw new ServiceError('LEDGER_NOT_CONFIGURED');
    const latest = ledger.latestClaim();
    if (latest === undefined) throw new ServiceError('NO_CLAIM_YET');
    return sendEnvelope(reply, 'success', 'Claim', new JsonText(latest));
  });
};
