// A secret sealed to an image's sealing key, as a developer puts it in wrangler's secrets file:
//   sealed:v1:<key id>:<base64 of the ECIES ciphertext>
// The ciphertext is eciesjs's default over secp256k1 (what Marlin's Rust `ecies` reads too), of
// the UTF-8 JSON {"name": <binding>, "value": <secret>}: the name inside keeps a ciphertext from
// being moved to another binding.
import { createDecipheriv, hkdfSync } from 'node:crypto';
import { secp256k1 } from '@noble/curves/secp256k1.js';
import { encrypt } from 'eciesjs';
import { armorPrefix, UnsealError } from './sealing.js';

const armored = /^sealed:v1:([0-9a-f]{16}):([A-Za-z0-9+/]+={0,2})$/;

/** Seals value for the binding name to a sealing public key (SEC 1, compressed or not) named by keyId. */
export function seal(publicKey: Uint8Array, keyId: string, name: string, value: string): string {
  const plaintext = Buffer.from(JSON.stringify({ name, value }), 'utf8');
  return `${armorPrefix}${keyId}:${Buffer.from(encrypt(publicKey, plaintext)).toString('base64')}`;
}

// eciesjs's default layout: ephemeral public key (uncompressed) || nonce || tag || ciphertext.
const [ephemeralKeyBytes, nonceBytes, tagBytes, aesKeyBytes] = [65, 16, 16, 32];

// eciesjs's decrypt, with the curve's one multiplication by noble and the rest by OpenSSL: it is on
// the invocation path, where eciesjs's own costs about five times as much. The AES key is
// HKDF-SHA256 (no salt, no info) of the ephemeral key and the shared point, both uncompressed.
function decrypt(secretKey: Uint8Array, sealed: Buffer): Buffer {
  const ephemeral = sealed.subarray(0, ephemeralKeyBytes);
  const nonce = sealed.subarray(ephemeralKeyBytes, ephemeralKeyBytes + nonceBytes);
  const tag = sealed.subarray(ephemeralKeyBytes + nonceBytes, ephemeralKeyBytes + nonceBytes + tagBytes);
  const ciphertext = sealed.subarray(ephemeralKeyBytes + nonceBytes + tagBytes);
  const shared = secp256k1.getSharedSecret(secretKey, ephemeral, false);
  const key = Buffer.from(
    hkdfSync('sha256', Buffer.concat([ephemeral, shared]), new Uint8Array(0), new Uint8Array(0), aesKeyBytes),
  );
  const decipher = createDecipheriv('aes-256-gcm', key, nonce);
  decipher.setAuthTag(tag);
  return Buffer.concat([decipher.update(ciphertext), decipher.final()]);
}

/** Opens a sealed value of the binding name with the sealing secret key named keyId; throws an UnsealError. */
export function unseal(secretKey: Uint8Array, keyId: string, name: string, sealed: string): string {
  const match = armored.exec(sealed);
  if (!match) throw new UnsealError('malformed');
  if (match[1] !== keyId) throw new UnsealError('another key');
  let opened: unknown;
  try {
    opened = JSON.parse(decrypt(secretKey, Buffer.from(match[2]!, 'base64')).toString('utf8'));
  } catch {
    throw new UnsealError('tampered');
  }
  const { name: sealedFor, value } = (opened ?? {}) as { name?: unknown; value?: unknown };
  if (typeof value !== 'string') throw new UnsealError('tampered');
  if (sealedFor !== name) throw new UnsealError('another binding');
  return value;
}
