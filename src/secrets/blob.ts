import { GenerateDataKeyCommand, KMSClient } from '@aws-sdk/client-kms';

const masterSecretBytes = 32;

export interface BlobOptions {
  /** The KMS key whose policy releases the secret to the release's PCRs only. */
  readonly keyId: string;
  readonly region: string;
  /** KMS's URL when it is not the region's own. */
  readonly endpoint?: string;
}

/**
 * Makes an image's master secret, once: KMS's GenerateDataKey of 32 bytes. Only the CiphertextBlob
 * is kept (base64); the plaintext is dropped here, so that from then on only KMS, for an attested
 * enclave, can turn the blob back into the secret.
 */
export async function generateSealingBlob(options: BlobOptions): Promise<string> {
  const kms = new KMSClient({ region: options.region, endpoint: options.endpoint });
  try {
    const answer = await kms.send(
      new GenerateDataKeyCommand({ KeyId: options.keyId, NumberOfBytes: masterSecretBytes }),
    );
    if (!answer.CiphertextBlob) throw new Error('KMS answered without a CiphertextBlob');
    answer.Plaintext?.fill(0);
    return Buffer.from(answer.CiphertextBlob).toString('base64');
  } finally {
    kms.destroy();
  }
}
