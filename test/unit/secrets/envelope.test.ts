import { generateKeyPairSync } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, expect, test } from 'vitest';
import { makeEnvelope, openEnvelope, parseEnvelope } from '../../../src/secrets/envelope.js';
import { fixturesDir } from '../../helpers/stack.js';

describe('the CMS envelope of a KMS answer for a Recipient', () => {
  test("parses AWS's own sample (BER, indefinite lengths, content in pieces) into the parts AWS's test names", async () => {
    const sample = await readFile(path.join(fixturesDir, 'kms', 'aws-cms-enveloped-data.ber'));
    const parts = parseEnvelope(sample);
    expect(parts.iv.toString('hex')).toBe('688c6d5f7f31b0fecedf09f2e7c99ac9');
    expect(parts.ciphertext).toHaveLength(48);
    expect(parts.ciphertext.subarray(0, 8).toString('hex')).toBe('70e5caaffd49ad24');
    expect(parts.ciphertext.subarray(-4).toString('hex')).toBe('ff19292e');
    expect(parts.encryptedKey).toHaveLength(256);
    expect(parts.encryptedKey.subarray(0, 8).toString('hex')).toBe('a0614593a030ee33');
    expect(parts.encryptedKey.subarray(-3).toString('hex')).toBe('0ab0dd');
  });

  test('opens one made as KMS makes it with the RSA key it was made for, and not with another', () => {
    const recipient = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const stranger = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const secret = Buffer.alloc(32, 7);
    const envelope = makeEnvelope(secret, recipient.publicKey);
    expect(openEnvelope(envelope, recipient.privateKey).equals(secret)).toBe(true);
    expect(() => openEnvelope(envelope, stranger.privateKey)).toThrow();
  });

  test('refuses bytes that are not an envelope', () => {
    expect(() => parseEnvelope(Buffer.from('not ber'))).toThrow();
    expect(() => parseEnvelope(Buffer.from([0x30, 0x03, 0x02, 0x01, 0x00]))).toThrow();
  });
});
