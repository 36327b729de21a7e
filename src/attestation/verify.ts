// Verifies a Nitro attestation document, from the trusted root to its payload, as AWS's
// "attestation process" describes it. Importable by clients: `oyster-serverless/attestation`.
import { createHash, verify, X509Certificate } from 'node:crypto';
import { addressOf, secp256k1PublicKey } from '../signing.js';
import { awsNitroRootPem } from './awsNitroRoot.js';
import {
  type AttestationDocument,
  AttestationError,
  type AttestationPayload,
  decodeAttestation,
  sigStructure,
} from './document.js';

export { awsNitroRootPem, awsNitroRootSha256 } from './awsNitroRoot.js';
export {
  type AttestationCheck,
  type AttestationDocument,
  AttestationError,
  type AttestationPayload,
  attestationChecks,
  decodeAttestation,
} from './document.js';
export { maxDocumentBytes } from './limits.js';

const leafCurve = 'secp384r1';

export interface VerifyOptions {
  /** The root the chain must end at (PEM); AWS's Nitro Enclaves root when unset. */
  readonly rootPem?: string;
  /** The moment every certificate must be valid at, in ms since the epoch; now when unset. */
  readonly atMs?: number;
  /** PCRs that must have these values, by index. */
  readonly pcrs?: ReadonlyMap<number, Uint8Array>;
  /** The nonce the document must carry. */
  readonly nonce?: Uint8Array;
}

/** A document that passed every check: its payload, and the Ethereum address of its public key. */
export interface VerifiedAttestation extends AttestationPayload {
  /** The address of `publicKey` when it is a secp256k1 key (the service's signer), else undefined. */
  readonly signer: string | undefined;
}

/**
 * Checks a document (its raw bytes) and returns what it attests; throws an AttestationError that
 * names the first check that failed (attestationChecks lists them in order).
 */
export function verifyAttestation(bytes: Uint8Array, options: VerifyOptions = {}): VerifiedAttestation {
  return verifyRemembering(new Map(), bytes, options);
}

/**
 * verifyAttestation for a server that checks document after document: it remembers the last
 * chains it verified, so that a further document from the same enclave (the same leaf, cabundle
 * and root) costs one signature check instead of a whole chain's. Validity is checked every time.
 */
export function attestationVerifier(): (bytes: Uint8Array, options?: VerifyOptions) => VerifiedAttestation {
  const chains = new Map<string, readonly X509Certificate[]>();
  return (bytes, options = {}) => verifyRemembering(chains, bytes, options);
}

// Chains already verified, by chainKey, root first and the leaf last.
type VerifiedChains = Map<string, readonly X509Certificate[]>;
const maxRememberedChains = 16;

function verifyRemembering(chains: VerifiedChains, bytes: Uint8Array, options: VerifyOptions): VerifiedAttestation {
  const document = decodeAttestation(bytes);
  const rootPem = options.rootPem ?? awsNitroRootPem;
  const key = chainKey(document, rootPem);
  const known = chains.get(key);
  const leaf = checkSignature(document, known?.at(-1));
  const chain = known ?? checkChain(document, rootPem, leaf);
  if (!known) {
    chains.set(key, chain);
    if (chains.size > maxRememberedChains) chains.delete(chains.keys().next().value!);
  }
  checkValidity(chain, options.atMs ?? Date.now());
  const { payload } = document;
  for (const [index, expected] of options.pcrs ?? []) {
    const actual = payload.pcrs.get(index);
    if (actual === undefined) throw new AttestationError('pcr', `PCR${index} is not in the document`);
    if (!equalBytes(actual, expected))
      throw new AttestationError('pcr', `PCR${index} is ${hex(actual)}, not ${hex(expected)}`);
  }
  if (options.nonce !== undefined && !(payload.nonce && equalBytes(payload.nonce, options.nonce)))
    throw new AttestationError(
      'nonce',
      `the nonce is ${payload.nonce ? hex(payload.nonce) : 'absent'}, not ${hex(options.nonce)}`,
    );
  return { ...payload, signer: signerOf(payload.publicKey) };
}

// Names a chain by everything it is made of (DER is self-delimiting, so the parts cannot run together).
function chainKey(document: AttestationDocument, rootPem: string): string {
  const hash = createHash('sha256').update(rootPem).update(document.payload.certificate);
  for (const certificate of document.payload.cabundle) hash.update(certificate);
  return hash.digest('hex');
}

/** Checks the ES384 signature with the leaf certificate's key (parsed from the document unless given); returns the leaf. */
export function checkSignature(document: AttestationDocument, knownLeaf?: X509Certificate): X509Certificate {
  const leaf = knownLeaf ?? parseCertificate(document.payload.certificate, 'the leaf certificate', 'signature');
  const key = leaf.publicKey;
  if (key.asymmetricKeyType !== 'ec' || key.asymmetricKeyDetails?.namedCurve !== leafCurve)
    throw new AttestationError('signature', 'the leaf certificate has no P-384 key');
  const signed = sigStructure(document.protectedHeader, document.payloadBytes);
  if (!verify('sha384', signed, { key, dsaEncoding: 'ieee-p1363' }, document.signature))
    throw new AttestationError('signature', "the signature does not verify with the leaf certificate's key");
  return leaf;
}

/**
 * Checks that cabundle starts with the trusted root and that each certificate, the leaf last, is
 * issued and signed by the one before it; returns the chain, root first.
 */
export function checkChain(document: AttestationDocument, rootPem: string, leaf?: X509Certificate): X509Certificate[] {
  const root = new X509Certificate(rootPem);
  const [first, ...rest] = document.payload.cabundle.map((der, i) => parseCertificate(der, `cabundle[${i}]`, 'chain'));
  if (!first || !equalBytes(first.raw, root.raw))
    throw new AttestationError('chain', `cabundle does not begin with the trusted root (${nameOf(root)})`);
  const chain = [
    first,
    ...rest,
    leaf ?? parseCertificate(document.payload.certificate, 'the leaf certificate', 'chain'),
  ];
  for (let i = 1; i < chain.length; i++) {
    const [issuer, certificate] = [chain[i - 1]!, chain[i]!];
    const name = i === chain.length - 1 ? 'the leaf certificate' : `cabundle[${i}]`;
    if (!issuer.ca) throw new AttestationError('chain', `the issuer of ${name} is not a certificate authority`);
    if (!certificate.checkIssued(issuer) || !certificate.verify(issuer.publicKey))
      throw new AttestationError('chain', `${name} is not issued and signed by the certificate before it`);
  }
  return chain;
}

function checkValidity(chain: readonly X509Certificate[], atMs: number): void {
  for (const certificate of chain) {
    const [from, to] = [Date.parse(certificate.validFrom), Date.parse(certificate.validTo)];
    if (!(atMs >= from && atMs <= to)) {
      throw new AttestationError(
        'validity',
        `${nameOf(certificate)} is valid from ${new Date(from).toISOString()} to ` +
          `${new Date(to).toISOString()}, not at ${new Date(atMs).toISOString()}`,
      );
    }
  }
}

// A certificate's subject on one line.
const nameOf = (certificate: X509Certificate) => certificate.subject.replaceAll('\n', ', ');

function parseCertificate(der: Uint8Array, name: string, check: 'signature' | 'chain'): X509Certificate {
  try {
    return new X509Certificate(der);
  } catch {
    throw new AttestationError(check, `${name} is not an X.509 certificate`);
  }
}

function signerOf(publicKey: Uint8Array | undefined): string | undefined {
  const key = publicKey && secp256k1PublicKey(publicKey);
  return key && addressOf(key);
}

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(b);
}

function hex(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('hex');
}
