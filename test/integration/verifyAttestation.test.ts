// `npm run verify -- --attestation …` as a client runs it, on the real Nitro documents in
// test/fixtures/nitro/ and on development ones, from the build in dist/.
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { awsNitroRootPem } from '../../src/attestation/awsNitroRoot.js';
import { makeDevDocument } from '../../src/dev/attestationServer.js';
import { devRootPem } from '../../src/dev/devAttestationChain.js';
import { makeTempDir, removeTempDir } from '../../src/dev/tempDir.js';
import { addressOf, secp256k1PublicKey } from '../../src/signing.js';
import { fixturesDir } from '../helpers/stack.js';
import { runVerify } from '../helpers/verifyCommand.js';

const nitro = (name: string) => path.join(fixturesDir, 'nitro', name);
const veracruz = nitro('veracruz-euw1-2022.cbor');
const veracruzAt = '2022-11-09T22:52:00.696Z';
const veracruzPcr0 = '22f9e1c949208da55eb01b9b9fc88f87454f77ba133f0d82320b509621c92482152a99d0a12335b97178c02d6f977d01';
const failedExit = 1;
const usageExit = 2;

let dir: string;
beforeAll(async () => {
  dir = await makeTempDir('verify-attestation-');
});
afterAll(() => removeTempDir(dir));

describe('npm run verify -- --attestation', () => {
  test('prints what a real document attests as one JSON object, checked at its own time (ISO 8601 or unix ms)', async () => {
    for (const at of [veracruzAt, String(Date.parse(veracruzAt))]) {
      const result = await runVerify('--attestation', veracruz, '--at', at, '--pcr', `0=${veracruzPcr0}`, '--json');
      expect(result.exitCode, result.stderr).toBe(0);
      const attested = JSON.parse(result.stdout) as Record<string, unknown>;
      expect(attested).toMatchObject({
        module_id: 'i-04fd167167daacf3b-enc01845e97d0b3eb4e',
        timestamp: Date.parse(veracruzAt),
        digest: 'SHA384',
        public_key: null,
        nonce: 'c678c86135de539d183acff58886d98dfb9823041af9f934bf909ac0f8d96245',
        user_data: '7c37108079b3e8a36d8a7970de1d6d4ff1461e0e35d9557c4d789df5e0576620',
        signer: null,
      });
      expect((attested.pcrs as Record<string, string>)['0']).toBe(veracruzPcr0);
    }
  });

  test.each([
    ['today, expired', [veracruz], 'validity'],
    ['a changed signature', [nitro('veracruz-euw1-2022-badsig.cbor'), '--at', veracruzAt], 'signature'],
    ['another PCR0', [veracruz, '--at', veracruzAt, '--pcr', `0=${'00'.repeat(48)}`], 'pcr'],
    ['another nonce', [veracruz, '--at', veracruzAt, '--nonce', 'abcd'], 'nonce'],
  ])('exits 1 naming the check for %s', async (_name, args, check) => {
    const result = await runVerify('--attestation', ...args);
    expect(result.exitCode).toBe(failedExit);
    expect(result.stderr).toContain(`fails the check ${check}:`);
  });

  test('exits 1 on a chain to another root, and on a file of several megabytes (refused by its size)', async () => {
    const rootFile = path.join(dir, 'dev-root.pem');
    await writeFile(rootFile, devRootPem);
    const otherRoot = await runVerify('--attestation', veracruz, '--at', veracruzAt, '--root', rootFile);
    expect(otherRoot.exitCode).toBe(failedExit);
    expect(otherRoot.stderr).toContain('fails the check chain:');
    const huge = path.join(dir, 'huge.cbor');
    await writeFile(huge, Buffer.alloc(5 * 1024 * 1024, 0xa0));
    const tooLarge = await runVerify('--attestation', huge);
    expect(tooLarge.exitCode).toBe(failedExit);
    expect(tooLarge.stderr).toContain('fails the check size: it has 5242880 bytes');
  });

  test('names the signer of a development document with a secp256k1 key, verified against the development root', async () => {
    const rootFile = path.join(dir, 'dev-root.pem');
    await writeFile(rootFile, devRootPem);
    const publicKey = secp256k1PublicKey(new Uint8Array(Buffer.from(generatorPoint, 'hex')))!;
    const document = path.join(dir, 'dev.cbor');
    await writeFile(document, makeDevDocument({ publicKey: publicKey.subarray(1) }));
    const result = await runVerify('--attestation', document, '--root', rootFile, '--json');
    expect(result.exitCode, result.stderr).toBe(0);
    expect(JSON.parse(result.stdout).signer).toBe(addressOf(publicKey));
    // Without --root it is checked against AWS's, and fails.
    expect((await runVerify('--attestation', document)).stderr).toContain('fails the check chain:');
  });

  test.each([
    ['--at', ['--at', 'yesterday'], '--at is unix ms or an ISO 8601 date'],
    ['--pcr', ['--pcr', 'zero'], '--pcr is <index>=<hex>'],
    ['--nonce', ['--nonce', 'xyz'], '--nonce must be bytes in hex'],
    ['--root', ['--root', veracruz], 'is not a PEM certificate'],
  ])('exits 2 on a bad %s', async (_name, args, message) => {
    const result = await runVerify('--attestation', veracruz, ...args);
    expect(result.exitCode).toBe(usageExit);
    expect(result.stderr).toContain(message);
  });

  test("the package exports the same checks for a client's own code", async () => {
    const { verifyAttestation, awsNitroRootPem: exported } = await import('oyster-serverless/attestation');
    expect(exported).toBe(awsNitroRootPem);
    expect(verifyAttestation(await readFile(veracruz), { atMs: Date.parse(veracruzAt) }).moduleId).toMatch(/^i-/);
  });
});

// The public key of the secret key 1, the curve's generator G (compressed): a valid secp256k1 key.
const generatorPoint = '0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798';
