// A development stand-in for AWS KMS: the two calls of its JSON 1.1 API that sealing uses,
// GenerateDataKey and Decrypt (POST /, X-Amz-Target: TrentService.<call>), so that the same
// @aws-sdk/client-kms code runs against it. Like a KMS key whose policy allows Decrypt only with
// kms:RecipientAttestation:PCR<n> conditions, it releases a data key only to a Recipient whose
// attestation document verifies against its root and has the policy's PCRs, in a CMS envelope for
// the document's RSA key. Request signatures (SigV4) are not checked.
import {
  createCipheriv,
  createDecipheriv,
  createHash,
  createPublicKey,
  type KeyObject,
  randomBytes,
} from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { AttestationError, attestationVerifier } from '../attestation/verify.js';
import { makeEnvelope } from '../secrets/envelope.js';
import { listen, type RunningServer } from './listen.js';

/** The development key's id, as a key ARN. */
export const devKmsKeyId = 'arn:aws:kms:us-east-1:000000000000:key/00000000-0000-4000-8000-000000000000';
// Fixed, so that a blob made once opens on every later run of the development stack.
const devKeyMaterial = createHash('sha256').update('oyster-serverless development KMS key').digest();
const blobMagic = Buffer.from('devkms:v1');
const [ivBytes, tagBytes] = [12, 16];
const maxRequestBytes = 256 * 1024;
const dataKeyBytes = { AES_256: 32, AES_128: 16 } as const;

export interface KmsServerOptions {
  readonly host?: string;
  /** 0 picks a free port. */
  readonly port?: number;
  /** The root a Recipient's attestation document must chain to (PEM). */
  readonly attestationRootPem: string;
  /** The PCRs a Recipient's document must have, as the key policy's conditions name them. */
  readonly policyPcrs: ReadonlyMap<number, Uint8Array>;
}

/** A failure as KMS answers it: a 400 whose __type the SDK turns into the error's name. */
class KmsError extends Error {
  constructor(
    readonly type: string,
    message: string,
  ) {
    super(message);
  }
}

/** Starts the development KMS; its URL is the SDK's endpoint. */
export function startKmsServer(options: KmsServerOptions): Promise<RunningServer> {
  const verify = attestationVerifier();
  const calls: Record<string, (body: Record<string, unknown>) => Record<string, unknown>> = {
    'TrentService.GenerateDataKey': (body) => {
      const bytes = body.NumberOfBytes ?? dataKeyBytes[body.KeySpec as keyof typeof dataKeyBytes] ?? undefined;
      if (typeof bytes !== 'number' || !Number.isInteger(bytes) || bytes < 1 || bytes > 1024)
        throw new KmsError('ValidationException', 'give NumberOfBytes (1 to 1024) or KeySpec AES_256 or AES_128');
      const plaintext = randomBytes(bytes);
      return {
        KeyId: devKmsKeyId,
        Plaintext: plaintext.toString('base64'),
        CiphertextBlob: sealBlob(plaintext).toString('base64'),
      };
    },
    'TrentService.Decrypt': (body) => {
      const plaintext = openBlob(Buffer.from(String(body.CiphertextBlob ?? ''), 'base64'));
      const recipient = body.Recipient as
        | { AttestationDocument?: unknown; KeyEncryptionAlgorithm?: unknown }
        | undefined;
      if (typeof recipient?.AttestationDocument !== 'string')
        throw new KmsError(
          'AccessDeniedException',
          'the key policy allows Decrypt only with a Recipient attestation document',
        );
      if (recipient.KeyEncryptionAlgorithm !== 'RSAES_OAEP_SHA_256')
        throw new KmsError('ValidationException', 'KeyEncryptionAlgorithm must be RSAES_OAEP_SHA_256');
      let publicKey: Uint8Array | undefined;
      try {
        publicKey = verify(Buffer.from(recipient.AttestationDocument, 'base64'), {
          rootPem: options.attestationRootPem,
          pcrs: options.policyPcrs,
        }).publicKey;
      } catch (error) {
        if (!(error instanceof AttestationError)) throw error;
        throw new KmsError(
          'AccessDeniedException',
          `the Recipient's attestation does not satisfy the key policy (${error.message})`,
        );
      }
      const rsa = publicKey && rsaKeyOf(publicKey);
      if (!rsa) throw new KmsError('ValidationException', "the attestation document's public_key is not an RSA key");
      return {
        KeyId: devKmsKeyId,
        CiphertextForRecipient: makeEnvelope(plaintext, rsa).toString('base64'),
        EncryptionAlgorithm: 'SYMMETRIC_DEFAULT',
      };
    },
  };
  const server = createServer((request, response) => {
    handle(calls, request, response).catch((error: unknown) => {
      const failure = error instanceof KmsError ? error : new KmsError('InternalException', String(error));
      answer(response, 400, { __type: failure.type, message: failure.message });
    });
  });
  return listen(server, options.host ?? '127.0.0.1', options.port ?? 0);
}

async function handle(
  calls: Record<string, (body: Record<string, unknown>) => Record<string, unknown>>,
  request: IncomingMessage,
  response: ServerResponse,
): Promise<void> {
  const call = calls[String(request.headers['x-amz-target'])];
  if (request.method !== 'POST' || !call)
    throw new KmsError('UnknownOperationException', 'not a call this stand-in answers');
  let text = '';
  for await (const chunk of request) {
    text += String(chunk);
    if (text.length > maxRequestBytes) throw new KmsError('ValidationException', 'the request is too large');
  }
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    throw new KmsError('SerializationException', 'the body is not JSON');
  }
  answer(response, 200, call((body ?? {}) as Record<string, unknown>));
}

function answer(response: ServerResponse, status: number, body: unknown): void {
  response.writeHead(status, { 'content-type': 'application/x-amz-json-1.1' }).end(JSON.stringify(body));
}

function rsaKeyOf(der: Uint8Array): KeyObject | undefined {
  try {
    const key = createPublicKey({ key: Buffer.from(der), format: 'der', type: 'spki' });
    return key.asymmetricKeyType === 'rsa' ? key : undefined;
  } catch {
    return undefined;
  }
}

// A blob: the magic, then AES-256-GCM of the data key under the development key (iv, tag, ciphertext).
function sealBlob(plaintext: Buffer): Buffer {
  const iv = randomBytes(ivBytes);
  const cipher = createCipheriv('aes-256-gcm', devKeyMaterial, iv);
  const ciphertext = Buffer.concat([cipher.update(plaintext), cipher.final()]);
  return Buffer.concat([blobMagic, iv, cipher.getAuthTag(), ciphertext]);
}

function openBlob(blob: Buffer): Buffer {
  if (!blob.subarray(0, blobMagic.length).equals(blobMagic))
    throw new KmsError('InvalidCiphertextException', 'not a blob of this KMS');
  const at = blobMagic.length;
  try {
    const decipher = createDecipheriv('aes-256-gcm', devKeyMaterial, blob.subarray(at, at + ivBytes));
    decipher.setAuthTag(blob.subarray(at + ivBytes, at + ivBytes + tagBytes));
    return Buffer.concat([decipher.update(blob.subarray(at + ivBytes + tagBytes)), decipher.final()]);
  } catch {
    throw new KmsError('InvalidCiphertextException', 'the blob does not open');
  }
}
