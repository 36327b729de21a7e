import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { DecryptCommand, KMSClient } from '@aws-sdk/client-kms';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { devPcrs, rawDocumentPath, startAttestationServer } from '../../../src/dev/attestationServer.js';
import { devRootPem } from '../../../src/dev/devAttestationChain.js';
import { devKmsKeyId, startKmsServer } from '../../../src/dev/kmsServer.js';
import type { RunningServer } from '../../../src/dev/listen.js';
import { makeTempDir, removeTempDir } from '../../../src/dev/tempDir.js';
import { generateSealingBlob } from '../../../src/secrets/blob.js';
import { type SealingSettings, sealingFrom } from '../../../src/secrets/release.js';
import { seal } from '../../../src/secrets/sealedValue.js';

const region = 'us-east-1';

// The service's start-up call to KMS, through the real AWS SDK, against the development KMS.
describe('releasing the sealing key', () => {
  let dir: string;
  let attestation: RunningServer;
  let kms: RunningServer;
  let otherImage: RunningServer;
  let settings: SealingSettings & { sealingKmsBlob: string };
  const credentials = {
    AWS_ACCESS_KEY_ID: process.env.AWS_ACCESS_KEY_ID,
    AWS_SECRET_ACCESS_KEY: process.env.AWS_SECRET_ACCESS_KEY,
  };

  beforeAll(async () => {
    Object.assign(process.env, { AWS_ACCESS_KEY_ID: 'development', AWS_SECRET_ACCESS_KEY: 'development' });
    dir = await makeTempDir('oyster-sealing-');
    attestation = await startAttestationServer();
    const policy = (pcr0: Uint8Array) => ({ attestationRootPem: devRootPem, policyPcrs: new Map([[0, pcr0]]) });
    kms = await startKmsServer(policy(devPcrs.get(0)!));
    otherImage = await startKmsServer(policy(new Uint8Array(48).fill(0xee)));
    const blob = await generateSealingBlob({ keyId: devKmsKeyId, region, endpoint: kms.url });
    await writeFile(path.join(dir, 'sealing.blob'), `${blob}\n`);
    settings = {
      sealingKmsBlob: path.join(dir, 'sealing.blob'),
      sealingKmsRegion: region,
      sealingKmsEndpoint: kms.url,
      attestationUrl: `${attestation.url}${rawDocumentPath}`,
      upstreamTimeoutMs: 5000,
    };
  });
  afterAll(async () => {
    await Promise.all([attestation?.close(), kms?.close(), otherImage?.close()]);
    await removeTempDir(dir);
    for (const [name, value] of Object.entries(credentials)) {
      if (value === undefined) delete process.env[name];
      else process.env[name] = value;
    }
  });

  test('gives the same sealing key at every start: a restart, or a second instance, opens what the first could', async () => {
    const [first, second] = [await sealingFrom(settings), await sealingFrom(settings)];
    if (first.state !== 'on' || second.state !== 'on') throw new Error(`sealing is ${first.state}, ${second.state}`);
    expect(second.keyId).toBe(first.keyId);
    expect(second.publicKey).toEqual(first.publicKey);
    // What one seals to, the other opens.
    const sealed = seal(first.publicKey, first.keyId, 'TOKEN', 'same');
    expect(second.open('TOKEN', sealed)).toBe('same');
    // Opened once, the value is kept, but only for its own binding's name.
    expect(second.open('TOKEN', sealed)).toBe('same');
    expect(() => second.open('OTHER', sealed)).toThrow(/another binding/);
  });

  test('a KMS whose policy names another PCR0 releases nothing, and says why', async () => {
    const refused = await sealingFrom({ ...settings, sealingKmsEndpoint: otherImage.url });
    expect(refused.state).toBe('unavailable');
    expect(refused.state === 'unavailable' && refused.reason).toMatch(/does not satisfy the key policy \(pcr: PCR0/);
  });

  test('a changed blob, or a Decrypt without an attestation document, gets nothing', async () => {
    await writeFile(path.join(dir, 'changed.blob'), Buffer.from(`devkms:v1${'x'.repeat(40)}`).toString('base64'));
    const changed = await sealingFrom({ ...settings, sealingKmsBlob: path.join(dir, 'changed.blob') });
    expect(changed.state === 'unavailable' && changed.reason).toMatch(/the blob does not open/);
    const client = new KMSClient({ region, endpoint: kms.url });
    const blob = Buffer.from((await readFile(settings.sealingKmsBlob, 'utf8')).trim(), 'base64');
    await expect(client.send(new DecryptCommand({ CiphertextBlob: blob }))).rejects.toMatchObject({
      name: 'AccessDeniedException',
    });
    client.destroy();
  });
});
