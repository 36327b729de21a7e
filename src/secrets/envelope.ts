// The CMS EnvelopedData (RFC 5652) that KMS answers a Decrypt with a Recipient in, as
// CiphertextForRecipient: the data key encrypted to the enclave's RSA key with RSAES-OAEP-SHA256,
// the plaintext encrypted with it under AES-256-CBC, in BER with indefinite lengths.
import {
  constants,
  createCipheriv,
  createDecipheriv,
  createHash,
  type KeyObject,
  privateDecrypt,
  publicEncrypt,
  randomBytes,
} from 'node:crypto';
import * as asn1js from 'asn1js';
import {
  AlgorithmIdentifier,
  ContentInfo,
  EncryptedContentInfo,
  EnvelopedData,
  KeyTransRecipientInfo,
  RecipientInfo,
  RSAESOAEPParams,
} from 'pkijs';

const oids = {
  envelopedData: '1.2.840.113549.1.7.3',
  data: '1.2.840.113549.1.7.1',
  rsaesOaep: '1.2.840.113549.1.1.7',
  mgf1: '1.2.840.113549.1.1.8',
  sha256: '2.16.840.1.101.3.4.2.1',
  aes256Cbc: '2.16.840.1.101.3.4.1.42',
} as const;
const oaep = { padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha256' } as const;

/** The parts of an envelope with one RSAES-OAEP recipient and AES-256-CBC content. */
export interface EnvelopeParts {
  readonly encryptedKey: Buffer;
  readonly iv: Buffer;
  readonly ciphertext: Buffer;
}

/** Reads an envelope's parts; throws when it is not one with the algorithms KMS uses. */
export function parseEnvelope(ber: Uint8Array): EnvelopeParts {
  const asn1 = asn1js.fromBER(ber);
  if (asn1.offset === -1) throw new Error(`the envelope is not BER: ${asn1.result.error}`);
  const info = new ContentInfo({ schema: asn1.result });
  if (info.contentType !== oids.envelopedData)
    throw new Error(`the envelope's content is ${info.contentType}, not EnvelopedData`);
  const enveloped = new EnvelopedData({ schema: info.content });
  const [recipient] = enveloped.recipientInfos;
  if (enveloped.recipientInfos.length !== 1 || !(recipient?.value instanceof KeyTransRecipientInfo))
    throw new Error('the envelope does not have exactly one key transport recipient');
  if (recipient.value.keyEncryptionAlgorithm.algorithmId !== oids.rsaesOaep)
    throw new Error('the envelope key is not encrypted with RSAES-OAEP');
  const content = enveloped.encryptedContentInfo;
  if (content.contentEncryptionAlgorithm.algorithmId !== oids.aes256Cbc)
    throw new Error('the envelope content is not encrypted with AES-256-CBC');
  const iv = content.contentEncryptionAlgorithm.algorithmParams as asn1js.OctetString;
  if (!content.encryptedContent) throw new Error('the envelope has no encrypted content');
  return {
    encryptedKey: Buffer.from(recipient.value.encryptedKey.valueBlock.valueHexView),
    iv: Buffer.from(iv.valueBlock.valueHexView),
    // BER may split it into pieces (a constructed OCTET STRING, as KMS sends it): joined here.
    ciphertext: Buffer.from(content.getEncryptedContent()),
  };
}

/** Opens an envelope with the recipient's RSA private key. */
export function openEnvelope(ber: Uint8Array, privateKey: KeyObject): Buffer {
  const { encryptedKey, iv, ciphertext } = parseEnvelope(ber);
  const contentKey = privateDecrypt({ key: privateKey, ...oaep }, encryptedKey);
  const decipher = createDecipheriv('aes-256-cbc', contentKey, iv);
  return Buffer.concat([decipher.update(ciphertext), decipher.final()]);
}

/** Makes an envelope as KMS does, for the development KMS: plaintext to the holder of publicKey (RSA). */
export function makeEnvelope(plaintext: Uint8Array, publicKey: KeyObject): Buffer {
  const [contentKey, iv] = [randomBytes(32), randomBytes(16)];
  const cipher = createCipheriv('aes-256-cbc', contentKey, iv);
  const ciphertext = Buffer.concat([cipher.update(plaintext), cipher.final()]);
  const sha256 = new AlgorithmIdentifier({ algorithmId: oids.sha256, algorithmParams: new asn1js.Null() });
  const recipient = new KeyTransRecipientInfo({
    version: 2,
    // KMS names the recipient by a subject key identifier: here the sha256 of the key's DER.
    rid: new asn1js.OctetString({ valueHex: keyIdentifier(publicKey) }),
    keyEncryptionAlgorithm: new AlgorithmIdentifier({
      algorithmId: oids.rsaesOaep,
      algorithmParams: new RSAESOAEPParams({
        hashAlgorithm: sha256,
        maskGenAlgorithm: new AlgorithmIdentifier({ algorithmId: oids.mgf1, algorithmParams: sha256.toSchema() }),
      }).toSchema(),
    }),
    encryptedKey: new asn1js.OctetString({ valueHex: publicEncrypt({ key: publicKey, ...oaep }, contentKey) }),
  });
  const enveloped = new EnvelopedData({
    version: 2,
    recipientInfos: [new RecipientInfo({ variant: 1, value: recipient })],
    encryptedContentInfo: new EncryptedContentInfo({
      contentType: oids.data,
      contentEncryptionAlgorithm: new AlgorithmIdentifier({
        algorithmId: oids.aes256Cbc,
        algorithmParams: new asn1js.OctetString({ valueHex: iv }),
      }),
      encryptedContent: new asn1js.OctetString({ valueHex: ciphertext }),
    }),
  });
  const info = new ContentInfo({ contentType: oids.envelopedData, content: enveloped.toSchema() });
  return Buffer.from(info.toSchema().toBER(false));
}

function keyIdentifier(publicKey: KeyObject): Buffer {
  return createHash('sha256')
    .update(publicKey.export({ type: 'spki', format: 'der' }))
    .digest();
}
