import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { verifyAttestation } from '../../../src/attestation/verify.js';
import { rawDocumentPath, rootPath, startAttestationServer } from '../../../src/dev/attestationServer.js';
import { devRootPem } from '../../../src/dev/devAttestationChain.js';
import type { RunningServer } from '../../../src/dev/listen.js';

const get = async (url: string) => {
  const response = await request(url);
  return {
    status: response.statusCode,
    type: response.headers['content-type'],
    body: Buffer.from(await response.body.arrayBuffer()),
  };
};

describe('the development attestation server', () => {
  let asked: RunningServer;
  let fixed: RunningServer;
  const fixedKey = new Uint8Array(64).fill(9);

  beforeAll(async () => {
    asked = await startAttestationServer();
    fixed = await startAttestationServer({ publicKey: fixedKey, ignoreRequestedKey: true });
  });
  afterAll(async () => {
    await Promise.all([asked?.close(), fixed?.close()]);
  });

  test('makes a fresh document for each request with the public_key, user_data and nonce asked for', async () => {
    const query = `public_key=${'ab'.repeat(64)}&user_data=0102&nonce=${'cd'.repeat(64)}`;
    const first = await get(`${asked.url}${rawDocumentPath}?${query}`);
    expect(first.status).toBe(200);
    expect(first.type).toBe('application/octet-stream');
    const attested = verifyAttestation(first.body, { rootPem: devRootPem });
    expect(Buffer.from(attested.publicKey!).toString('hex')).toBe('ab'.repeat(64));
    expect(Buffer.from(attested.userData!).toString('hex')).toBe('0102');
    expect(Buffer.from(attested.nonce!).toString('hex')).toBe('cd'.repeat(64));
    const second = await get(`${asked.url}${rawDocumentPath}?nonce=01`);
    expect(Buffer.from(verifyAttestation(second.body, { rootPem: devRootPem }).nonce!).toString('hex')).toBe('01');
  });

  test('told to ignore what is asked, attests its own key whatever a request names', async () => {
    const { body } = await get(`${fixed.url}${rawDocumentPath}?public_key=${'ab'.repeat(64)}`);
    expect(verifyAttestation(body, { rootPem: devRootPem }).publicKey).toEqual(fixedKey);
  });

  test('with a default key attests it when a request asks for none, and the asked-for key otherwise', async () => {
    const server = await startAttestationServer({ publicKey: fixedKey });
    try {
      const unasked = await get(`${server.url}${rawDocumentPath}`);
      expect(verifyAttestation(unasked.body, { rootPem: devRootPem }).publicKey).toEqual(fixedKey);
      const asked = await get(`${server.url}${rawDocumentPath}?public_key=${'ab'.repeat(64)}`);
      expect(Buffer.from(verifyAttestation(asked.body, { rootPem: devRootPem }).publicKey!).toString('hex')).toBe(
        'ab'.repeat(64),
      );
    } finally {
      await server.close();
    }
  });

  test('serves the same document hex-encoded at /attestation/hex, and its root at /root.pem', async () => {
    const hexed = await get(`${asked.url}/attestation/hex?nonce=05`);
    expect(hexed.type).toMatch(/^text\/plain/);
    expect(verifyAttestation(Buffer.from(hexed.body.toString(), 'hex'), { rootPem: devRootPem }).nonce).toEqual(
      Uint8Array.of(5),
    );
    const root = await get(`${asked.url}${rootPath}`);
    expect(root.body.toString()).toBe(devRootPem);
  });

  test.each([
    ['a nonce that is not hex', 'nonce=zz'],
    ['an odd number of hex digits', 'nonce=abc'],
    ['a nonce over 512 bytes', `nonce=${'00'.repeat(513)}`],
    ['user data over 512 bytes', `user_data=${'00'.repeat(513)}`],
  ])('%s answers 400', async (_name, query) => {
    expect((await get(`${asked.url}${rawDocumentPath}?${query}`)).status).toBe(400);
  });

  test('other paths answer 404 and other methods 405', async () => {
    expect((await get(`${asked.url}/`)).status).toBe(404);
    expect((await request(`${asked.url}${rawDocumentPath}`, { method: 'POST' })).statusCode).toBe(405);
  });
});
