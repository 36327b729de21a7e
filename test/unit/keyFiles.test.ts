import { readdir, readFile, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, test } from 'vitest';
import { makeTempDir, removeTempDir } from '../../src/dev/tempDir.js';
import { writeKeyPair } from '../../src/keyFiles.js';
import { addressOf, loadSigner, secp256k1PublicKey } from '../../src/signing.js';

describe('writeKeyPair', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await makeTempDir('oyster-keys-');
  });
  afterEach(() => removeTempDir(dir));

  test('writes a secret only its owner can read, that the service loads, and its public key as x || y', async () => {
    const [secret, pub] = [path.join(dir, 'id.sec'), path.join(dir, 'id.pub')];
    const address = await writeKeyPair(secret, pub);
    expect((await stat(secret)).mode & 0o777).toBe(0o600);
    const publicKey = await readFile(pub);
    expect(publicKey).toHaveLength(64);
    const signer = await loadSigner(secret);
    expect(signer.address).toBe(address);
    expect(Buffer.from(signer.publicKey).equals(publicKey)).toBe(true);
    expect(addressOf(secp256k1PublicKey(publicKey)!)).toBe(address);
    // Nothing but the two files: no temporary one left beside them.
    expect((await readdir(dir)).sort()).toEqual(['id.pub', 'id.sec']);
  });

  test('makes a new key at every call, replacing the old files', async () => {
    const [secret, pub] = [path.join(dir, 'id.sec'), path.join(dir, 'id.pub')];
    await writeFile(secret, 'old', { mode: 0o644 });
    const first = await writeKeyPair(secret, pub);
    const second = await writeKeyPair(secret, pub);
    expect(second).not.toBe(first);
    expect((await loadSigner(secret)).address).toBe(second);
    expect((await stat(secret)).mode & 0o777).toBe(0o600);
  });
});
