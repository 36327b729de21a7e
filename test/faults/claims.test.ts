import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { execa } from 'execa';
import getPort from 'get-port';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import type { RunningServer } from '../../src/dev/listen.js';
import { makeTempDir, removeTempDir } from '../../src/dev/tempDir.js';
import { loadSigner } from '../../src/signing.js';
import { cgroupsOrSkip, createTestPool, type TestPool } from '../helpers/cgroups.js';
import { invoke } from '../helpers/http.js';
import { projectRoot } from '../helpers/projectRoot.js';
import { type ServiceProcess, serviceEnv, startService } from '../helpers/service.js';
import { writeSignerKey } from '../helpers/signerKey.js';
import { examplesDir } from '../helpers/stack.js';
import { startUpstreams } from '../helpers/upstreams.js';

const cgroups = await cgroupsOrSkip();

const verifyCommand = path.join(projectRoot, 'dist/scripts/verify.js');

interface Claim {
  readonly claim_id: number;
  readonly nonce: string;
  readonly codes: ReadonlyArray<{ readonly code_id: string; readonly invocations: number }>;
}

// Usage claims of a real service: signed, each usage claimed once, none lost across a crash.
describe.runIf(cgroups)('usage claims', () => {
  let attestation: RunningServer;
  let storage: RunningServer;
  let pool: TestPool;
  let dir: string;
  let env: Record<string, string>;
  let address: string;
  const services: ServiceProcess[] = [];

  beforeAll(async () => {
    ({ attestation, storage } = await startUpstreams([examplesDir]));
    pool = await createTestPool({ count: 2 });
    dir = await makeTempDir('oyster-claims-');
    const keyFile = await writeSignerKey(dir);
    address = (await loadSigner(keyFile)).address;
    env = {
      ...serviceEnv({ pool, runtimePath: path.join(dir, 'runtime'), attestation, storage }),
      LEDGER_PATH: path.join(dir, 'ledger', 'usage.sqlite'),
      SIGNER_KEY_PATH: keyFile,
      ADMIN_PORT: String(await getPort({ host: '127.0.0.1' })),
    };
  });
  afterAll(async () => {
    for (const service of services) service.child.kill('SIGKILL');
    await pool?.remove();
    await Promise.all([attestation?.close(), storage?.close()]);
    if (dir) await removeTempDir(dir);
  });

  const start = async () => {
    const service = await startService(env);
    services.push(service);
    return service;
  };
  const admin = (route: string, body?: object) =>
    request(`http://127.0.0.1:${env.ADMIN_PORT}${route}`, {
      method: body ? 'POST' : 'GET',
      headers: body ? { 'content-type': 'application/json' } : {},
      body: body ? JSON.stringify(body) : undefined,
    });
  const claim = async (nonce: string) => {
    const response = await admin('/admin/claims', { nonce });
    expect(response.statusCode).toBe(200);
    return response.body.text();
  };
  const claimed = (text: string) => (JSON.parse(text) as { data: Claim }).data;
  const invocations = (claims: readonly Claim[]) =>
    claims.reduce((sum, one) => sum + one.codes.reduce((codes, code) => codes + code.invocations, 0), 0);

  test('are signed by SIGNER_KEY_PATH, claim each invocation once, and lose none when the service dies mid-claim', async () => {
    let service = await start();
    let made = 0;
    const run = async (count: number) => {
      for (let i = 0; i < count; i += 1) {
        expect((await invoke(service.url, { code_id: 'hello' })).statusCode).toBe(200);
        made += 1;
      }
    };
    await run(3);
    const first = await claim('01');
    const file = path.join(dir, 'claim.json');
    await writeFile(file, first);
    const verified = await execa('node', [verifyCommand, '--claim', file, '--expect', address], { reject: false });
    expect(verified.exitCode).toBe(0);
    expect(verified.stdout.trim()).toBe(address);

    // Two at once: the usage goes to one of them, never to both.
    await run(2);
    const pair = await Promise.all([claim('02'), claim('03')]);
    expect(invocations(pair.map(claimed))).toBe(2);

    // Killed just after a claim was asked for: whether it was made or not, asking again with its
    // nonce answers it, and nothing is claimed twice or lost.
    await run(2);
    const asked = admin('/admin/claims', { nonce: '04' }).catch(() => undefined);
    service.child.kill('SIGKILL');
    await service.exited;
    await asked;
    service = await start();
    const again = await claim('04');
    expect(await claim('04')).toBe(again);
    const latest = await admin('/admin/claims/latest');
    expect(await latest.body.text()).toBe(again);
    const rest = await claim('05');
    const all = [first, ...pair, again, rest].map(claimed);
    expect(new Set(all.map((one) => one.claim_id)).size).toBe(all.length);
    expect(invocations(all)).toBe(made);
    // Never on the public port.
    expect((await request(`${service.url}/admin/claims/latest`)).statusCode).toBe(404);
  });
});
