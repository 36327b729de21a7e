import type { FastifyPluginAsync, FastifyReply } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { ServiceError, toServiceError } from '../errors.js';
import { bodyField } from '../pipeline/runFunction.js';
import type { Service } from '../service.js';
import { hasControlCharacters } from '../text.js';

/** The route that runs functions; the only one whose requests are invocations. */
export const invokePath = '/api/serverless';
const maxCodeIdLength = 256;
/**
 * Deepest nesting of objects and arrays accepted in `input` (`input` itself is the first level):
 * the function receives it as JSON, and a deeper value would overflow JSON.stringify only after a
 * workerd had been started for it.
 */
export const maxInputDepth = 64;

// The request body of POST /api/serverless.
const payloadSchema = z.object({
  code_id: z
    .string()
    .min(1)
    .max(maxCodeIdLength)
    .refine((codeId) => !hasControlCharacters(codeId), 'must not contain control characters')
    // A lone surrogate has no UTF-8 form: two such code_ids would be the same bytes to a signature.
    .refine((codeId) => Buffer.from(codeId, 'utf8').toString('utf8') === codeId, 'must be well-formed Unicode'),
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
  app.addHook('onResponse', async (request, reply) => {
    metrics.recordRequest(reply.statusCode, request.failureCode ?? 'OK', request.stages.durations);
  });

  app
    .withTypeProvider<ZodTypeProvider>()
    .post(invokePath, { schema: { body: payloadSchema } }, async (request, reply) => {
      try {
        const { code_id: codeId, input } = request.body;
        const result = await service.invoke({
          codeId,
          input,
          signal: abandonOnClose(reply),
          stages: request.stages,
          log: request.log,
        });
        // The exact bytes are signed; a body that is not UTF-8 reaches the client as base64, so that
        // it can rebuild those bytes.
        if (signer) {
          void reply.headers(
            signer.headers({ codeId, codeSha256: result.codeSha256, input: result.input, output: result.output }),
          );
        }
        const { body: data, encoding } = bodyField(result.output);
        return {
          status: 'success',
          message: 'Response successfully generated',
          data,
          ...(encoding ? { encoding } : {}),
        };
      } catch (error) {
        const failure = toServiceError(error);
        // A busy or closing server is no fault of the request or the service: the request's own line
        // (with its code) says it, and under overload one line per refusal is all the log can afford.
        if (failure.status !== 503) {
          const log = failure.status >= 500 ? request.log.error.bind(request.log) : request.log.info.bind(request.log);
          log({ stage: request.stages.current, code: failure.code, err: failure.cause ?? failure }, failure.message);
        }
        throw failure;
      }
    });
};

// A signal that fires when the client goes away before its answer is sent.
function abandonOnClose(reply: FastifyReply): AbortSignal {
  const controller = new AbortController();
  reply.raw.once('close', () => {
    if (!reply.raw.writableFinished) controller.abort(new ServiceError('CLIENT_CLOSED'));
  });
  return controller.signal;
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
