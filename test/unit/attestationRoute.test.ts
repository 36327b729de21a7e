import { writeFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import path from 'node:path';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { maxDocumentBytes } from '../../src/attestation/limits.js';
import { CgroupPool } from '../../src/capacity/cgroupPool.js';
import { parseConfig } from '../../src/config.js';
import { listen, type RunningServer } from '../../src/dev/listen.js';
import { makeTempDir, removeTempDir } from '../../src/dev/tempDir.js';
import { buildApp } from '../../src/http/app.js';
import { createService } from '../../src/service/service.js';
import { loadSigner, type Signer } from '../../src/signing.js';
import { fakeCgroupV2Root } from '../helpers/fakeCgroupfs.js';
import { type Fault, startFaultyServer } from '../helpers/faultyServer.js';

// GET /attestation against upstreams that record what they were asked, or misbehave.
describe('GET /attestation', () => {
  let root: string;
  let keyDir: string;
  let signer: Signer;
  let recorder: RunningServer;
  const asked: string[] = [];
  let answer = Buffer.from([0x84, 0xff, 0xfe, 0x00]);
  const apps: FastifyInstance[] = [];

  // An app whose attestation server is at url; signed unless told otherwise.
  async function appWith(url: string, signed = true): Promise<FastifyInstance> {
    const config = parseConfig({
      CGROUP_ROOT: root,
      ATTESTATION_URL: url,
      UPSTREAM_TIMEOUT_MS: '300',
      LOG_LEVEL: 'silent',
    });
    const pool = await CgroupPool.open({ root, version: undefined, prefix: 'workerd' });
    const app = buildApp(createService(config, { pool, signer: signed ? signer : undefined }));
    apps.push(app);
    await app.ready();
    return app;
  }

  beforeAll(async () => {
    root = await fakeCgroupV2Root(['workerd1']);
    keyDir = await makeTempDir('oyster-key-');
    await writeFile(path.join(keyDir, 'key'), '11'.repeat(32));
    signer = await loadSigner(path.join(keyDir, 'key'));
    recorder = await listen(
      createServer((request, response) => {
        asked.push(request.url ?? '');
        response.end(answer);
      }),
      '127.0.0.1',
      0,
    );
  });
  afterAll(async () => {
    await Promise.all(apps.map((app) => app.close()));
    await recorder.close();
    await removeTempDir(root);
    await removeTempDir(keyDir);
  });

  test("asks for the signer's key and the client's nonce, and answers the document's exact bytes, never to be cached", async () => {
    const app = await appWith(`${recorder.url}/attestation/raw`);
    asked.length = 0;
    const response = await app.inject({ method: 'GET', url: '/attestation?nonce=0A0b' });
    expect(response.statusCode).toBe(200);
    expect(response.headers['content-type']).toBe('application/cbor');
    expect(response.headers['cache-control']).toBe('no-store');
    expect(response.rawPayload.equals(answer)).toBe(true);
    const query = new URL(asked[0]!, 'http://x').searchParams;
    expect(new URL(asked[0]!, 'http://x').pathname).toBe('/attestation/raw');
    expect(query.get('public_key')).toBe(Buffer.from(signer.publicKey).toString('hex'));
    expect(query.get('nonce')).toBe('0a0b');
  });

  test('asks anew for every request, and without a signer or a nonce asks for neither', async () => {
    const app = await appWith(`${recorder.url}/attestation/raw`, false);
    asked.length = 0;
    answer = Buffer.from('first');
    expect((await app.inject({ method: 'GET', url: '/attestation' })).body).toBe('first');
    answer = Buffer.from('second');
    expect((await app.inject({ method: 'GET', url: '/attestation' })).body).toBe('second');
    expect(asked).toEqual(['/attestation/raw', '/attestation/raw']);
  });

  test.each<[string, Fault]>([
    ['answers an error', 'error'],
    ['never answers', 'silent'],
    ['sends a body that never ends', 'endless'],
  ])('an attestation server that %s answers 500 ATTESTATION_FAILED, bounded in time and size', async (_name, fault) => {
    const faulty = await startFaultyServer(fault);
    try {
      const app = await appWith(faulty.url);
      const started = performance.now();
      const response = await app.inject({ method: 'GET', url: '/attestation' });
      expect(response.statusCode).toBe(500);
      expect(response.headers['x-oyster-error']).toBe('ATTESTATION_FAILED');
      expect(performance.now() - started).toBeLessThan(2000);
    } finally {
      await faulty.close();
    }
  });

  test(`a document over ${maxDocumentBytes} bytes is refused`, async () => {
    const app = await appWith(`${recorder.url}/attestation/raw`);
    answer = Buffer.alloc(maxDocumentBytes + 1);
    const response = await app.inject({ method: 'GET', url: '/attestation' });
    expect(response.statusCode).toBe(500);
    expect(response.headers['x-oyster-error']).toBe('ATTESTATION_FAILED');
  });
});
