import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { secp256k1 } from '@noble/curves/secp256k1.js';

/**
 * Writes a new signing key (a secp256k1 secret key, as the 64 hex digits `openssl rand -hex 32`
 * writes) to signer.key in dir, readable by its owner alone; returns the file's path.
 */
export async function writeSignerKey(dir: string): Promise<string> {
  const keyPath = path.join(dir, 'signer.key');
  await writeFile(keyPath, Buffer.from(secp256k1.utils.randomSecretKey()).toString('hex'), { mode: 0o600 });
  return keyPath;
}
