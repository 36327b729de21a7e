import { createHash, hkdfSync } from 'node:crypto';
import { secp256k1 } from '@noble/curves/secp256k1.js';

/** HKDF's info: names what the master secret is turned into, so it can never be reused for anything else. */
export const sealingKeyLabel = 'oyster-serverless/sealing-key/v1';
const keyIdBytes = 8;

/** The key pair secrets are sealed to, the same for every instance of an image. */
export interface SealingKey {
  /** 16 hex digits: the first 8 bytes of sha256 of the compressed public key. */
  readonly keyId: string;
  /** SEC 1 compressed, 33 bytes. */
  readonly publicKey: Uint8Array;
  readonly secretKey: Uint8Array;
}

/**
 * Derives the sealing key pair from the image's master secret: HKDF-SHA256 with no salt and the
 * label as info, 32 bytes taken as the secret key (a counter byte appended to the info and tried
 * again in the vanishing case that they are not a valid secp256k1 key).
 */
export function deriveSealingKey(masterSecret: Uint8Array): SealingKey {
  for (let counter = 0; ; counter++) {
    const info = counter === 0 ? sealingKeyLabel : `${sealingKeyLabel}/${counter}`;
    const secretKey = new Uint8Array(hkdfSync('sha256', masterSecret, new Uint8Array(0), info, 32));
    if (!secp256k1.utils.isValidSecretKey(secretKey)) continue;
    const publicKey = secp256k1.getPublicKey(secretKey, true);
    const keyId = createHash('sha256').update(publicKey).digest().subarray(0, keyIdBytes).toString('hex');
    return { keyId, publicKey, secretKey };
  }
}
