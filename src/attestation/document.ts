import { type DecodeOptions, decodeFirst, encode } from 'cborg';
import {
  maxCertificateBytes,
  maxDocumentBytes,
  maxNonceBytes,
  maxPcrs,
  maxPublicKeyBytes,
  maxUserDataBytes,
} from './limits.js';

// COSE's tag for COSE_Sign1 (RFC 9052), which a document may or may not carry.
const coseSign1Tag = 18;
// Protected header {1 (alg): -35 (ES384)}.
const algorithmLabel = 1;
const es384 = -35;
// r || s, 48 bytes each.
const es384SignatureBytes = 96;
const pcrLengths = new Set([32, 48, 64]);

/** Every check a document can fail, in the order the verifier makes them, with what it checks. */
export const attestationChecks = {
  size: `the document is at most ${maxDocumentBytes} bytes`,
  cose: 'the document is one COSE_Sign1 structure (tagged or not) with an ES384 protected header',
  payload: 'the payload has every field of a Nitro document, each of its type and size',
  signature: "the ES384 signature over the Sig_structure verifies with the leaf certificate's key",
  chain: 'the leaf certificate chains through cabundle to the trusted root',
  validity: 'every certificate of the chain is valid at the given moment',
  pcr: 'each PCR asked for has the expected value',
  nonce: 'the nonce is the expected one',
  public_key: 'the attested public key is the expected one',
} as const;

/** The name of one check: what a failure names. */
export type AttestationCheck = keyof typeof attestationChecks;

/** A document that fails a check: `check` names which, the message says why. */
export class AttestationError extends Error {
  override readonly name = 'AttestationError';
  constructor(
    readonly check: AttestationCheck,
    detail: string,
  ) {
    super(`${check}: ${detail}`);
  }
}

/** The fields of a Nitro attestation document's payload. */
export interface AttestationPayload {
  readonly moduleId: string;
  readonly digest: string;
  /** When the Nitro Secure Module made it, in ms since the epoch. */
  readonly timestamp: number;
  /** Index to value; as many as the module reports (16 in older documents, more in newer ones). */
  readonly pcrs: ReadonlyMap<number, Uint8Array>;
  /** The leaf certificate (DER) whose key signed the document. */
  readonly certificate: Uint8Array;
  /** The certificates from the root (first) to the one that issued the leaf (last), DER. */
  readonly cabundle: readonly Uint8Array[];
  readonly publicKey: Uint8Array | undefined;
  readonly userData: Uint8Array | undefined;
  readonly nonce: Uint8Array | undefined;
}

/** A decoded document: the COSE_Sign1 parts as they were sent, and the payload's fields. */
export interface AttestationDocument {
  readonly protectedHeader: Uint8Array;
  /** The payload's exact bytes, which the signature covers. */
  readonly payloadBytes: Uint8Array;
  readonly signature: Uint8Array;
  readonly payload: AttestationPayload;
}

const decodeOptions: DecodeOptions = {
  useMaps: true,
  rejectDuplicateMapKeys: true,
  allowUndefined: false,
  tags: { [coseSign1Tag]: (inner) => inner() },
};

/** Decodes a document and checks its structure and fields; throws an AttestationError naming the first that fails. */
export function decodeAttestation(bytes: Uint8Array): AttestationDocument {
  if (bytes.length > maxDocumentBytes)
    throw new AttestationError('size', `it has ${bytes.length} bytes, more than ${maxDocumentBytes}`);
  const cose = decodeOne(bytes, 'cose');
  if (!Array.isArray(cose) || cose.length !== 4) throw new AttestationError('cose', 'not a COSE_Sign1 array of four');
  const [protectedHeader, unprotected, payloadBytes, signature] = cose as unknown[];
  if (!(protectedHeader instanceof Uint8Array)) throw new AttestationError('cose', 'the protected header is not bytes');
  if (!(unprotected instanceof Map)) throw new AttestationError('cose', 'the unprotected header is not a map');
  if (!(payloadBytes instanceof Uint8Array)) throw new AttestationError('cose', 'the payload is not bytes');
  if (!(signature instanceof Uint8Array) || signature.length !== es384SignatureBytes)
    throw new AttestationError('cose', `the signature is not ${es384SignatureBytes} bytes`);
  const header = decodeOne(protectedHeader, 'cose');
  if (!(header instanceof Map) || header.get(algorithmLabel) !== es384)
    throw new AttestationError('cose', 'the protected header does not name ES384 ({1: -35})');
  return { protectedHeader, payloadBytes, signature, payload: readPayload(decodeOne(payloadBytes, 'payload')) };
}

/** The bytes an ES384 COSE_Sign1 signature covers (RFC 9052 Sig_structure, no external data). */
export function sigStructure(protectedHeader: Uint8Array, payloadBytes: Uint8Array): Uint8Array {
  return encode(['Signature1', protectedHeader, new Uint8Array(0), payloadBytes]);
}

function decodeOne(bytes: Uint8Array, check: 'cose' | 'payload'): unknown {
  let decoded: [unknown, Uint8Array];
  try {
    decoded = decodeFirst(bytes, decodeOptions);
  } catch (error) {
    throw new AttestationError(check, `not valid CBOR (${(error as Error).message})`);
  }
  const [value, rest] = decoded;
  if (rest.length > 0) throw new AttestationError(check, `${rest.length} bytes follow the CBOR item`);
  return value;
}

function readPayload(payload: unknown): AttestationPayload {
  if (!(payload instanceof Map)) throw new AttestationError('payload', 'the payload is not a map');
  const field = (name: string) => payload.get(name) as unknown;
  const moduleId = field('module_id');
  if (typeof moduleId !== 'string' || moduleId === '') throw wrongField('module_id', 'a non-empty text');
  const digest = field('digest');
  if (digest !== 'SHA384') throw wrongField('digest', '"SHA384"');
  const timestamp = field('timestamp');
  if (typeof timestamp !== 'number' || !Number.isSafeInteger(timestamp) || timestamp <= 0)
    throw wrongField('timestamp', 'a positive whole number of ms');
  return {
    moduleId,
    digest,
    timestamp,
    pcrs: readPcrs(field('pcrs')),
    certificate: bytesField('certificate', field('certificate'), 1, maxCertificateBytes),
    cabundle: readCabundle(field('cabundle')),
    publicKey: optionalBytes('public_key', field('public_key'), 1, maxPublicKeyBytes),
    userData: optionalBytes('user_data', field('user_data'), 0, maxUserDataBytes),
    nonce: optionalBytes('nonce', field('nonce'), 0, maxNonceBytes),
  };
}

function readPcrs(pcrs: unknown): ReadonlyMap<number, Uint8Array> {
  if (!(pcrs instanceof Map) || pcrs.size === 0 || pcrs.size > maxPcrs)
    throw wrongField('pcrs', `a map of 1 to ${maxPcrs} PCRs`);
  for (const [index, value] of pcrs) {
    if (typeof index !== 'number' || !Number.isInteger(index) || index < 0 || index >= maxPcrs)
      throw wrongField('pcrs', `indices from 0 to ${maxPcrs - 1}, not ${String(index)}`);
    if (!(value instanceof Uint8Array) || !pcrLengths.has(value.length))
      throw wrongField(`pcrs[${index}]`, 'bytes of length 32, 48 or 64');
  }
  return pcrs as Map<number, Uint8Array>;
}

function readCabundle(cabundle: unknown): readonly Uint8Array[] {
  if (!Array.isArray(cabundle) || cabundle.length === 0) throw wrongField('cabundle', 'a non-empty array');
  return cabundle.map((certificate, i) => bytesField(`cabundle[${i}]`, certificate, 1, maxCertificateBytes));
}

function bytesField(name: string, value: unknown, min: number, max: number): Uint8Array {
  if (!(value instanceof Uint8Array) || value.length < min || value.length > max)
    throw wrongField(name, `bytes, ${min} to ${max} of them`);
  return value;
}

// Absent and null both mean "none", as the Nitro Secure Module writes them.
function optionalBytes(name: string, value: unknown, min: number, max: number): Uint8Array | undefined {
  return value === undefined || value === null ? undefined : bytesField(name, value, min, max);
}

function wrongField(name: string, expected: string): AttestationError {
  return new AttestationError('payload', `${name} must be ${expected}`);
}
