import type { FastifyReply } from 'fastify';

/**
 * Data already serialised as JSON, which the envelope carries byte for byte: a usage claim's
 * signature covers the text the ledger stored, so it is never parsed and written again.
 */
export class JsonText {
  constructor(readonly text: string) {}
}

/** Whether one of the service's own answers is its result or its failure. */
export type EnvelopeStatus = 'success' | 'error';

/**
 * Sends one of the service's own answers, on any listener, in its envelope:
 * `{"status", "message", "data"}`, then `encoding` where the JSON route gives a body that is not
 * UTF-8 as base64. Data as JsonText goes in as it is, anything else as JSON.stringify writes it.
 */
export function sendEnvelope(
  reply: FastifyReply,
  status: EnvelopeStatus,
  message: string,
  data: unknown,
  beside: { readonly encoding?: 'base64' } = {},
): FastifyReply {
  const fields = [
    `"status":"${status}"`,
    `"message":${JSON.stringify(message)}`,
    `"data":${data instanceof JsonText ? data.text : JSON.stringify(data ?? null)}`,
  ];
  if (beside.encoding) fields.push(`"encoding":"${beside.encoding}"`);
  return reply.type('application/json; charset=utf-8').send(`{${fields.join(',')}}`);
}
