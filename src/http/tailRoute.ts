import type { FastifyPluginAsync } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';
import type { Service } from '../service/service.js';
import { codeIdSchema } from './invokeRoute.js';

/** How often an open tail writes a comment, so that a reader that went away is found out. */
const keepAliveMs = 15_000;

/**
 * GET /admin/tail?code_id=<id>: Server-Sent Events, one `invocation` event per invocation of the
 * code_id as it ends (docs/api.md#live-tail), and a `lost` event when a slow reader missed some.
 */
export const tailRoute: FastifyPluginAsync<{ readonly service: Service }> = async (app, { service }) => {
  const { tails } = service;
  app.addHook('onClose', async () => tails.closeAll());
  app
    .withTypeProvider<ZodTypeProvider>()
    .get('/admin/tail', { schema: { querystring: z.object({ code_id: codeIdSchema }) } }, async (request, reply) => {
      tails.mayOpen();
      const response = reply.raw;
      reply.hijack();
      response.writeHead(200, {
        'content-type': 'text/event-stream; charset=utf-8',
        'cache-control': 'no-store',
        // nginx would otherwise buffer the stream.
        'x-accel-buffering': 'no',
      });
      response.write(': tail open\n\n');
      const tail = tails.openTail(request.query.code_id, {
        write: (chunk) => response.write(chunk),
        end: () => response.end(),
      });
      const keepAlive = setInterval(() => tail.keepAlive(), keepAliveMs);
      response.on('drain', () => tail.drained());
      response.once('close', () => {
        clearInterval(keepAlive);
        tail.close();
      });
      request.log.info({ codeId: request.query.code_id, tails: tails.open }, 'tail opened');
    });
};
