import type { FastifyPluginAsync } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { fetchAttestation } from '../attestation/fetchAttestation.js';
import { sealingUserData } from '../secrets/sealing.js';
import type { Service } from '../service/service.js';
import { abandonOnClose } from './invokeForRequest.js';

/** Where a client fetches the enclave's attestation document. */
export const attestationPath = '/attestation';
/** A client's nonce: 1 to 64 bytes, in hex. */
const maxNonceBytes = 64;

const querySchema = z.object({
  nonce: z
    .string()
    .regex(/^(?:[0-9a-fA-F]{2})+$/, 'must be bytes in hex (an even number of hex digits, without 0x)')
    .max(2 * maxNonceBytes, `must be at most ${maxNonceBytes} bytes`)
    .optional(),
});

/**
 * GET /attestation[?nonce=<hex>]: a fresh attestation document from the enclave's attestation
 * server, as its raw CBOR bytes, attesting the signer's key and the client's nonce. Never cached:
 * each request asks the attestation server anew.
 */
export const attestationRoute: FastifyPluginAsync<{ readonly service: Service }> = async (app, { service }) => {
  const { config, signer, sealing } = service;
  // Where sealing is on, every document names the sealing key, so that a developer seals to it.
  const userData = sealing.state === 'on' ? sealingUserData(sealing) : undefined;
  app
    .withTypeProvider<ZodTypeProvider>()
    .get(attestationPath, { schema: { querystring: querySchema } }, async (request, reply) => {
      const document = await fetchAttestation({
        url: config.attestationUrl,
        publicKey: signer?.publicKey,
        userData,
        nonce: request.query.nonce === undefined ? undefined : Buffer.from(request.query.nonce, 'hex'),
        timeoutMs: config.upstreamTimeoutMs,
        // The client going away ends the upstream call with it.
        signal: abandonOnClose(reply),
      });
      return reply.type('application/cbor').header('cache-control', 'no-store').send(document);
    });
};
