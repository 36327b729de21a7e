import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { decode, encode } from 'cborg';
import { describe, expect, test } from 'vitest';
import {
  type AttestationCheck,
  AttestationError,
  attestationVerifier,
  awsNitroRootPem,
  awsNitroRootSha256,
  checkChain,
  decodeAttestation,
  maxDocumentBytes,
  type VerifyOptions,
  verifyAttestation,
} from '../../../src/attestation/verify.js';
import { devPcrs, makeDevDocument } from '../../../src/dev/attestationServer.js';
import { devRootPem } from '../../../src/dev/devAttestationChain.js';
import { fixturesDir } from '../../helpers/stack.js';

const nitro = (name: string) => readFile(path.join(fixturesDir, 'nitro', name));
const veracruz = await nitro('veracruz-euw1-2022.cbor');
const veracruzBadSignature = await nitro('veracruz-euw1-2022-badsig.cbor');
const baseOp = await nitro('base-op-enclave-aps1-2024.cbor');
// Each document's own timestamp, at which its three-hour leaf certificate is valid.
const veracruzAt = 1668034320696;
const baseOpAt = 1708930921439;
const veracruzPcr0 = '22f9e1c949208da55eb01b9b9fc88f87454f77ba133f0d82320b509621c92482152a99d0a12335b97178c02d6f977d01';
const veracruzNonce = 'c678c86135de539d183acff58886d98dfb9823041af9f934bf909ac0f8d96245';
const hex = (value: string) => new Uint8Array(Buffer.from(value, 'hex'));

// The check a document fails with the given verifier, or 'passes'.
function outcome(
  bytes: Uint8Array,
  options: VerifyOptions,
  verify: typeof verifyAttestation = verifyAttestation,
): AttestationCheck | 'passes' {
  try {
    verify(bytes, options);
    return 'passes';
  } catch (error) {
    if (error instanceof AttestationError) return error.check;
    throw error;
  }
}

// A real document with its payload changed by `change` (a decoded map), re-encoded, the signature kept.
function withPayload(bytes: Uint8Array, change: (payload: Map<string, unknown>) => void): Uint8Array {
  const [protectedHeader, unprotected, payload, signature] = decode(bytes, { useMaps: true }) as unknown[];
  const fields = decode(payload as Uint8Array, { useMaps: true }) as Map<string, unknown>;
  change(fields);
  return encode([protectedHeader, unprotected, encode(fields), signature]);
}

describe('AWS Nitro root', () => {
  test('is the certificate whose SHA-256 fingerprint AWS publishes, and the one in real documents', () => {
    const der = Buffer.from(awsNitroRootPem.replace(/-----[A-Z ]+-----|\s/g, ''), 'base64');
    expect(createHash('sha256').update(der).digest('hex')).toBe(awsNitroRootSha256);
    expect(Buffer.from(decodeAttestation(veracruz).payload.cabundle[0]!).equals(der)).toBe(true);
  });
});

describe('verifyAttestation on real Nitro documents', () => {
  test('both verify with the AWS root at their own timestamps and report what they attest', () => {
    const attested = verifyAttestation(veracruz, { atMs: veracruzAt });
    expect(attested.moduleId).toBe('i-04fd167167daacf3b-enc01845e97d0b3eb4e');
    expect(attested.timestamp).toBe(veracruzAt);
    expect(Buffer.from(attested.pcrs.get(0)!).toString('hex')).toBe(veracruzPcr0);
    expect(Buffer.from(attested.nonce!).toString('hex')).toBe(veracruzNonce);
    expect(attested.publicKey).toBeUndefined();
    const other = verifyAttestation(baseOp, { atMs: baseOpAt });
    expect(Buffer.from(other.userData!).toString()).toBe('{"total_memory":2091298816,"total_cpus":1}');
    // A 32-byte key is not a secp256k1 key: it has no Ethereum address.
    expect(other.publicKey).toHaveLength(32);
    expect(other.signer).toBeUndefined();
  });

  test('both fail as expired today, and by default the moment is now', () => {
    expect(outcome(veracruz, {})).toBe('validity');
    expect(outcome(baseOp, {})).toBe('validity');
    expect(outcome(baseOp, { atMs: Date.parse('2026-12-07T00:00:00Z') })).toBe('validity');
    // A moment before the leaf was issued fails too.
    expect(outcome(veracruz, { atMs: veracruzAt - 24 * 3600 * 1000 })).toBe('validity');
  });

  test('the document with a changed signature byte fails on the signature, while its chain still holds', () => {
    expect(outcome(veracruzBadSignature, { atMs: veracruzAt })).toBe('signature');
    expect(checkChain(decodeAttestation(veracruzBadSignature), awsNitroRootPem)).toHaveLength(5);
  });

  test('a changed payload byte fails the signature', () => {
    const changed = Uint8Array.from(veracruz);
    const at = Buffer.from(changed).indexOf(Buffer.from('i-04fd167167daacf3b'));
    changed[at + 2] = '1'.charCodeAt(0);
    expect(outcome(changed, { atMs: veracruzAt })).toBe('signature');
  });

  test('a chain that does not end at the trusted root fails on the chain', () => {
    expect(outcome(veracruz, { atMs: veracruzAt, rootPem: devRootPem })).toBe('chain');
    // A cabundle with its intermediate removed no longer links the leaf to the root.
    const broken = withPayload(veracruz, (payload) => {
      const bundle = payload.get('cabundle') as Uint8Array[];
      payload.set('cabundle', [bundle[0], bundle[2], bundle[3]]);
    });
    expect(() => checkChain(decodeAttestation(broken), awsNitroRootPem)).toThrow(/cabundle\[1\] is not issued/);
  });

  test('a PCR that differs, or one the document lacks, fails on the PCR', () => {
    expect(outcome(veracruz, { atMs: veracruzAt, pcrs: new Map([[0, hex(veracruzPcr0)]]) })).toBe('passes');
    const wrong = hex(veracruzPcr0);
    wrong[0] = wrong[0]! ^ 1;
    expect(outcome(veracruz, { atMs: veracruzAt, pcrs: new Map([[0, wrong]]) })).toBe('pcr');
    expect(outcome(veracruz, { atMs: veracruzAt, pcrs: new Map([[31, wrong]]) })).toBe('pcr');
  });

  test('a different nonce, or none where one is expected, fails on the nonce', () => {
    expect(outcome(veracruz, { atMs: veracruzAt, nonce: hex(veracruzNonce) })).toBe('passes');
    expect(outcome(veracruz, { atMs: veracruzAt, nonce: hex('00') })).toBe('nonce');
    expect(outcome(baseOp, { atMs: baseOpAt, nonce: hex(veracruzNonce) })).toBe('nonce');
  });

  test.each(['module_id', 'digest', 'timestamp', 'pcrs', 'certificate', 'cabundle'])(
    'a document without %s fails on the payload',
    (field) => {
      const missing = withPayload(veracruz, (payload) => payload.delete(field));
      expect(() => verifyAttestation(missing, { atMs: veracruzAt })).toThrow(new RegExp(`^payload: ${field}`));
    },
  );

  test('a field of the wrong type or size fails on the payload', () => {
    const cases: Array<[string, unknown]> = [
      ['timestamp', 'yesterday'],
      ['digest', 'SHA256'],
      ['pcrs', new Map([[0, new Uint8Array(5)]])],
      ['nonce', 'not bytes'],
      ['user_data', new Uint8Array(513)],
    ];
    for (const [field, value] of cases) {
      const wrong = withPayload(veracruz, (payload) => payload.set(field, value));
      expect(outcome(wrong, { atMs: veracruzAt }), field).toBe('payload');
    }
  });

  test('trailing bytes, another structure or another algorithm fail on the COSE structure', () => {
    expect(outcome(Buffer.concat([veracruz, Buffer.from([0])]), { atMs: veracruzAt })).toBe('cose');
    expect(outcome(Buffer.from('not cbor at all'), {})).toBe('cose');
    const [, unprotected, payload, signature] = decode(veracruz, { useMaps: true }) as unknown[];
    const es256 = encode([encode(new Map([[1, -7]])), unprotected, payload, signature]);
    expect(outcome(es256, {})).toBe('cose');
    expect(outcome(encode([1, 2, 3]), {})).toBe('cose');
  });

  test('a tagged COSE_Sign1 (tag 18) verifies as the untagged one does', () => {
    const tagged = Buffer.concat([Buffer.from([0xd2]), veracruz]);
    expect(outcome(tagged, { atMs: veracruzAt })).toBe('passes');
  });

  test('a document of several megabytes is refused on its size before it is decoded', () => {
    const huge = Buffer.alloc(8 * 1024 * 1024, 0xff);
    const started = performance.now();
    expect(outcome(huge, {})).toBe('size');
    expect(performance.now() - started).toBeLessThan(50);
    expect(outcome(Buffer.alloc(maxDocumentBytes + 1), {})).toBe('size');
  });
});

describe('development documents', () => {
  test('verify with the development root, carrying the key, nonce and user data they were made with', () => {
    const publicKey = new Uint8Array(64).fill(7);
    const document = makeDevDocument({ publicKey, nonce: hex('abcd'), userData: hex('0102') });
    const attested = verifyAttestation(document, { rootPem: devRootPem, nonce: hex('abcd'), pcrs: devPcrs });
    expect(attested.publicKey).toEqual(publicKey);
    expect(attested.userData).toEqual(hex('0102'));
    expect(attested.pcrs.size).toBe(16);
  });

  test('fail against the AWS root: a development document proves nothing about an enclave', () => {
    expect(outcome(makeDevDocument(), {})).toBe('chain');
  });
});

describe('attestationVerifier, which remembers the chains it verified', () => {
  test('still checks the signature, the validity and the root of every document after the first', () => {
    const verify = attestationVerifier();
    expect(outcome(veracruz, { atMs: veracruzAt }, verify)).toBe('passes');
    expect(outcome(veracruzBadSignature, { atMs: veracruzAt }, verify)).toBe('signature');
    expect(outcome(veracruz, {}, verify)).toBe('validity');
    expect(outcome(veracruz, { atMs: veracruzAt, rootPem: devRootPem }, verify)).toBe('chain');
    expect(outcome(veracruz, { atMs: veracruzAt, nonce: hex('00') }, verify)).toBe('nonce');
  });

  test('answers for each development document what that document attests', () => {
    const verify = attestationVerifier();
    for (const nonce of ['01', '02', '03']) {
      const attested = verify(makeDevDocument({ nonce: hex(nonce) }), { rootPem: devRootPem, nonce: hex(nonce) });
      expect(Buffer.from(attested.nonce!).toString('hex')).toBe(nonce);
    }
  });
});
