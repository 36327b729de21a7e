import path from 'node:path';
import type { FastifyInstance, LightMyRequestResponse } from 'fastify';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { CgroupPool } from '../../src/capacity/cgroupPool.js';
import { parseConfig } from '../../src/config.js';
import { makeTempDir, removeTempDir } from '../../src/dev/tempDir.js';
import { buildAdminApp } from '../../src/http/adminApp.js';
import { buildApp } from '../../src/http/app.js';
import { type ClaimAnswer, signedClaimOf } from '../../src/ledger/claims.js';
import { UsageLedger } from '../../src/ledger/usageLedger.js';
import { createService, type Service } from '../../src/service/service.js';
import { loadSigner, recoverSigner, type Signer } from '../../src/signing.js';
import { fakeCgroupV2Root } from '../helpers/fakeCgroupfs.js';
import { writeSignerKey } from '../helpers/signerKey.js';

// The temporary directories made, removed at the end.
const removals: string[] = [];

// A service on a pool in a fake cgroupfs, with the ledger and signer given.
async function serviceWith(deps: { ledger?: UsageLedger; signer?: Signer } = {}): Promise<Service> {
  const root = await fakeCgroupV2Root(['workerd1']);
  removals.push(root);
  const pool = await CgroupPool.open({ root, version: 2, prefix: 'workerd' });
  return createService(parseConfig({ CGROUP_ROOT: root, LOG_LEVEL: 'silent' }), { pool, ...deps });
}

// One of the service's own failures, as every listener answers it: its status, its code in
// X-Oyster-Error, and the envelope, whose data is returned.
function expectFailure(response: LightMyRequestResponse, status: number, code: string, message?: string): unknown {
  expect(response.statusCode, response.body).toBe(status);
  expect(response.headers['x-oyster-error']).toBe(code);
  expect(response.headers['content-type']).toBe('application/json; charset=utf-8');
  const body = response.json();
  expect(Object.keys(body)).toEqual(['status', 'message', 'data']);
  expect(body.status).toBe('error');
  if (message !== undefined) expect(body.message).toBe(message);
  return body.data;
}

// The messages of zod's issues in an INVALID_PAYLOAD's data.
const issueMessages = (data: unknown) => (data as Array<{ message: string }>).map((issue) => issue.message);

// The operator listener of a service with a ledger, holding one invocation, and a key.
let ledger: UsageLedger;
let signer: Signer;
let admin: FastifyInstance;
beforeAll(async () => {
  const dir = await makeTempDir('oyster-admin-');
  removals.push(dir);
  signer = await loadSigner(await writeSignerKey(dir));
  ledger = UsageLedger.open({ file: path.join(dir, 'usage.sqlite'), retentionDays: 30 });
  ledger.record({
    atMs: Date.now() - 1,
    codeId: 'hello',
    outcome: 'ok',
    cpuUs: 1_000,
    peakMemoryBytes: 1_000_000,
    wallUs: 2_000,
    bytesIn: 3,
    bytesOut: 4,
  });
  admin = buildAdminApp(await serviceWith({ ledger, signer }));
});
afterAll(async () => {
  await admin?.close();
  ledger?.close();
  await Promise.all(removals.splice(0).map(removeTempDir));
});

describe('usage claims on the operator listener', () => {
  const claim = (payload: object | undefined) => admin.inject({ method: 'POST', url: '/admin/claims', payload });

  test('answers 404 NO_CLAIM_YET before the first claim', async () => {
    const response = await admin.inject({ method: 'GET', url: '/admin/claims/latest' });
    expectFailure(response, 404, 'NO_CLAIM_YET', 'No claim yet');
  });

  test('answers a claim in the bytes the ledger stored, whose signature verifies, the same each time', async () => {
    const made = await claim({ nonce: 'A0b1' });
    expect(made.statusCode).toBe(200);
    expect(made.headers['x-oyster-error']).toBeUndefined();
    expect(made.body).toBe(`{"status":"success","message":"Claim","data":${ledger.latestClaim()}}`);
    const data = made.json().data as ClaimAnswer;
    expect(data).toMatchObject({ nonce: 'a0b1', codes: [{ code_id: 'hello', invocations: 1 }] });
    expect(recoverSigner(signedClaimOf(data), data.signature)).toBe(signer.address);
    expect((await claim({ nonce: 'a0b1' })).body).toBe(made.body);
    expect((await admin.inject({ method: 'GET', url: '/admin/claims/latest' })).body).toBe(made.body);
  });

  test.each([
    ['no body', undefined, 'the body must be a JSON object: {"nonce": <hex>, "until_ms"?: <ms>}'],
    ['no nonce', {}, 'nonce must be 1 to 64 bytes in hex'],
    ['a nonce that is not hex', { nonce: 'zz' }, 'nonce must be 1 to 64 bytes in hex'],
    ['a nonce of an odd number of digits', { nonce: 'abc' }, 'nonce must be 1 to 64 bytes in hex'],
    ['a nonce of 65 bytes', { nonce: 'ab'.repeat(65) }, 'nonce must be 1 to 64 bytes in hex'],
    ['a numeric nonce', { nonce: 12 }, 'nonce must be 1 to 64 bytes in hex'],
    [
      'an until_ms after now',
      { nonce: '01', until_ms: Date.now() + 60_000 },
      'until_ms must be ms since the epoch, not after now',
    ],
    ['a negative until_ms', { nonce: '01', until_ms: -1 }, 'until_ms must be ms since the epoch, not after now'],
    ['a fractional until_ms', { nonce: '01', until_ms: 1.5 }, 'until_ms must be ms since the epoch, not after now'],
    ['an until_ms as a string', { nonce: '01', until_ms: '5' }, 'until_ms must be ms since the epoch, not after now'],
  ])('a claim with %s answers 400 INVALID_PAYLOAD with zod’s issues', async (_name, payload, message) => {
    const data = expectFailure(await claim(payload), 400, 'INVALID_PAYLOAD', 'Invalid payload');
    expect(issueMessages(data)).toEqual([message]);
  });
});

describe('usage totals on the operator listener', () => {
  test('sum the usage over a range, from 0 to now unless told', async () => {
    const response = await admin.inject({ method: 'GET', url: '/admin/usage' });
    expect(response.statusCode).toBe(200);
    const body = response.json();
    expect(body).toMatchObject({ status: 'success', message: 'Usage', data: { from: 0 } });
    expect(body.data.to).toBeGreaterThan(Date.now() - 60_000);
    expect(body.data.codes).toEqual([expect.objectContaining({ code_id: 'hello', invocations: 1 })]);
  });

  test.each([
    ['from after to', '?from=5&to=1', 'from and to are ms since the epoch, from <= to'],
    ['a from after now, with no to', `?from=${Date.now() + 60_000}`, 'from and to are ms since the epoch, from <= to'],
    ['a negative from', '?from=-1', 'Too small: expected number to be >=0'],
    ['a to that is not a number', '?to=soon', 'Invalid input: expected number, received NaN'],
    ['a fractional to', '?to=1.5', 'Invalid input: expected int, received number'],
  ])('a usage range with %s answers 400 INVALID_PAYLOAD with zod’s issues', async (_name, query, message) => {
    const response = await admin.inject({ method: 'GET', url: `/admin/usage${query}` });
    expect(issueMessages(expectFailure(response, 400, 'INVALID_PAYLOAD', 'Invalid payload'))).toEqual([message]);
  });
});

describe('the operator listener of a service without a ledger or a key', () => {
  test('answers 404 with the code of what is missing', async () => {
    const admin = buildAdminApp(await serviceWith());
    const usage = await admin.inject({ method: 'GET', url: '/admin/usage' });
    expectFailure(usage, 404, 'LEDGER_NOT_CONFIGURED', 'No usage ledger (LEDGER_PATH)');
    const claim = await admin.inject({ method: 'POST', url: '/admin/claims', payload: { nonce: '01' } });
    expectFailure(
      claim,
      404,
      'CLAIMS_NOT_CONFIGURED',
      'Claims need a usage ledger (LEDGER_PATH) and a key (SIGNER_KEY_PATH)',
    );
    const latest = await admin.inject({ method: 'GET', url: '/admin/claims/latest' });
    expectFailure(latest, 404, 'LEDGER_NOT_CONFIGURED');
    await admin.close();
  });
});

// Both listeners answer from the one envelope and the one failure path: the same shape, status
// and header for the same kind of answer.
describe('the public and operator listeners', () => {
  let service: Service;
  let app: FastifyInstance;
  let admin: FastifyInstance;
  beforeAll(async () => {
    service = await serviceWith();
    app = buildApp(service);
    admin = buildAdminApp(service);
    await app.ready();
  });
  afterAll(async () => {
    await admin?.close();
    await app?.close();
  });

  test('answer a path no route has with 404 ROUTE_NOT_FOUND', async () => {
    for (const listener of [app, admin]) {
      const response = await listener.inject({ method: 'GET', url: '/nope' });
      expect(expectFailure(response, 404, 'ROUTE_NOT_FOUND', 'No such endpoint')).toBeNull();
    }
  });

  test('answer a body their schema refuses with 400 INVALID_PAYLOAD and zod’s issues', async () => {
    for (const [listener, url] of [
      [app, '/api/serverless'],
      [admin, '/admin/claims'],
    ] as const) {
      const response = await listener.inject({ method: 'POST', url, payload: {} });
      const data = expectFailure(response, 400, 'INVALID_PAYLOAD', 'Invalid payload');
      expect(data).toEqual([
        expect.objectContaining({ instancePath: expect.any(String), message: expect.any(String) }),
      ]);
    }
  });

  test('answer malformed JSON with 400 INVALID_PAYLOAD', async () => {
    for (const [listener, url] of [
      [app, '/api/serverless'],
      [admin, '/admin/claims'],
    ] as const) {
      const headers = { 'content-type': 'application/json' };
      const response = await listener.inject({ method: 'POST', url, payload: '{"nonce": ', headers });
      expectFailure(response, 400, 'INVALID_PAYLOAD', 'Invalid payload');
    }
  });

  test('answer their successes and a ServiceError in the same envelope', async () => {
    const drained = await admin.inject({ method: 'POST', url: '/admin/drain' });
    expect(drained.headers['content-type']).toBe('application/json; charset=utf-8');
    expect(drained.body).toBe('{"status":"success","message":"Draining","data":{"draining":true,"in_flight":0}}');
    const refused = await app.inject({ method: 'POST', url: '/api/serverless', payload: { code_id: 'a' } });
    expectFailure(refused, 503, 'DRAINING', 'Server is draining: it starts no new work');
    expect(refused.headers['retry-after']).toBe('1');
    const health = await app.inject({ method: 'GET', url: '/health' });
    expect(health.statusCode).toBe(503);
    expect(Object.keys(health.json())).toEqual(['status', 'message', 'data']);
    expect(health.json()).toMatchObject({ status: 'error', message: 'Draining' });

    const resumed = await admin.inject({ method: 'POST', url: '/admin/resume' });
    expect(resumed.body).toBe('{"status":"success","message":"Serving","data":{"draining":false,"in_flight":0}}');
    const status = await admin.inject({ method: 'GET', url: '/admin/status' });
    expect(status.body).toBe(resumed.body);
  });
});
