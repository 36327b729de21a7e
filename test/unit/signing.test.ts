import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { secp256k1 } from '@noble/curves/secp256k1.js';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { makeTempDir, removeTempDir } from '../../src/dev/tempDir.js';
import { StartupError } from '../../src/errors.js';
import {
  addressOf,
  loadSigner,
  recoverSigner,
  type SignedFields,
  type Signer,
  signingDigest,
  signingMessage,
} from '../../src/signing.js';

// The secret key 1 and its well-known address: a fixed key whose address other tools agree on.
const keyOneHex = `${'00'.repeat(31)}01`;
const keyOneAddress = '0x7E5F4552091A69125d5DfCb7b8C2659029395Bdf';
const curveOrderHex = 'fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141';

// The README's worked example: examples/hello.js asked to greet Ada, signed with key 1.
const example: SignedFields = {
  timestamp: 1_767_225_600,
  codeId: 'hello',
  codeSha256: Buffer.from('cf415402cce7607a9ebd8a6d316b896075ce5b55aee88ea6cd998e8d695b267e', 'hex'),
  input: Buffer.from('{"name":"Ada"}'),
  output: Buffer.from('Hello, Ada!'),
};
const exampleMessageHex = [
  '000000000000001b',
  '6f79737465722d7365727665726c6573732f726573756c742f7631',
  '000000006955b900',
  '0000000000000005',
  '68656c6c6f',
  'cf415402cce7607a9ebd8a6d316b896075ce5b55aee88ea6cd998e8d695b267e',
  '000000000000000e',
  '7b226e616d65223a22416461227d',
  '000000000000000b',
  '48656c6c6f2c2041646121',
].join('');
const exampleDigestHex = 'be165df9e5269bd91d8a85f66cd35b60430bec515704f462ae6340d413f58e28';
const exampleSignature =
  '0xa3d38122f9d080c0d8436d212725d9b0a0356b7feb2b08a262bdb9c91b474282470ad27daceb4f0bf94b26a06f9041f410e913bb077c040716984efed5c1be5b1c';

let dir: string;
let signer: Signer;

beforeAll(async () => {
  dir = await makeTempDir('signing-');
  signer = await loadSigner(await keyFile('key-one', `${keyOneHex}\n`));
});

afterAll(async () => {
  await removeTempDir(dir);
});

async function keyFile(name: string, contents: string | Uint8Array): Promise<string> {
  const file = path.join(dir, name);
  await writeFile(file, contents, { mode: 0o600 });
  return file;
}

describe('signed results', () => {
  test('a signature recovers to the address of the key that made it', () => {
    expect(signer.address).toBe(keyOneAddress);
    expect(recoverSigner(example, signer.sign(example))).toBe(keyOneAddress);
  });

  test('match the worked example in the README, byte for byte', () => {
    expect(Buffer.from(signingMessage(example)).toString('hex')).toBe(exampleMessageHex);
    expect(Buffer.from(signingDigest(example)).toString('hex')).toBe(exampleDigestHex);
    expect(signer.sign(example)).toBe(exampleSignature);
  });

  test('are 0x, r, s and a v of 27 or 28', () => {
    const vs = new Set<number>();
    for (let timestamp = 0; timestamp < 16; timestamp += 1) {
      const signature = signer.sign({ ...example, timestamp });
      expect(signature).toMatch(/^0x[0-9a-f]{130}$/);
      vs.add(Number.parseInt(signature.slice(-2), 16));
    }
    // Sixteen signatures that all had the same v would mean the recovery id is dropped.
    expect([...vs].sort()).toEqual([27, 28]);
  });

  const changes: Record<keyof SignedFields, Partial<SignedFields>> = {
    timestamp: { timestamp: example.timestamp + 1 },
    codeId: { codeId: 'hellO' },
    codeSha256: { codeSha256: Buffer.from(example.codeSha256).fill(0, 31) },
    input: { input: Buffer.from('{"name":"Bob"}') },
    output: { output: Buffer.from('Hello, Bob!') },
  };
  test.each(Object.entries(changes))('changing %s breaks the signature', (_field, change) => {
    const signature = signer.sign(example);
    expect(recoverSigner({ ...example, ...change }, signature)).not.toBe(keyOneAddress);
  });

  test('no byte can move from one field to the next without changing the digest', () => {
    const digest = (fields: Partial<SignedFields>) =>
      Buffer.from(signingDigest({ ...example, ...fields })).toString('hex');
    const moves = [
      [
        { codeId: 'ab', input: Buffer.from('c') },
        { codeId: 'a', input: Buffer.from('bc') },
      ],
      [
        { input: Buffer.from('ab'), output: Buffer.from('c') },
        { input: Buffer.from('a'), output: Buffer.from('bc') },
      ],
      [
        { input: Buffer.from(''), output: Buffer.from('x') },
        { input: Buffer.from('x'), output: Buffer.from('') },
      ],
    ] as const;
    for (const [before, after] of moves) expect(digest(before)).not.toBe(digest(after));
  });

  test('refuse fields that have no single encoding', () => {
    expect(() => signingDigest({ ...example, timestamp: -1 })).toThrow(/timestamp/);
    expect(() => signingDigest({ ...example, timestamp: 1.5 })).toThrow(/timestamp/);
    expect(() => signingDigest({ ...example, codeSha256: new Uint8Array(31) })).toThrow(/codeSha256/);
    expect(() => signingDigest({ ...example, codeId: 'a\ud800' })).toThrow(/codeId/);
    // A correctly paired surrogate is an ordinary character.
    expect(() => signingDigest({ ...example, codeId: 'a\u{1f600}' })).not.toThrow();
  });
});

describe('recoverSigner', () => {
  test('accepts the signature with or without 0x, in either case', () => {
    expect(recoverSigner(example, exampleSignature.slice(2))).toBe(keyOneAddress);
    expect(recoverSigner(example, exampleSignature.toUpperCase().replace('0X', '0x'))).toBe(keyOneAddress);
  });

  test.each([
    ['too short', exampleSignature.slice(0, -2)],
    ['not hex', `${exampleSignature.slice(0, -1)}g`],
    ['v of 0', `${exampleSignature.slice(0, -2)}00`],
    ['v of 29', `${exampleSignature.slice(0, -2)}1d`],
    ['r of 0', `0x${'00'.repeat(32)}${exampleSignature.slice(66)}`],
  ])('throws on a malformed signature: %s', (_case, signature) => {
    expect(() => recoverSigner(example, signature)).toThrow(Error);
  });

  test('refuses the high-s twin of a signature', () => {
    const bytes = Buffer.from(exampleSignature.slice(2), 'hex');
    const low = secp256k1.Signature.fromBytes(bytes.subarray(0, 64), 'compact');
    const highS = secp256k1.Point.Fn.neg(low.s);
    const twin = `0x${bytes.subarray(0, 32).toString('hex')}${highS.toString(16).padStart(64, '0')}${bytes[64] === 27 ? '1c' : '1b'}`;
    expect(() => recoverSigner(example, twin)).toThrow(/low-s/);
  });
});

describe('addressOf', () => {
  test('gives the EIP-55 address of a public key, compressed or not', () => {
    const keyTwo = Buffer.from(`${'00'.repeat(31)}02`, 'hex');
    expect(addressOf(secp256k1.getPublicKey(keyTwo, false))).toBe('0x2B5AD5c4795c026514f8317c7a215E218DcCD6cF');
    expect(addressOf(secp256k1.getPublicKey(keyTwo, true))).toBe('0x2B5AD5c4795c026514f8317c7a215E218DcCD6cF');
  });

  test('refuses bytes that are not a point of the curve', () => {
    expect(() => addressOf(new Uint8Array(65))).toThrow();
  });
});

describe('loadSigner', () => {
  test.each([
    ['32 raw bytes', Buffer.from(keyOneHex, 'hex')],
    ['64 hex digits', keyOneHex],
    ['64 hex digits and a newline', `${keyOneHex}\n`],
    ['0x and 64 hex digits, upper case, with CRLF', `0x${keyOneHex.toUpperCase()}\r\n`],
  ])('reads a key file of %s', async (_case, contents) => {
    const loaded = await loadSigner(await keyFile('accepted', contents));
    expect(loaded.address).toBe(keyOneAddress);
  });

  // Each message must name the variable, the path and the problem, and never the key itself.
  test.each([
    ['31 raw bytes', Buffer.alloc(31, 1), /must hold exactly 32 raw bytes or 64 hex digits.*31 bytes/],
    ['33 raw bytes', Buffer.alloc(33, 1), /must hold exactly 32 raw bytes or 64 hex digits.*33 bytes/],
    ['63 hex digits', keyOneHex.slice(1), /must hold exactly 32 raw bytes or 64 hex digits/],
    ['64 characters that are not hex', `${keyOneHex.slice(0, -1)}z`, /must hold exactly 32 raw bytes or 64 hex digits/],
    ['two newlines', `${keyOneHex}\n\n`, /must hold exactly 32 raw bytes or 64 hex digits/],
    ['an empty file', '', /0 bytes/],
    ['a long file', 'a'.repeat(4096), /4096 bytes/],
    ['a zero key', '00'.repeat(32), /not a valid secp256k1 secret key/],
    ['the curve order n', curveOrderHex, /not a valid secp256k1 secret key/],
    ['a key above n', 'ff'.repeat(32), /not a valid secp256k1 secret key/],
  ])('refuses a key file of %s', async (_case, contents, problem) => {
    const file = await keyFile('refused', contents);
    const error = await loadSigner(file).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(StartupError);
    expect((error as Error).message).toMatch(/^SIGNER_KEY_PATH=/);
    expect((error as Error).message).toContain(file);
    expect((error as Error).message).toMatch(problem);
    if (typeof contents === 'string' && contents.length >= 8)
      expect((error as Error).message).not.toContain(contents.slice(0, 8));
  });

  test('refuses a missing file', async () => {
    const file = path.join(dir, 'missing');
    await expect(loadSigner(file)).rejects.toThrow(StartupError);
    await expect(loadSigner(file)).rejects.toThrow(`SIGNER_KEY_PATH=${file}: the key file does not exist`);
  });

  test('refuses a directory', async () => {
    await expect(loadSigner(dir)).rejects.toThrow(`SIGNER_KEY_PATH=${dir}: the key file is not a regular file`);
  });

  test('refuses a path it cannot open, with the reason', async () => {
    const file = path.join(await keyFile('not-a-directory', keyOneHex), 'key');
    await expect(loadSigner(file)).rejects.toThrow(`SIGNER_KEY_PATH=${file}: the key file cannot be read (ENOTDIR)`);
  });
});
