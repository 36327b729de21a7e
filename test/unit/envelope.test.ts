import Fastify from 'fastify';
import { describe, expect, test } from 'vitest';
import { type EnvelopeStatus, JsonText, sendEnvelope } from '../../src/http/envelope.js';

// What sendEnvelope puts on the wire for one answer.
async function sent(status: EnvelopeStatus, message: string, data: unknown, beside?: { encoding?: 'base64' }) {
  const app = Fastify();
  app.get('/', async (_request, reply) => sendEnvelope(reply, status, message, data, beside));
  const response = await app.inject({ method: 'GET', url: '/' });
  await app.close();
  return { type: response.headers['content-type'], body: response.body };
}

describe('the envelope', () => {
  test('is status, message and data, in that order, as JSON', async () => {
    expect(await sent('success', 'Usage', { codes: [] })).toEqual({
      type: 'application/json; charset=utf-8',
      body: '{"status":"success","message":"Usage","data":{"codes":[]}}',
    });
    expect((await sent('error', 'A "quoted"\nmessage', undefined)).body).toBe(
      '{"status":"error","message":"A \\"quoted\\"\\nmessage","data":null}',
    );
  });

  test('carries encoding after data when the JSON route gives a body as base64', async () => {
    expect((await sent('success', 'Done', 'AAE=', { encoding: 'base64' })).body).toBe(
      '{"status":"success","message":"Done","data":"AAE=","encoding":"base64"}',
    );
    expect((await sent('success', 'Done', 'text', {})).body).toBe(
      '{"status":"success","message":"Done","data":"text"}',
    );
  });

  test('passes data already serialised on byte for byte, as a signature over it needs', async () => {
    // Spacing and key order JSON.stringify would not keep, and an escape it would write otherwise.
    const text = '{ "z": 1,  "a": "\\u00e9" }';
    const { body } = await sent('success', 'Claim', new JsonText(text));
    expect(body).toBe(`{"status":"success","message":"Claim","data":${text}}`);
    expect(JSON.parse(body).data).toEqual({ z: 1, a: 'é' });
  });
});
