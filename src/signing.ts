import { type FileHandle, open } from 'node:fs/promises';
import { secp256k1 } from '@noble/curves/secp256k1.js';
import { keccak_256 } from '@noble/hashes/sha3.js';
import { bytesToHex, concatBytes, hexToBytes, utf8ToBytes } from '@noble/hashes/utils.js';
import { StartupError } from './errors.js';

/**
 * Names what is signed and which version of its encoding, so a signature over a result can never
 * pass for a signature over anything else, including a later version of this encoding.
 */
export const signingDomain = 'oyster-serverless/result/v1';
/** The domain of a signature over a whole HTTP exchange with a function (ANY /fn/<code_id>/…). */
export const exchangeSigningDomain = 'oyster-serverless/http/v1';
/** The domain of a signature over a usage claim (POST /admin/claims). */
export const claimSigningDomain = 'oyster-serverless/usage-claim/v1';
/** The headers a signed 200 answer carries. */
export const timestampHeader = 'X-Oyster-Timestamp';
export const signatureHeader = 'X-Oyster-Signature';

const lengthPrefixBytes = 8;
const timestampBytes = 8;
const sha256Bytes = 32;
const secretKeyBytes = 32;
const compactSignatureBytes = 64;
// SEC 1's first byte of an uncompressed point, and what follows it: x || y.
const uncompressedPrefix = 0x04;
const coordinatesBytes = 64;
// Ethereum's convention, which ecrecover and every Ethereum library expect: v = recovery id + 27.
const vOffset = 27;
const addressBytes = 20;
// 0x, 64 hex digits and \r\n: anything longer is not a key file, so it is never read whole.
const maxKeyFileBytes = 68;
const hexKeyFile = /^(?:0x)?([0-9a-fA-F]{64})(?:\r?\n)?$/;
const signatureHex = /^(?:0x)?([0-9a-fA-F]{130})$/;
// A lone UTF-16 surrogate has no UTF-8 encoding (it would become U+FFFD), so two code_ids could
// share one encoding; with the u flag a correctly paired surrogate never matches.
const loneSurrogate = /\p{Surrogate}/u;

/** What a signature over one answer covers. */
export interface SignedFields {
  /** When the answer was made, in unix seconds; sent as X-Oyster-Timestamp. */
  readonly timestamp: number;
  /** The request's code_id. */
  readonly codeId: string;
  /** sha256 of the code that ran (32 bytes). */
  readonly codeSha256: Uint8Array;
  /** The exact bytes sent to the function: the UTF-8 of JSON.stringify(input ?? {}). */
  readonly input: Uint8Array;
  /** The UTF-8 bytes of the answer's `data` string, which is what a client can reconstruct. */
  readonly output: Uint8Array;
}

/** What a signature over one exchange of the HTTP route covers. */
export interface SignedExchange {
  readonly timestamp: number;
  readonly codeId: string;
  readonly codeSha256: Uint8Array;
  /** The request as the function received it: method, path and query (from "/"), body. */
  readonly method: string;
  readonly target: string;
  readonly requestBody: Uint8Array;
  /** The function's answer: status, content-type ("" when it has none), body. */
  readonly status: number;
  readonly contentType: string;
  readonly responseBody: Uint8Array;
}

/** What one code_id used, as a claim states it. */
export interface ClaimedUsage {
  readonly codeId: string;
  readonly invocations: number;
  readonly cpuUs: number;
  readonly wallUs: number;
  readonly bytesIn: number;
  readonly bytesOut: number;
}

/** What a signature over a usage claim covers. */
export interface SignedClaim {
  readonly claimId: number;
  /** The claimant's nonce, as bytes. */
  readonly nonce: Uint8Array;
  /** The claim holds the usage answered before this moment (ms since the epoch) that no earlier claim held. */
  readonly untilMs: number;
  /** Per code_id, in code_id order. */
  readonly codes: readonly ClaimedUsage[];
}

/** Anything this key signs: a result, an exchange, a usage claim. */
export type Signed = SignedFields | SignedExchange | SignedClaim;

/** Signs answers with one secp256k1 key. */
export interface Signer {
  /** The key's Ethereum address, EIP-55 checksummed (0x…). */
  readonly address: string;
  /** The public key as an attestation document carries it: x || y, 64 bytes, without SEC 1's 0x04. */
  readonly publicKey: Uint8Array;
  /** The X-Oyster-Signature value for an answer: 0x-prefixed hex of r || s || v, v 27 or 28. */
  sign(fields: Signed): string;
  /** Both headers of a signed answer, timestamped now. */
  headers(fields: Omit<SignedFields, 'timestamp'> | Omit<SignedExchange, 'timestamp'>): Record<string, string>;
}

/** The exact bytes whose keccak256 is signed; the README's "Signed results" documents them. */
export function signingMessage(fields: Signed): Uint8Array {
  return concatBytes(...messageParts(fields));
}

/** keccak256 of the signed message: what the signature is made over, and what ecrecover takes. */
export function signingDigest(fields: Signed): Uint8Array {
  const hash = keccak_256.create();
  // Hashed part by part: input and output can be a megabyte each, and need not be copied.
  for (const part of messageParts(fields)) hash.update(part);
  return hash.digest();
}

function messageParts(fields: Signed): Uint8Array[] {
  if ('claimId' in fields) return claimParts(fields);
  if (!Number.isSafeInteger(fields.timestamp) || fields.timestamp < 0) {
    throw new RangeError(`timestamp must be a non-negative whole number of seconds, not ${fields.timestamp}`);
  }
  if (fields.codeSha256.length !== sha256Bytes) {
    throw new RangeError(`codeSha256 must be ${sha256Bytes} bytes, not ${fields.codeSha256.length}`);
  }
  if (loneSurrogate.test(fields.codeId))
    throw new RangeError('codeId is not well-formed Unicode (it has a lone surrogate)');
  const exchange = 'method' in fields;
  const domain = utf8ToBytes(exchange ? exchangeSigningDomain : signingDomain);
  const codeId = utf8ToBytes(fields.codeId);
  // Every variable part is preceded by its length, so no two messages share their bytes.
  const prefixed = (bytes: Uint8Array) => [uint64(bytes.length), bytes];
  const rest = exchange
    ? [
        ...prefixed(utf8ToBytes(fields.method)),
        ...prefixed(utf8ToBytes(fields.target)),
        ...prefixed(fields.requestBody),
        uint64(fields.status),
        ...prefixed(utf8ToBytes(fields.contentType)),
        ...prefixed(fields.responseBody),
      ]
    : [...prefixed(fields.input), ...prefixed(fields.output)];
  return [
    ...prefixed(domain),
    uint64(fields.timestamp, timestampBytes),
    ...prefixed(codeId),
    fields.codeSha256,
    ...rest,
  ];
}

// A claim: its domain, id, nonce and moment, then each code_id and its figures, every variable part
// preceded by its length.
function claimParts(claim: SignedClaim): Uint8Array[] {
  const prefixed = (bytes: Uint8Array) => [uint64(bytes.length), bytes];
  return [
    ...prefixed(utf8ToBytes(claimSigningDomain)),
    uint64(claim.claimId),
    ...prefixed(claim.nonce),
    uint64(claim.untilMs),
    uint64(claim.codes.length),
    ...claim.codes.flatMap((code) => [
      ...prefixed(utf8ToBytes(code.codeId)),
      ...[code.invocations, code.cpuUs, code.wallUs, code.bytesIn, code.bytesOut].map((value) => uint64(value)),
    ]),
  ];
}

function uint64(value: number, size = lengthPrefixBytes): Uint8Array {
  const bytes = new Uint8Array(size);
  new DataView(bytes.buffer).setBigUint64(0, BigInt(value));
  return bytes;
}

/** Reads the signing key named by SIGNER_KEY_PATH; any problem with it stops start-up. */
export async function loadSigner(keyPath: string): Promise<Signer> {
  const secretKey = parseSecretKey(await readKeyFile(keyPath), keyPath);
  const publicKey = secp256k1.getPublicKey(secretKey, false);
  const sign = (fields: Signed) => signDigest(signingDigest(fields), secretKey);
  return {
    address: addressOf(publicKey),
    publicKey: publicKey.subarray(1),
    sign,
    headers: (fields) => {
      const timestamp = Math.floor(Date.now() / 1000);
      return { [timestampHeader]: String(timestamp), [signatureHeader]: sign({ ...fields, timestamp }) };
    },
  };
}

async function readKeyFile(keyPath: string): Promise<Uint8Array> {
  let file: FileHandle;
  try {
    file = await open(keyPath, 'r');
  } catch (cause) {
    const code = (cause as NodeJS.ErrnoException).code;
    const problem = code === 'ENOENT' ? 'does not exist' : `cannot be read (${code ?? String(cause)})`;
    throw new StartupError(`SIGNER_KEY_PATH=${keyPath}: the key file ${problem}`, { cause });
  }
  try {
    const stats = await file.stat();
    if (!stats.isFile()) throw new StartupError(`SIGNER_KEY_PATH=${keyPath}: the key file is not a regular file`);
    if (stats.size > maxKeyFileBytes) throw wrongLength(keyPath, stats.size);
    const contents = new Uint8Array(maxKeyFileBytes + 1);
    const { bytesRead } = await file.read(contents, 0, contents.length, 0);
    return contents.subarray(0, bytesRead);
  } catch (cause) {
    if (cause instanceof StartupError) throw cause;
    const code = (cause as NodeJS.ErrnoException).code;
    throw new StartupError(`SIGNER_KEY_PATH=${keyPath}: the key file cannot be read (${code ?? String(cause)})`, {
      cause,
    });
  } finally {
    await file.close();
  }
}

// Raw 32 bytes, or 64 hex digits as `openssl rand -hex 32` writes them. The two cannot be confused:
// a hex file is at least 64 bytes long.
function parseSecretKey(contents: Uint8Array, keyPath: string): Uint8Array {
  let secretKey: Uint8Array;
  if (contents.length === secretKeyBytes) {
    secretKey = contents;
  } else {
    // latin1 maps each byte to one character, so no byte sequence can fail to decode.
    const hex = hexKeyFile.exec(Buffer.from(contents).toString('latin1'))?.[1];
    if (hex === undefined) throw wrongLength(keyPath, contents.length);
    secretKey = hexToBytes(hex);
  }
  if (!secp256k1.utils.isValidSecretKey(secretKey)) {
    throw new StartupError(
      `SIGNER_KEY_PATH=${keyPath}: the key is not a valid secp256k1 secret key (it must be nonzero and less than the curve order n)`,
    );
  }
  return secretKey;
}

// Names the length only: the contents are (or are close to) a secret and never appear in a message.
function wrongLength(keyPath: string, size: number): StartupError {
  return new StartupError(
    `SIGNER_KEY_PATH=${keyPath}: the key file must hold exactly 32 raw bytes or 64 hex digits ` +
      `(optionally 0x-prefixed, with an optional trailing newline); it has ${size} bytes that are neither`,
  );
}

function signDigest(digest: Uint8Array, secretKey: Uint8Array): string {
  // Deterministic (RFC 6979) and low-s, as Ethereum requires; 'recovered' is recovery id || r || s.
  const signature = secp256k1.sign(digest, secretKey, { prehash: false, format: 'recovered' });
  const recovery = signature[0] ?? Number.NaN;
  // Ids 2 and 3 (R.x at least n) have probability about 2^-127 and no Ethereum v; never seen in practice.
  if (recovery !== 0 && recovery !== 1) throw new Error(`cannot express recovery id ${recovery} as an Ethereum v`);
  return `0x${bytesToHex(signature.subarray(1))}${(recovery + vOffset).toString(16)}`;
}

/** Returns the address whose key made a signature over these fields; throws on a malformed signature. */
export function recoverSigner(fields: Signed, signature: string): string {
  const hex = signatureHex.exec(signature.trim())?.[1];
  if (hex === undefined) throw new Error('a signature is 0x and 130 hex digits (r || s || v)');
  const bytes = hexToBytes(hex);
  const v = bytes[compactSignatureBytes] ?? 0;
  if (v !== vOffset && v !== vOffset + 1) throw new Error(`the signature's v must be 27 or 28, not ${v}`);
  const parsed = secp256k1.Signature.fromBytes(bytes.subarray(0, compactSignatureBytes), 'compact').addRecoveryBit(
    v - vOffset,
  );
  // The high-s twin of a signature recovers the same key; refusing it leaves one valid form per answer.
  if (parsed.hasHighS()) throw new Error("the signature's s is in the upper half of the curve order (not low-s)");
  return addressOf(parsed.recoverPublicKey(signingDigest(fields)).toBytes(false));
}

/**
 * The secp256k1 point an attested public key names, SEC 1 uncompressed, or undefined when it names
 * none: 64 bytes x || y (what Marlin's attestation server and verifier use), or any SEC 1 encoding.
 */
export function secp256k1PublicKey(bytes: Uint8Array): Uint8Array | undefined {
  const sec1 = bytes.length === coordinatesBytes ? concatBytes(Uint8Array.of(uncompressedPrefix), bytes) : bytes;
  try {
    return secp256k1.Point.fromBytes(sec1).toBytes(false);
  } catch {
    return undefined;
  }
}

/** The Ethereum address of a secp256k1 public key (any SEC 1 encoding), EIP-55 checksummed. */
export function addressOf(publicKey: Uint8Array): string {
  const uncompressed = secp256k1.Point.fromBytes(publicKey).toBytes(false);
  // The address is the last 20 bytes of keccak256 of x || y, without SEC 1's 0x04 prefix.
  const lower = bytesToHex(keccak_256(uncompressed.subarray(1)).subarray(-addressBytes));
  const hash = bytesToHex(keccak_256(utf8ToBytes(lower)));
  // EIP-55: a letter is upper case where the matching nibble of keccak256(lowercase hex) is 8 or more.
  const checksummed = Array.from(lower, (char, i) =>
    Number.parseInt(hash.charAt(i), 16) >= 8 ? char.toUpperCase() : char,
  );
  return `0x${checksummed.join('')}`;
}
