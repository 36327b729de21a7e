import { isUtf8 } from 'node:buffer';
import type { FastifyPluginAsync } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';
import type { Invocation } from '../capacity/invokeWorker.js';
import { hasControlCharacters } from '../controlCharacters.js';
import { ServiceError } from '../errors.js';
import type { Service } from '../service/service.js';
import { countAnswers } from './answerAccounting.js';
import { sendEnvelope } from './envelope.js';
import { invokeFor } from './invokeForRequest.js';

/** The route that runs functions; the only one whose requests are invocations. */
export const invokePath = '/api/serverless';
const maxCodeIdLength = 256;
/**
 * Deepest nesting of objects and arrays accepted in `input` (`input` itself is the first level):
 * the function receives it as JSON, and a deeper value would overflow JSON.stringify only after a
 * workerd had been started for it.
 */
export const maxInputDepth = 64;

/** A code_id: what the JSON route takes in its body and the HTTP route in its path. */
export const codeIdSchema = z
  .string()
  .min(1)
  .max(maxCodeIdLength)
  .refine((codeId) => !hasControlCharacters(codeId), 'must not contain control characters')
  // A lone surrogate has no UTF-8 form: two such code_ids would be the same bytes to a signature.
  .refine((codeId) => Buffer.from(codeId, 'utf8').toString('utf8') === codeId, 'must be well-formed Unicode');

// The request body of POST /api/serverless.
const payloadSchema = z.object({
  code_id: codeIdSchema,
  input: z
    .record(z.string(), z.unknown())
    .refine(
      (input) => depthWithin(input, maxInputDepth),
      `must not nest objects and arrays more than ${maxInputDepth} deep`,
    )
    .optional(),
});

/** POST /api/serverless: runs a stored function with the client's input and answers in the envelope, signed when a key is set. */
export const invokeRoute: FastifyPluginAsync<{ readonly service: Service }> = async (app, { service }) => {
  const { signer, metrics } = service;
  countAnswers(app, metrics);

  app
    .withTypeProvider<ZodTypeProvider>()
    .post(invokePath, { schema: { body: payloadSchema } }, async (request, reply) => {
      const { code_id: codeId, input } = request.body;
      // The function receives the input as a JSON POST, as the original service sent it.
      const body = Buffer.from(JSON.stringify(input ?? {}));
      const asked = { method: 'POST', target: '/', headers: { 'content-type': 'application/json' }, body };
      const { answer, codeSha256 } = await invokeFor(service, request, reply, 'serverless', codeId, asked);
      if (answer.statusCode < 200 || answer.statusCode > 299) throw functionErrorStatus(answer);
      // The exact bytes are signed; a body that is not UTF-8 reaches the client as base64, so that
      // it can rebuild those bytes.
      if (signer) void reply.headers(signer.headers({ codeId, codeSha256, input: body, output: answer.body }));
      const { body: data, encoding } = bodyField(answer.body);
      return sendEnvelope(reply, 'success', 'Response successfully generated', data, { encoding });
    });
};

// The function's own answer with a status that is not a success, reported with that status (a
// redirect or an informational one as 502, which no client would follow or wait on) and its body.
function functionErrorStatus(answer: Invocation): ServiceError {
  const { statusCode: status, body } = answer;
  const passedOn = status >= 400 && status <= 599 ? status : undefined;
  return new ServiceError('FUNCTION_ERROR_STATUS', { status: passedOn, data: { status, ...bodyField(body) } });
}

// A body as JSON can carry it: its text when it is UTF-8, else its base64 with encoding "base64".
function bodyField(body: Buffer): { body: string; encoding?: 'base64' } {
  return isUtf8(body) ? { body: body.toString('utf8') } : { body: body.toString('base64'), encoding: 'base64' };
}

// Whether a parsed JSON value nests no deeper than maxDepth; iterative, so any depth is safe to check.
function depthWithin(value: unknown, maxDepth: number): boolean {
  const pending: Array<readonly [unknown, number]> = [[value, 1]];
  for (let next = pending.pop(); next; next = pending.pop()) {
    const [current, depth] = next;
    if (typeof current !== 'object' || current === null) continue;
    if (depth > maxDepth) return false;
    for (const child of Object.values(current)) pending.push([child, depth + 1]);
  }
  return true;
}
