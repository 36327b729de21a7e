// Secrets only the enclave can read, end to end on the built service: a KMS key released only to
// the development image (the development KMS, through the real AWS SDK), secrets sealed with
// `npm run seal` against the running service, uploaded by the real `wrangler deploy
// --secrets-file`, opened inside the service for the function on both routes; a restart and a
// second instance open them too; an image KMS does not release to opens nothing; a value that
// does not open is a 400 naming its binding; and the plaintext is found nowhere it must not be.
import { createHash, randomBytes } from 'node:crypto';
import { cp, mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { execa } from 'execa';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { devPcrs } from '../../src/dev/attestationServer.js';
import { devRootPem } from '../../src/dev/devAttestationChain.js';
import { devKmsKeyId, startKmsServer } from '../../src/dev/kmsServer.js';
import type { RunningServer } from '../../src/dev/listen.js';
import { makeTempDir, removeTempDir } from '../../src/dev/tempDir.js';
import { generateSealingBlob } from '../../src/secrets/blob.js';
import { cgroupsOrSkip, createTestPool, type TestPool } from '../helpers/cgroups.js';
import { invoke } from '../helpers/http.js';
import { projectRoot } from '../helpers/projectRoot.js';
import { type ServiceProcess, serviceEnv, startService } from '../helpers/service.js';
import { examplesDir, fixturesDir, processesMentioning } from '../helpers/stack.js';
import { startUpstreams, type Upstreams } from '../helpers/upstreams.js';
import { wranglerDeploy } from '../helpers/wranglerDeploy.js';

const ready = await cgroupsOrSkip();
const sealCommand = path.join(projectRoot, 'dist/scripts/seal.js');
const region = 'us-east-1';
const credentials = { AWS_ACCESS_KEY_ID: 'development', AWS_SECRET_ACCESS_KEY: 'development' };
const hex = (bytes: Uint8Array) => Buffer.from(bytes).toString('hex');
const sha256 = (text: string) => createHash('sha256').update(text).digest('hex');

describe.runIf(ready)('sealed secrets', () => {
  let dir: string;
  let codeDir: string;
  let upstreams: Upstreams;
  let kms: RunningServer;
  let otherImageKms: RunningServer;
  const pools: TestPool[] = [];
  const services: ServiceProcess[] = [];
  const runtimePaths: string[] = [];
  let blobFile: string;
  let first: ServiceProcess;
  // Random, so that finding it anywhere can only mean it leaked.
  const apiToken = `tok-${randomBytes(12).toString('hex')}`;
  const dbPassword = `pw-${randomBytes(12).toString('hex')}`;
  let sealedToken: string;
  let sealedPassword: string;
  let upload: { body: Buffer; contentType: string };

  // A service of its own pool, runtime directory and ledger, opening sealed secrets through `kmsUrl`.
  async function startSealingService(kmsUrl: string): Promise<ServiceProcess> {
    const pool = await createTestPool({ count: 2 });
    pools.push(pool);
    const runtimePath = await makeTempDir('oyster-runtime-');
    runtimePaths.push(runtimePath);
    const ledger = path.join(dir, 'ledgers', String(services.length), 'usage.sqlite');
    await mkdir(path.dirname(ledger), { recursive: true });
    const service = await startService({
      ...serviceEnv({ pool, runtimePath, ...upstreams }),
      ...credentials,
      SEALING_KMS_BLOB: blobFile,
      SEALING_KMS_REGION: region,
      SEALING_KMS_ENDPOINT: kmsUrl,
      LEDGER_PATH: ledger,
      LOG_LEVEL: 'debug',
    });
    services.push(service);
    return service;
  }

  // Stores a (changed) copy of the upload under key and invokes it on the JSON route.
  async function invokeUpload(service: ServiceProcess, key: string, body: Buffer) {
    await mkdir(path.join(codeDir, key), { recursive: true });
    await writeFile(path.join(codeDir, key, 'upload.body'), body);
    await writeFile(path.join(codeDir, key, 'upload.content-type'), upload.contentType);
    return invoke(service.url, { code_id: key, input: {} });
  }

  beforeAll(async () => {
    dir = await makeTempDir('oyster-sealed-');
    codeDir = path.join(dir, 'code');
    await mkdir(codeDir);
    upstreams = await startUpstreams([codeDir, examplesDir]);
    const policy = (pcr0: Uint8Array) => ({ attestationRootPem: devRootPem, policyPcrs: new Map([[0, pcr0]]) });
    kms = await startKmsServer(policy(devPcrs.get(0)!));
    otherImageKms = await startKmsServer(policy(new Uint8Array(48).fill(0xee)));
    // The operator's one-time step, through the same SDK the service uses.
    Object.assign(process.env, credentials);
    blobFile = path.join(dir, 'sealing.blob');
    await writeFile(blobFile, await generateSealingBlob({ keyId: devKmsKeyId, region, endpoint: kms.url }));
    first = await startSealingService(kms.url);

    // The developer's flow: verify and seal against the running service, then wrangler deploy.
    await writeFile(path.join(dir, 'root.pem'), devRootPem);
    const sealed = await execa(process.execPath, [
      sealCommand,
      ...['--attestation', first.url, '--root', path.join(dir, 'root.pem'), '--pcr', `0=${hex(devPcrs.get(0)!)}`],
      `API_TOKEN=${apiToken}`,
      `DB_PASSWORD=${dbPassword}`,
    ]);
    sealedToken = /^API_TOKEN=(sealed:v1:\S+)$/m.exec(sealed.stdout)![1]!;
    sealedPassword = /^DB_PASSWORD=(sealed:v1:\S+)$/m.exec(sealed.stdout)![1]!;
    const project = path.join(dir, 'project');
    await cp(path.join(fixturesDir, 'sealed-secrets', 'project'), project, { recursive: true });
    await writeFile(path.join(project, 'secrets.env'), `${sealed.stdout}\n`);
    upload = await wranglerDeploy(project, ['--secrets-file', 'secrets.env']);
  }, 90_000);

  afterAll(async () => {
    for (const service of services) {
      service.child.kill('SIGTERM');
      await service.exited;
    }
    for (const runtimePath of runtimePaths)
      for (const pid of await processesMentioning(runtimePath)) process.kill(pid, 'SIGKILL');
    await Promise.all([
      upstreams?.attestation.close(),
      upstreams?.storage.close(),
      kms?.close(),
      otherImageKms?.close(),
    ]);
    for (const pool of pools) await pool.remove();
    for (const each of [dir, ...runtimePaths]) await removeTempDir(each);
  });

  test('the document names the sealing key, and what wrangler uploads is the sealed value, not the secret', async () => {
    const health = (await (await request(`${first.url}/health`)).body.json()) as { data: { sealing: string } };
    expect(health.data.sealing).toBe('on');
    expect(sealedToken).toMatch(/^sealed:v1:[0-9a-f]{16}:/);
    expect(upload.body.includes(sealedToken)).toBe(true);
    expect(upload.body.includes(apiToken)).toBe(false);
    expect(upload.body.toString()).toContain('"type":"secret_text"');
  });

  test('reaches the function as its plaintext, on both routes', async () => {
    const json = await invokeUpload(first, 'sealed-app', upload.body);
    expect(json.statusCode, json.body).toBe(200);
    const seen = JSON.parse((JSON.parse(json.body) as { data: string }).data);
    expect(seen).toEqual({
      API_TOKEN: { sha256: sha256(apiToken), length: apiToken.length },
      DB_PASSWORD: { sha256: sha256(dbPassword), length: dbPassword.length },
      GREETING: 'hello',
    });
    const http = await request(`${first.url}/fn/sealed-app/`);
    expect(http.statusCode).toBe(200);
    expect(await http.body.json()).toEqual(seen);
  });

  test('a restarted service, and a second instance, open the same secrets', async () => {
    const again = await startSealingService(kms.url);
    const answer = await invoke(again.url, { code_id: 'sealed-app', input: {} });
    expect(answer.statusCode, answer.body).toBe(200);
    expect(answer.body).toContain(sha256(apiToken));
    again.child.kill('SIGTERM');
    expect(await again.exited).toBe(0);
    const restarted = await startSealingService(kms.url);
    expect((await invoke(restarted.url, { code_id: 'sealed-app', input: {} })).body).toContain(sha256(dbPassword));
  });

  test('an instance KMS releases nothing to (another PCR0 in the policy) starts, and refuses sealed secrets clearly', async () => {
    const stranger = await startSealingService(otherImageKms.url);
    const health = (await (await request(`${stranger.url}/health`)).body.json()) as { data: { sealing: string } };
    expect(health.data.sealing).toBe('unavailable');
    const answer = await invoke(stranger.url, { code_id: 'sealed-app', input: {} });
    expect(answer.statusCode).toBe(503);
    expect(answer.headers['x-oyster-error']).toBe('SEALING_UNAVAILABLE');
    expect(JSON.parse(answer.body).data).toMatchObject({ reason: expect.stringMatching(/key policy/) });
    expect(['API_TOKEN', 'DB_PASSWORD']).toContain(JSON.parse(answer.body).data.binding);
    // What has no sealed secret still runs there.
    expect((await invoke(stranger.url, { code_id: 'hello', input: { name: 'x' } })).statusCode).toBe(200);
  });

  test.each([
    [
      'tampered',
      (body: string) => body.replace(sealedToken, `${sealedToken.slice(0, -6)}AAAA${sealedToken.slice(-2)}`),
      'tampered',
    ],
    [
      'sealed to another key id',
      (body: string) => body.replace(sealedToken, sealedToken.replace(/:v1:[0-9a-f]{4}/, ':v1:ffff')),
      'another key',
    ],
    [
      'moved to another binding',
      (body: string) =>
        body.replace(sealedToken, '<token>').replace(sealedPassword, sealedToken).replace('<token>', sealedPassword),
      'another binding',
    ],
  ])('a value %s answers 400 naming its binding, never the value', async (name, change, reason) => {
    const changed = change(upload.body.toString('latin1'));
    expect(changed).not.toBe(upload.body.toString('latin1'));
    const answer = await invokeUpload(first, `changed-${name.replaceAll(' ', '-')}`, Buffer.from(changed, 'latin1'));
    expect(answer.statusCode).toBe(400);
    expect(answer.headers['x-oyster-error']).toBe('SEALED_SECRET_INVALID');
    const { data } = JSON.parse(answer.body) as { data: { binding: string; reason: string } };
    expect(data.reason).toBe(reason);
    expect(['API_TOKEN', 'DB_PASSWORD']).toContain(data.binding);
    expect(answer.body).not.toContain('sealed:v1');
  });

  test('the plaintext is in no log line, answer, ledger row or file left behind', async () => {
    for (const service of services) {
      service.child.kill('SIGTERM');
      await service.exited;
    }
    const output = services.map((service) => service.output()).join('\n');
    expect(output).toContain('request completed');
    const files: string[] = [];
    for (const root of [...runtimePaths, path.join(dir, 'ledgers')])
      for (const entry of await readdir(root, { recursive: true })) files.push(path.join(root, String(entry)));
    expect(files.some((file) => file.endsWith('usage.sqlite'))).toBe(true);
    for (const secret of [apiToken, dbPassword]) {
      expect(output).not.toContain(secret);
      for (const file of files) {
        const contents = await readFile(file).catch(() => Buffer.alloc(0));
        expect(contents.includes(secret), file).toBe(false);
      }
    }
    // The answers above were checked as they came; the runtime directories hold nothing now.
    for (const runtimePath of runtimePaths) expect(await readdir(runtimePath)).toEqual([]);
  });
});
