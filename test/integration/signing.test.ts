import { createHash, randomBytes } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { makeTempDir, removeTempDir } from '../../src/dev/tempDir.js';
import { loadSigner, recoverSigner } from '../../src/signing.js';
import { cgroupsOrSkip } from '../helpers/cgroups.js';
import { fakeCgroupV2Root } from '../helpers/fakeCgroupfs.js';
import { refusedStart } from '../helpers/service.js';
import { writeSignerKey } from '../helpers/signerKey.js';
import { examplesDir, type Stack, startStack, wranglerFixturesDir } from '../helpers/stack.js';

const cgroups = await cgroupsOrSkip();

describe.runIf(cgroups)('signed results', () => {
  let keyDir: string;
  let keyPath: string;
  let signed: Stack;
  let unsigned: Stack;
  beforeAll(async () => {
    keyDir = await makeTempDir('oyster-key-');
    keyPath = await writeSignerKey(keyDir);
    signed = await startStack({ pool: { count: 1 }, env: { SIGNER_KEY_PATH: keyPath } });
    unsigned = await startStack({ pool: { count: 1 } });
  });
  afterAll(async () => {
    await signed?.close();
    await unsigned?.close();
    await removeTempDir(keyDir);
  });

  test("a 200 carries a timestamp and a signature that recovers to the key's address, over exactly what ran", async () => {
    const input = { num: 84 };
    const response = await signed.invoke({ code_id: 'primes', input });
    expect(response.statusCode).toBe(200);
    const timestamp = Number(response.headers['x-oyster-timestamp']);
    expect(Math.abs(timestamp - Date.now() / 1000)).toBeLessThan(60);
    const signature = String(response.headers['x-oyster-signature']);
    const fields = {
      timestamp,
      codeId: 'primes',
      codeSha256: createHash('sha256')
        .update(await readFile(path.join(examplesDir, 'primes.js')))
        .digest(),
      input: Buffer.from(JSON.stringify(input)),
      output: Buffer.from(response.body.data as string, 'utf8'),
    };
    const signer = await loadSigner(keyPath);
    expect(recoverSigner(fields, signature)).toBe(signer.address);
    expect(
      recoverSigner({ ...fields, output: Buffer.from('The prime factors of 84 are 2,2,3,8') }, signature),
    ).not.toBe(signer.address);
    expect(recoverSigner({ ...fields, timestamp: timestamp + 1 }, signature)).not.toBe(signer.address);
  });

  test('error answers carry no signature', async () => {
    const response = await signed.invoke({ code_id: 'throw' });
    expect(response.statusCode).toBe(500);
    expect(response.headers['x-oyster-signature']).toBeUndefined();
  });

  test.each([
    ['an ES module', 'broken-stream'],
    ['a service worker', 'broken-stream-sw'],
  ])(
    "an answer of %s whose body stream fails half-way is a 500 with the function's error, never a signed 200",
    async (_format, codeId) => {
      const response = await signed.invoke({ code_id: codeId });
      expect(response.statusCode).toBe(500);
      expect(response.body.message).toContain('exception handling');
      expect(response.body.data).toContain('stream broke');
      expect(response.headers['x-oyster-signature']).toBeUndefined();
    },
  );

  test("a function cannot pass its own answer off as a refusal of the guard's", async () => {
    const response = await signed.invoke({ code_id: 'forged-guard' });
    expect(response.statusCode).toBe(200);
    expect(response.body.data).toBe('all mine');
  });

  test('a body that is not UTF-8 is given as base64 and signed over its exact bytes', async () => {
    const response = await signed.invoke({ code_id: 'binary-response' });
    expect(response.body).toMatchObject({ status: 'success', encoding: 'base64' });
    const output = Buffer.from(response.body.data as string, 'base64');
    expect(output[0]).toBe(0x89);
    const upload = await readFile(path.join(wranglerFixturesDir, 'binary-response', 'upload.body'));
    const fields = {
      timestamp: Number(response.headers['x-oyster-timestamp']),
      codeId: 'binary-response',
      codeSha256: createHash('sha256').update(upload).digest(),
      input: Buffer.from('{}'),
      output,
    };
    const signer = await loadSigner(keyPath);
    expect(recoverSigner(fields, String(response.headers['x-oyster-signature']))).toBe(signer.address);
  });

  test('without a key there are no signature headers', async () => {
    const response = await unsigned.invoke({ code_id: 'hello' });
    expect(response.statusCode).toBe(200);
    expect(response.headers['x-oyster-signature']).toBeUndefined();
    expect(response.headers['x-oyster-timestamp']).toBeUndefined();
  });
});

describe('a bad key file', () => {
  test('stops start-up with a message naming SIGNER_KEY_PATH', async () => {
    const root = await fakeCgroupV2Root(['workerd1']);
    const keyDir = await makeTempDir('oyster-key-');
    try {
      const short = path.join(keyDir, 'short.key');
      await writeFile(short, randomBytes(16));
      for (const keyPath of [short, path.join(keyDir, 'missing.key')]) {
        const { code, output } = await refusedStart({ CGROUP_ROOT: root, SIGNER_KEY_PATH: keyPath });
        expect(code).toBe(1);
        expect(output).toContain(`SIGNER_KEY_PATH=${keyPath}`);
      }
    } finally {
      await removeTempDir(root);
      await removeTempDir(keyDir);
    }
  });
});
