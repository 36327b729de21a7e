import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { makeTempDir, removeTempDir } from '../../src/dev/tempDir.js';
import { loadSigner, recoverSigner } from '../../src/signing.js';
import { cgroupsOrSkip } from '../helpers/cgroups.js';
import { referenceAnswer } from '../helpers/reference.js';
import { writeSignerKey } from '../helpers/signerKey.js';
import { noLeftovers, type Stack, startStack, wranglerFixturesDir } from '../helpers/stack.js';

const cgroups = await cgroupsOrSkip();

// ANY /fn/<code_id>/<path…> over real HTTP: the function gets the client's request and the client
// gets the function's answer, compared with what workerd answers for the same upload and request.
describe.runIf(cgroups)('functions as HTTP endpoints', () => {
  let stack: Stack;
  let base: string;
  let keyDir: string;
  let keyPath: string;
  beforeAll(async () => {
    keyDir = await makeTempDir('oyster-key-');
    keyPath = await writeSignerKey(keyDir);
    stack = await startStack({ pool: { count: 2 }, env: { SIGNER_KEY_PATH: keyPath } });
    await stack.app.listen({ host: '127.0.0.1', port: 0 });
    base = `http://127.0.0.1:${(stack.app.server.address() as AddressInfo).port}`;
  });
  afterAll(async () => {
    await stack?.close();
    await removeTempDir(keyDir);
  });

  const exchanges: Array<[string, string, { method: string; headers?: Record<string, string>; body?: string }]> = [
    ['GET /', '/', { method: 'GET' }],
    ['a route parameter and a query', '/items/7?fields=name,tags', { method: 'GET' }],
    [
      'a JSON POST answered 201 with a location',
      '/items',
      { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"name":"pen"}' },
    ],
    [
      "a 400 of the app's own",
      '/items',
      { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"name":1}' },
    ],
    ['a request header echoed into a response header', '/whoami', { method: 'GET', headers: { 'x-user': 'ada' } }],
    ['a path no route takes (404)', '/nowhere', { method: 'GET' }],
  ];

  for (const app of ['hono-app', 'itty-router-app']) {
    test.each(exchanges)(`${app}: %s, answered as workerd answers it`, async (_name, target, init) => {
      const reference = await referenceAnswer(path.join(wranglerFixturesDir, app), {
        url: `http://127.0.0.1${target}`,
        init,
      });
      const response = await request(`${base}/fn/${app}${target}`, init as never);
      const body = Buffer.from(await response.body.arrayBuffer());
      expect(response.statusCode).toBe(reference.status);
      expect(body.toString()).toBe(reference.body);
      for (const name of ['content-type', 'location', 'x-served-by']) {
        expect(response.headers[name] ?? null, name).toBe(reference.headers.get(name));
      }
      expect(response.headers['x-oyster-error']).toBeUndefined();
      expect(await stack.leftovers()).toEqual(noLeftovers);
    });
  }

  test.each([
    ['/created', 201, 'location', '/things/1'],
    ['/empty', 204, 'content-type', undefined],
    ['/old', 302, 'location', 'http://127.0.0.1/new'],
    ['/teapot', 418, 'content-type', 'text/plain;charset=UTF-8'],
  ])("the function's own status passes through, not followed: %s", async (target, status, header, value) => {
    const response = await request(`${base}/fn/status-codes${target}`, { headers: { host: '127.0.0.1' } });
    await response.body.dump();
    expect(response.statusCode).toBe(status);
    expect(response.headers[header]).toBe(value);
  });

  test("the README's example: the function sees the method, path, query, headers and body it was sent", async () => {
    const response = await request(`${base}/fn/request-info/items/7?x=1`, { headers: { 'x-user': 'ada' } });
    expect(response.statusCode).toBe(200);
    expect(await response.body.text()).toBe(
      '{"method":"GET","path":"/items/7","query":{"x":"1"},"user":"ada","body":""}',
    );
    const posted = await request(`${base}/fn/request-info/`, { method: 'PUT', body: 'raw bytes' });
    expect(await posted.body.json()).toMatchObject({ method: 'PUT', path: '/', body: 'raw bytes' });
  });

  test("the function's own headers stay as it set them, Server-Timing included; the service adds its own only where there is none", async () => {
    const asked = { status: 200, body: 'ok', headers: { 'server-timing': 'app;dur=1', 'x-custom': 'A b' } };
    const own = await request(`${base}/fn/status/`, { method: 'POST', body: JSON.stringify(asked) });
    await own.body.dump();
    expect(own.headers['server-timing']).toBe('app;dur=1');
    expect(own.headers['x-custom']).toBe('A b');
    const none = await request(`${base}/fn/status/`, {
      method: 'POST',
      body: JSON.stringify({ status: 200, body: 'ok' }),
    });
    await none.body.dump();
    expect(none.headers['server-timing']).toMatch(/start;dur=[\d.]+/);
  });

  test('a binary body comes back byte for byte, with its content type', async () => {
    const reference = await referenceAnswer(path.join(wranglerFixturesDir, 'binary-response'), {
      url: 'http://127.0.0.1/',
      init: { method: 'GET' },
    });
    const response = await request(`${base}/fn/binary-response/`);
    expect(Buffer.from(await response.body.arrayBuffer()).equals(reference.bytes)).toBe(true);
    expect(response.headers['content-type']).toBe('image/png');
  });

  test("the service's own failures keep the envelope and say so in X-Oyster-Error", async () => {
    const unknown = await request(`${base}/fn/no-such-code/anything`);
    expect(unknown.statusCode).toBe(404);
    expect(unknown.headers['x-oyster-error']).toBe('CODE_NOT_FOUND');
    expect(await unknown.body.json()).toMatchObject({ status: 'error', message: 'No code was found for this code_id' });
    const thrown = await request(`${base}/fn/throw/`);
    expect(thrown.statusCode).toBe(500);
    expect(thrown.headers['x-oyster-error']).toBe('USER_CODE_FAILED');
    await thrown.body.dump();
  });

  test('a signature covers the whole exchange: code, method, path and query, both bodies, status and content type', async () => {
    const response = await request(`${base}/fn/hono-app/items?x=1`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: '{"name":"cup"}',
    });
    const body = Buffer.from(await response.body.arrayBuffer());
    const upload = await readFile(path.join(wranglerFixturesDir, 'hono-app', 'upload.body'));
    const fields = {
      timestamp: Number(response.headers['x-oyster-timestamp']),
      codeId: 'hono-app',
      codeSha256: createHash('sha256').update(upload).digest(),
      method: 'POST',
      target: '/items?x=1',
      requestBody: Buffer.from('{"name":"cup"}'),
      status: 201,
      contentType: String(response.headers['content-type']),
      responseBody: body,
    };
    const signature = String(response.headers['x-oyster-signature']);
    const signer = await loadSigner(keyPath);
    expect(recoverSigner(fields, signature)).toBe(signer.address);
    // Each field is in the message: changing any one of them changes who appears to have signed.
    const changed = {
      codeId: 'other-app',
      codeSha256: Buffer.alloc(32),
      method: 'PUT',
      target: '/items',
      requestBody: Buffer.from('{"name":"mug"}'),
      status: 200,
      contentType: 'text/plain',
      responseBody: Buffer.from('something else'),
    };
    for (const [field, value] of Object.entries(changed)) {
      expect(recoverSigner({ ...fields, [field]: value }, signature), field).not.toBe(signer.address);
    }
  });
});
