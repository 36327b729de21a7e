import type http from 'node:http';
import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify';
import { ServiceError } from '../errors.js';
import type { Service } from '../service/service.js';
import { countAnswers } from './answerAccounting.js';
import { invokeFor } from './invokeForRequest.js';
import { codeIdSchema } from './invokeRoute.js';

/** Where the functions answer as HTTP endpoints: /fn/<code_id>/<path…>. */
export const functionPrefix = '/fn/';

// Headers that belong to one hop, not to the exchange (RFC 9110 7.6.1), and the ones this
// service sets itself for that hop: none of them passes either way.
const hopByHop = new Set([
  'connection',
  'keep-alive',
  'proxy-authenticate',
  'proxy-authorization',
  'proxy-connection',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  'content-length',
]);

/**
 * ANY /fn/<code_id>/<path…>: the client's whole request goes to the function, with the path and
 * query after the code_id, and the function's whole answer comes back: status, headers and body
 * as it gave them. The service's own failures keep the JSON envelope and carry X-Oyster-Error.
 */
export const functionRoute: FastifyPluginAsync<{ readonly service: Service }> = async (app, { service }) => {
  const { signer, metrics } = service;
  // Any body, as bytes: the function decides what it accepts.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', { parseAs: 'buffer' }, (_request, body, done) => done(null, body));
  countAnswers(app, metrics);

  const handler = async (request: FastifyRequest, reply: FastifyReply) => {
    const { codeId, target } = splitTarget(request.raw.url ?? '/');
    const body = Buffer.isBuffer(request.body) ? request.body : Buffer.alloc(0);
    const headers = {
      ...forwarded(request.headers),
      ...(body.length > 0 ? { 'content-length': String(body.length) } : {}),
    };
    const asked = { method: request.method, target, headers, body };
    const { answer, codeSha256 } = await invokeFor(service, request, reply, 'fn', codeId, asked);
    void reply.code(answer.statusCode);
    for (const [name, value] of Object.entries(answer.headers)) {
      if (value !== undefined && !hopByHop.has(name)) void reply.header(name, value);
    }
    if (signer) {
      const contentType = answer.headers['content-type'] ?? '';
      void reply.headers(
        signer.headers({
          codeId,
          codeSha256,
          method: asked.method,
          target,
          requestBody: body,
          status: answer.statusCode,
          contentType,
          responseBody: answer.body,
        }),
      );
    }
    return reply.send(answer.body);
  };
  app.all(`${functionPrefix}*`, handler);
};

// The code_id (one path segment, percent-decoded and checked as the JSON route checks it) and the
// path and query the function sees, as the client wrote them.
function splitTarget(url: string): { codeId: string; target: string } {
  const rest = url.slice(functionPrefix.length);
  const end = rest.search(/[/?]/);
  const segment = end === -1 ? rest : rest.slice(0, end);
  const after = end === -1 ? '' : rest.slice(end);
  let codeId: string;
  try {
    codeId = decodeURIComponent(segment);
  } catch {
    throw new ServiceError('INVALID_PAYLOAD', { data: 'the code_id in the path is not valid percent-encoding' });
  }
  const checked = codeIdSchema.safeParse(codeId);
  if (!checked.success) throw new ServiceError('INVALID_PAYLOAD', { data: checked.error.issues });
  return { codeId, target: after.startsWith('/') ? after : `/${after}` };
}

// The client's headers less those of this hop.
function forwarded(headers: http.IncomingHttpHeaders): http.OutgoingHttpHeaders {
  const named = new Set(
    String(headers.connection ?? '')
      .split(',')
      .map((name) => name.trim().toLowerCase()),
  );
  return Object.fromEntries(Object.entries(headers).filter(([name]) => !hopByHop.has(name) && !named.has(name)));
}
