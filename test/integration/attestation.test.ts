// The whole chain a client checks, on the built service with a real pool: the key the start script
// generates, GET /attestation with the client's nonce from the development attestation server,
// the document verified against the development root, and signed answers of both routes checked
// against the attested key; and the start-up refusal when the attested key is another.
import { randomBytes } from 'node:crypto';
import { readFile, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { execa } from 'execa';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { devPcrs, rootPath } from '../../src/dev/attestationServer.js';
import { makeTempDir, removeTempDir } from '../../src/dev/tempDir.js';
import { loadSigner, type Signer } from '../../src/signing.js';
import { cgroupsOrSkip, createTestPool, type TestPool } from '../helpers/cgroups.js';
import { projectRoot } from '../helpers/projectRoot.js';
import { refusedStart, type ServiceProcess, serviceEnv, startService } from '../helpers/service.js';
import { examplesDir, processesMentioning } from '../helpers/stack.js';
import { startUpstreams, type Upstreams } from '../helpers/upstreams.js';
import { runVerify, saveAnswer, saveBody } from '../helpers/verifyCommand.js';

const ready = await cgroupsOrSkip();
// What scripts/enclave-start.sh runs to make the key.
const keygen = path.join(projectRoot, 'dist/src/keygen.js');
const pcr0 = Buffer.from(devPcrs.get(0)!).toString('hex');

describe.runIf(ready)('verifiable from the outside', () => {
  let dir: string;
  let pool: TestPool;
  let runtimePath: string;
  let upstreams: Upstreams;
  let service: ServiceProcess;
  let signer: Signer;
  // A key of the same kind that is not the service's.
  let other: Signer;
  let rootFile: string;
  const file = (name: string) => path.join(dir, name);

  beforeAll(async () => {
    dir = await makeTempDir('oyster-attested-');
    runtimePath = await makeTempDir('oyster-runtime-');
    pool = await createTestPool({ count: 2 });
    await execa(process.execPath, [keygen, '--secret', file('id.sec'), '--public', file('id.pub')]);
    signer = await loadSigner(file('id.sec'));
    await execa(process.execPath, [keygen, '--secret', file('other.sec'), '--public', file('other.pub')]);
    other = await loadSigner(file('other.sec'));
    upstreams = await startUpstreams([examplesDir]);
    // The key check is on by default: this start passes it.
    service = await startService({
      ...serviceEnv({ pool, runtimePath, ...upstreams }),
      SIGNER_KEY_PATH: file('id.sec'),
    });
    rootFile = file('root.pem');
    await saveBody(`${upstreams.attestation.url}${rootPath}`, rootFile);
  });

  afterAll(async () => {
    service?.child.kill('SIGTERM');
    await service?.exited;
    if (runtimePath) for (const pid of await processesMentioning(runtimePath)) process.kill(pid, 'SIGKILL');
    await Promise.all([upstreams?.attestation.close(), upstreams?.storage.close()]);
    await pool?.remove();
    for (const each of [dir, runtimePath]) if (each) await removeTempDir(each);
  });

  test("the start script's key generator writes a secret only root can read and the public key as x || y", async () => {
    expect((await stat(file('id.sec'))).mode & 0o777).toBe(0o600);
    expect(Buffer.from(signer.publicKey).equals(await readFile(file('id.pub')))).toBe(true);
  });

  test('GET /attestation?nonce= answers a fresh document that verifies with the root and attests the key and the nonce', async () => {
    const nonce = randomBytes(32).toString('hex');
    const answer = await saveBody(`${service.url}/attestation?nonce=${nonce}`, file('attestation.cbor'));
    expect(answer.status).toBe(200);
    expect(answer.headers['content-type']).toBe('application/cbor');
    expect(answer.headers['cache-control']).toBe('no-store');
    const verified = await runVerify(
      ...['--attestation', file('attestation.cbor'), '--root', rootFile, '--nonce', nonce, '--pcr', `0=${pcr0}`],
      '--json',
    );
    expect(verified.exitCode, verified.stderr).toBe(0);
    const attested = JSON.parse(verified.stdout) as Record<string, unknown>;
    expect(attested).toMatchObject({
      digest: 'SHA384',
      nonce,
      public_key: Buffer.from(signer.publicKey).toString('hex'),
      signer: signer.address,
    });
    expect(Object.keys(attested.pcrs as object)).toHaveLength(16);
    // The AWS root, the default, refuses a development document.
    const againstAws = await runVerify('--attestation', file('attestation.cbor'));
    expect(againstAws.exitCode).toBe(1);
    expect(againstAws.stderr).toContain('check chain');
  });

  test('every nonce gets its own document: nothing is cached across nonces', async () => {
    const nonces = ['01', '02'];
    for (const nonce of nonces) await saveBody(`${service.url}/attestation?nonce=${nonce}`, file(`n${nonce}.cbor`));
    for (const nonce of nonces) {
      const result = await runVerify('--attestation', file(`n${nonce}.cbor`), '--root', rootFile, '--nonce', nonce);
      expect(result.exitCode, result.stderr).toBe(0);
    }
    const swapped = await runVerify('--attestation', file('n01.cbor'), '--root', rootFile, '--nonce', '02');
    expect(swapped.exitCode).toBe(1);
    expect(swapped.stderr).toContain('check nonce');
  });

  test.each([
    ['not hex', 'zz'],
    ['an odd number of digits', 'abc'],
    ['longer than 64 bytes', '00'.repeat(65)],
    ['empty', ''],
  ])('a nonce that is %s answers 400', async (_name, nonce) => {
    const response = await request(`${service.url}/attestation?nonce=${nonce}`);
    expect(response.statusCode).toBe(400);
    expect(((await response.body.json()) as { message: string }).message).toBe('Invalid payload');
  });

  test('a signed answer of the JSON route verifies against the attested key', async () => {
    await saveBody(`${service.url}/attestation`, file('plain.cbor'));
    const body = '{"code_id": "hello", "input": {"name": "Ada"}}';
    await saveAnswer(
      file('json-answer.txt'),
      `${service.url}/api/serverless`,
      '-H',
      'content-type: application/json',
      '--data-binary',
      body,
    );
    const result = await runVerify(
      ...['--attestation', file('plain.cbor'), '--root', rootFile],
      ...['--request', body, '--code-file', path.join(examplesDir, 'hello.js'), '--response', file('json-answer.txt')],
    );
    expect(result.exitCode, result.stderr).toBe(0);
    expect(result.stdout).toContain(`answer signed by ${signer.address}`);
  });

  test('a signed exchange of the HTTP route verifies against the attested key, and not against a document of another key', async () => {
    await saveBody(`${service.url}/attestation`, file('plain.cbor'));
    await writeFile(file('request-body'), 'hello body');
    await saveAnswer(
      file('http-answer.txt'),
      `${service.url}/fn/request-info/items/7?x=1`,
      '--data-binary',
      `@${file('request-body')}`,
    );
    const exchange = [
      ...['--code-id', 'request-info', '--code-file', path.join(examplesDir, 'request-info.js')],
      ...['--method', 'POST', '--target', '/items/7?x=1', '--request-body-file', file('request-body')],
      ...['--response', file('http-answer.txt')],
    ];
    const result = await runVerify('--attestation', file('plain.cbor'), '--root', rootFile, '--json', ...exchange);
    expect(result.exitCode, result.stderr).toBe(0);
    expect(JSON.parse(result.stdout)).toMatchObject({ signer: signer.address, answer_signer: signer.address });

    const stranger = await startUpstreams([], { publicKey: other.publicKey, ignoreRequestedKey: true });
    try {
      await saveBody(`${stranger.attestation.url}/attestation/raw`, file('other.cbor'));
    } finally {
      await Promise.all([stranger.attestation.close(), stranger.storage.close()]);
    }
    const mismatch = await runVerify('--attestation', file('other.cbor'), '--root', rootFile, ...exchange);
    expect(mismatch.exitCode).toBe(1);
    expect(mismatch.stderr).toContain(
      `the answer is signed by ${signer.address}, not by the attested key ${other.address}`,
    );
  });

  test('the service refuses to start when the attestation server attests another key, naming both', async () => {
    const stranger = await startUpstreams([examplesDir], { publicKey: other.publicKey, ignoreRequestedKey: true });
    try {
      const env = { ...serviceEnv({ pool, runtimePath, ...stranger }), SIGNER_KEY_PATH: file('id.sec') };
      const refused = await refusedStart(env);
      expect(refused.code).toBe(1);
      expect(refused.output).toContain('oyster-serverless cannot start');
      expect(refused.output).toContain(other.address);
      expect(refused.output).toContain(signer.address);
      // Turned off, as where the attestation server is a stand-in, the same start goes ahead.
      const allowed = await startService({ ...env, ATTESTATION_KEY_CHECK: 'false' });
      allowed.child.kill('SIGTERM');
      expect(await allowed.exited).toBe(0);
    } finally {
      await Promise.all([stranger.attestation.close(), stranger.storage.close()]);
    }
  });
});
