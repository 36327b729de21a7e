// `npm run seal -- …` as a developer runs it, from the build, on saved development documents.
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { devPcrs, makeDevDocument } from '../../src/dev/attestationServer.js';
import { devRootPem } from '../../src/dev/devAttestationChain.js';
import { makeTempDir, removeTempDir } from '../../src/dev/tempDir.js';
import { unseal } from '../../src/secrets/sealedValue.js';
import { sealingUserData } from '../../src/secrets/sealing.js';
import { deriveSealingKey } from '../../src/secrets/sealingKey.js';
import { projectRoot } from '../helpers/projectRoot.js';

const sealCommand = path.join(projectRoot, 'dist/scripts/seal.js');
const key = deriveSealingKey(new Uint8Array(32).fill(9));
const pcr0 = `0=${Buffer.from(devPcrs.get(0)!).toString('hex')}`;

let dir: string;
const file = (name: string) => path.join(dir, name);
const seal = (...args: string[]) =>
  execa(process.execPath, [sealCommand, '--root', file('root.pem'), ...args], { reject: false });

beforeAll(async () => {
  dir = await makeTempDir('oyster-seal-');
  await writeFile(file('root.pem'), devRootPem);
  await writeFile(file('sealing.cbor'), makeDevDocument({ userData: sealingUserData(key) }));
  await writeFile(file('plain.cbor'), makeDevDocument());
});
afterAll(() => removeTempDir(dir));

describe('npm run seal', () => {
  test('npm run verify shows the sealing key a document names', async () => {
    const verify = path.join(projectRoot, 'dist/scripts/verify.js');
    const args = ['--attestation', file('sealing.cbor'), '--root', file('root.pem'), '--json'];
    const shown = JSON.parse((await execa(process.execPath, [verify, ...args])).stdout);
    expect(shown.sealing).toEqual({ key_id: key.keyId, public_key: Buffer.from(key.publicKey).toString('hex') });
  });

  test('prints one line per secret for the secrets file, each opening to its value under its own name only', async () => {
    const result = await seal('--attestation', file('sealing.cbor'), '--pcr', pcr0, 'API_TOKEN=a b=c', 'EMPTY=');
    expect(result.exitCode, result.stderr).toBe(0);
    const lines = result.stdout.trim().split('\n');
    expect(lines).toHaveLength(2);
    const [token, empty] = lines.map((line) => line.slice(line.indexOf('=') + 1));
    expect(lines[0]).toMatch(new RegExp(`^API_TOKEN=sealed:v1:${key.keyId}:`));
    expect(unseal(key.secretKey, key.keyId, 'API_TOKEN', token!)).toBe('a b=c');
    expect(unseal(key.secretKey, key.keyId, 'EMPTY', empty!)).toBe('');
  });

  test('seals nothing for a document that fails a check, or names no sealing key (exit 1)', async () => {
    const wrongPcr = await seal('--attestation', file('sealing.cbor'), '--pcr', `0=${'00'.repeat(48)}`, 'A=b');
    expect(wrongPcr.exitCode).toBe(1);
    expect(wrongPcr.stderr).toContain('fails the check pcr');
    expect(wrongPcr.stdout).toBe('');
    const noKey = await seal('--attestation', file('plain.cbor'), '--pcr', pcr0, 'A=b');
    expect(noKey.exitCode).toBe(1);
    expect(noKey.stderr).toContain('names no sealing key');
  });

  test.each([
    ['no --pcr', ['--attestation', 'x.cbor', 'A=b'], 'give the PCRs'],
    ['no secret', ['--attestation', 'x.cbor', '--pcr', '0=00'], 'at least one NAME=value'],
    ['a name that is no identifier', ['--attestation', 'x.cbor', '--pcr', '0=00', '1A=b'], 'is not NAME=value'],
  ])('exits 2 on %s', async (_name, args, message) => {
    const result = await seal(...args);
    expect(result.exitCode).toBe(2);
    expect(result.stderr).toContain(message);
  });
});
