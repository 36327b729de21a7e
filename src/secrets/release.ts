// At start-up: asks KMS to release the image's master secret to this enclave, and derives the
// sealing key from it. KMS decrypts the operator's blob only for a Recipient whose attestation
// document satisfies the key's policy (the release's PCRs), and answers it encrypted to the RSA key
// in that document, which was made here a moment before and never leaves this process.
import { generateKeyPairSync } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { DecryptCommand, KMSClient } from '@aws-sdk/client-kms';
import { fetchAttestation } from '../attestation/fetchAttestation.js';
import type { Config } from '../config.js';
import { openEnvelope } from './envelope.js';
import { unseal } from './sealedValue.js';
import type { Sealing } from './sealing.js';
import { deriveSealingKey, type SealingKey } from './sealingKey.js';

const rsaBits = 2048;
// Sealed values kept opened: 32 secrets each of many uploads, a few hundred KiB at most.
const maxOpenedKept = 1024;

export type SealingSettings = Pick<
  Config,
  'sealingKmsBlob' | 'sealingKmsRegion' | 'sealingKmsEndpoint' | 'attestationUrl' | 'upstreamTimeoutMs'
>;

/**
 * Sealing as this instance can do it: on with the released key, or unavailable with KMS's own
 * words when it refuses (a start that goes on: functions without sealed secrets still run).
 */
export async function sealingFrom(settings: SealingSettings & { sealingKmsBlob: string }): Promise<Sealing> {
  try {
    const key = await releaseSealingKey(settings);
    // Each opening costs a curve multiplication; cached code is opened at every invocation, so the
    // values opened last are kept (with their binding's name, which is part of what was sealed).
    const opened = new Map<string, string>();
    return {
      state: 'on',
      keyId: key.keyId,
      publicKey: key.publicKey,
      open: (name, sealed) => {
        const id = `${name}\n${sealed}`;
        const known = opened.get(id);
        if (known !== undefined) return known;
        const value = unseal(key.secretKey, key.keyId, name, sealed);
        opened.set(id, value);
        if (opened.size > maxOpenedKept) opened.delete(opened.keys().next().value!);
        return value;
      },
    };
  } catch (error) {
    return {
      state: 'unavailable',
      reason: `KMS released no sealing key: ${error instanceof Error ? error.message : String(error)}`,
    };
  }
}

/** The sealing key, released by KMS; throws with KMS's own words when it refuses. */
export async function releaseSealingKey(settings: SealingSettings & { sealingKmsBlob: string }): Promise<SealingKey> {
  const blob = parseBlob(await readFile(settings.sealingKmsBlob, 'utf8'), settings.sealingKmsBlob);
  const { publicKey, privateKey } = generateKeyPairSync('rsa', { modulusLength: rsaBits });
  const document = await fetchAttestation({
    url: settings.attestationUrl,
    publicKey: publicKey.export({ type: 'spki', format: 'der' }),
    timeoutMs: settings.upstreamTimeoutMs,
    signal: new AbortController().signal,
  });
  const kms = new KMSClient({
    region: settings.sealingKmsRegion,
    endpoint: settings.sealingKmsEndpoint,
    maxAttempts: 2,
    requestHandler: { requestTimeout: settings.upstreamTimeoutMs, connectionTimeout: settings.upstreamTimeoutMs },
  });
  try {
    const answer = await kms.send(
      new DecryptCommand({
        CiphertextBlob: blob,
        Recipient: { AttestationDocument: document, KeyEncryptionAlgorithm: 'RSAES_OAEP_SHA_256' },
      }),
    );
    if (!answer.CiphertextForRecipient) throw new Error('KMS answered without CiphertextForRecipient');
    return deriveSealingKey(openEnvelope(answer.CiphertextForRecipient, privateKey));
  } finally {
    kms.destroy();
  }
}

// The blob as `npm run sealing-blob` writes it: base64, one line.
function parseBlob(text: string, file: string): Uint8Array {
  const base64 = text.trim();
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(base64)) throw new Error(`SEALING_KMS_BLOB=${file} does not hold a base64 blob`);
  return Buffer.from(base64, 'base64');
}
