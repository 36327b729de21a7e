import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { CgroupPool } from '../../src/capacity/cgroupPool.js';
import { parseConfig } from '../../src/config.js';
import { removeTempDir } from '../../src/dev/tempDir.js';
import { buildApp } from '../../src/http/app.js';
import { maxInputDepth } from '../../src/http/invokeRoute.js';
import { createService } from '../../src/service/service.js';
import { fakeCgroupV2Root } from '../helpers/fakeCgroupfs.js';

const maxBodyBytes = 4096;

// Requests that must be refused before anything is fetched, written or started.
describe('bad requests get a clear 4xx', () => {
  let app: FastifyInstance;
  let root: string;
  beforeAll(async () => {
    root = await fakeCgroupV2Root(['workerd1']);
    const pool = await CgroupPool.open({ root, version: 2, prefix: 'workerd' });
    // Upstreams on a closed port: reaching them would turn the expected 4xx into a 500.
    const config = parseConfig({
      CGROUP_ROOT: root,
      MAX_BODY_BYTES: String(maxBodyBytes),
      ATTESTATION_URL: 'http://127.0.0.1:9',
      LOG_LEVEL: 'silent',
    });
    app = buildApp(createService(config, { pool }));
  });
  afterAll(async () => {
    await app.close();
    await removeTempDir(root);
  });

  const post = (payload: string, contentType = 'application/json') =>
    app.inject({ method: 'POST', url: '/api/serverless', payload, headers: { 'content-type': contentType } });

  test('a body over MAX_BODY_BYTES answers 413 in the envelope', async () => {
    const response = await post(JSON.stringify({ code_id: 'a', input: { pad: 'x'.repeat(maxBodyBytes) } }));
    expect(response.statusCode).toBe(413);
    expect(response.json()).toMatchObject({ status: 'error', message: expect.stringContaining('MAX_BODY_BYTES') });
  });

  test.each(['text/plain', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x'])(
    'a %s body answers 415',
    async (contentType) => {
      const response = await post('code_id=a', contentType);
      expect(response.statusCode).toBe(415);
      expect(response.json().status).toBe('error');
    },
  );

  test('malformed JSON answers 400', async () => {
    const response = await post('{"code_id": "a",');
    expect(response.statusCode).toBe(400);
    expect(response.json().message).toBe('Invalid payload');
  });

  // Objects nested `depth` deep, counting input itself as the first level.
  const nested = (depth: number) => `{"code_id": "a", "input": ${'{"a":'.repeat(depth)}1${'}'.repeat(depth)}}`;

  test(`input nested deeper than ${maxInputDepth} levels answers 400 naming the limit, before anything is spent`, async () => {
    for (const depth of [maxInputDepth + 1, 600]) {
      const response = await post(nested(depth));
      expect(response.statusCode, `depth ${depth}`).toBe(400);
      expect(JSON.stringify(response.json().data)).toContain(`more than ${maxInputDepth} deep`);
    }
  });

  test(`input nested ${maxInputDepth} levels deep is accepted (and goes on to the upstreams)`, async () => {
    const response = await post(nested(maxInputDepth));
    // The closed upstream port makes it a 500 once validation has let it through.
    expect(response.statusCode).toBe(500);
    expect(response.json().message).toBe('There was a problem in generating the attestation document');
  });

  test.each([
    ['longer than 256 characters', 'a'.repeat(257)],
    ['with a NUL', 'a\u0000b'],
    ['with a newline', 'a\nb'],
    ['with an escape character', 'a\u001bb'],
    ['with DEL', 'a\u007fb'],
    ['with a lone surrogate', 'a\ud800b'],
  ])('a code_id %s answers 400', async (_name, codeId) => {
    const response = await post(JSON.stringify({ code_id: codeId }));
    expect(response.statusCode).toBe(400);
    expect(response.json().message).toBe('Invalid payload');
  });

  test('a code_id of exactly 256 characters is accepted (and goes on to the upstreams)', async () => {
    const response = await post(JSON.stringify({ code_id: 'a'.repeat(256) }));
    expect(response.json().message).toBe('There was a problem in generating the attestation document');
  });
});
