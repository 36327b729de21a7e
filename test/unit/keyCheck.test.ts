import { createServer } from 'node:http';
import path from 'node:path';
import getPort from 'get-port';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { makeDevDocument, rawDocumentPath, startAttestationServer } from '../../src/dev/attestationServer.js';
import { listen, type RunningServer } from '../../src/dev/listen.js';
import { makeTempDir, removeTempDir } from '../../src/dev/tempDir.js';
import { StartupError } from '../../src/errors.js';
import { checkAttestedKey } from '../../src/keyCheck.js';
import { writeKeyPair } from '../../src/keyFiles.js';
import { loadSigner, type Signer } from '../../src/signing.js';

describe('the start-up check of the attested key', () => {
  let dir: string;
  let signer: Signer;
  let other: Signer;
  const servers: RunningServer[] = [];
  const settings = (url: string) => ({
    attestationUrl: url,
    upstreamTimeoutMs: 1000,
    signerKeyPath: path.join(dir, 'id.sec'),
  });
  // The check's outcome: 'passes' or the StartupError's message.
  const check = (url: string, waitMs?: number) =>
    checkAttestedKey(settings(url), signer, waitMs).then(
      () => 'passes',
      (error: unknown) => {
        expect(error).toBeInstanceOf(StartupError);
        return (error as Error).message;
      },
    );
  const serve = async (server: Promise<RunningServer>) => {
    const running = await server;
    servers.push(running);
    return `${running.url}${rawDocumentPath}`;
  };

  beforeAll(async () => {
    dir = await makeTempDir('oyster-keycheck-');
    await writeKeyPair(path.join(dir, 'id.sec'), path.join(dir, 'id.pub'));
    await writeKeyPair(path.join(dir, 'other.sec'), path.join(dir, 'other.pub'));
    [signer, other] = [await loadSigner(path.join(dir, 'id.sec')), await loadSigner(path.join(dir, 'other.sec'))];
  });
  afterAll(async () => {
    await Promise.all(servers.map((server) => server.close()));
    await removeTempDir(dir);
  });

  test('passes when the document attests the signer’s key, as a server asked for it does', async () => {
    expect(await check(await serve(startAttestationServer()))).toBe('passes');
  });

  test('refuses when the document attests another key, naming both keys and addresses', async () => {
    const message = await check(
      await serve(startAttestationServer({ publicKey: other.publicKey, ignoreRequestedKey: true })),
    );
    expect(message).toContain(other.address);
    expect(message).toContain(signer.address);
    expect(message).toContain(Buffer.from(other.publicKey).toString('hex'));
    expect(message).toContain(Buffer.from(signer.publicKey).toString('hex'));
    expect(message).toContain('ATTESTATION_KEY_CHECK=false');
  });

  test('refuses a document without a public key, and bytes that are not a document', async () => {
    // A server that ignores the public_key asked for and has none of its own.
    const noKey = await serve(
      listen(
        createServer((_request, response) => response.end(makeDevDocument())),
        '127.0.0.1',
        0,
      ),
    );
    expect(await check(noKey)).toMatch(/attests no public key/);
    const garbage = await serve(
      listen(
        createServer((_request, response) => response.end('not cbor')),
        '127.0.0.1',
        0,
      ),
    );
    expect(await check(garbage)).toMatch(/not an attestation document \(cose:/);
  });

  test('waits for an attestation server that is not up yet, and gives up after its wait naming the URL', async () => {
    const port = await getPort({ host: '127.0.0.1' });
    const url = `http://127.0.0.1:${port}${rawDocumentPath}`;
    const late = new Promise<void>((resolve) =>
      setTimeout(() => {
        void serve(startAttestationServer({ port })).then(() => resolve());
      }, 400),
    );
    expect(await check(url, 5000)).toBe('passes');
    await late;
    const never = `http://127.0.0.1:${await getPort({ host: '127.0.0.1' })}${rawDocumentPath}`;
    expect(await check(never, 300)).toMatch(
      new RegExp(`ATTESTATION_URL=${never}: no attestation document within 300 ms`),
    );
  });
});
