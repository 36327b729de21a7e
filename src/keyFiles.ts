import { randomBytes } from 'node:crypto';
import { rename, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { secp256k1 } from '@noble/curves/secp256k1.js';
import { addressOf } from './signing.js';

const secretMode = 0o600;
const publicMode = 0o644;

/**
 * Writes a fresh secp256k1 key pair: the secret as 32 raw bytes (mode 0600, what SIGNER_KEY_PATH
 * reads), the public key as 64 bytes x || y (what an attestation server attests). Each file is
 * written beside its place and renamed into it, so a reader never sees half a key. Returns the
 * key's Ethereum address.
 */
export async function writeKeyPair(secretPath: string, publicPath: string): Promise<string> {
  const secret = secp256k1.utils.randomSecretKey();
  const publicKey = secp256k1.getPublicKey(secret, false);
  await writeAtomically(secretPath, secret, secretMode);
  await writeAtomically(publicPath, publicKey.subarray(1), publicMode);
  return addressOf(publicKey);
}

async function writeAtomically(file: string, bytes: Uint8Array, mode: number): Promise<void> {
  const temporary = path.join(path.dirname(file), `.${path.basename(file)}.${randomBytes(6).toString('hex')}`);
  try {
    // flag wx: a file made now, with this mode from its first byte, never one that was there.
    await writeFile(temporary, bytes, { mode, flag: 'wx' });
    await rename(temporary, file);
  } catch (error) {
    await rm(temporary, { force: true });
    throw error;
  }
}
