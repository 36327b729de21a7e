import { readdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import getPort from 'get-port';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import type { RunningServer } from '../../src/dev/listen.js';
import { makeTempDir, removeTempDir } from '../../src/dev/tempDir.js';
import { serviceNodeFlags } from '../../src/serviceNodeFlags.js';
import { cgroupsOrSkip, createTestPool, type TestPool } from '../helpers/cgroups.js';
import { fakeCgroupV2Root } from '../helpers/fakeCgroupfs.js';
import { postJson, statusOf } from '../helpers/http.js';
import { refusedStart, serviceEnv, startService } from '../helpers/service.js';
import { examplesDir, fixturesDir, processesMentioning } from '../helpers/stack.js';
import { startUpstreams } from '../helpers/upstreams.js';
import { waitFor } from '../helpers/wait.js';

const cgroups = await cgroupsOrSkip();

describe('npm start refuses to start', () => {
  test('with an empty cgroup pool, naming the setup script', async () => {
    const root = await fakeCgroupV2Root(['other']);
    try {
      const { code, output } = await refusedStart({ CGROUP_ROOT: root });
      expect(code).toBe(1);
      expect(output).toMatch(/No cgroup named workerd\*.*cgroupv2_setup\.sh/s);
    } finally {
      await removeTempDir(root);
    }
  });

  test('with a bad setting, naming it', async () => {
    const { code, output } = await refusedStart({ EXECUTION_TIMEOUT_MS: 'soon' });
    expect(code).toBe(1);
    expect(output).toContain('EXECUTION_TIMEOUT_MS');
  });

  test('without a runnable workerd, naming WORKERD_PATH', async () => {
    const { code, output } = await refusedStart({ WORKERD_PATH: '/nonexistent/workerd' });
    expect(code).toBe(1);
    expect(output).toContain('WORKERD_PATH=/nonexistent/workerd');
  });

  test('with a workerd that is not executable, naming WORKERD_PATH', async () => {
    const dir = await makeTempDir('oyster-workerd-');
    try {
      const notExecutable = path.join(dir, 'workerd');
      await writeFile(notExecutable, '#!/bin/sh\n', { mode: 0o644 });
      const { code, output } = await refusedStart({ WORKERD_PATH: notExecutable });
      expect(code).toBe(1);
      expect(output).toContain(`WORKERD_PATH=${notExecutable} is not an executable file`);
    } finally {
      await removeTempDir(dir);
    }
  });
});

describe.runIf(cgroups)('npm start with a real pool', () => {
  let pool: TestPool;
  let runtimePath: string;
  let attestation: RunningServer;
  let storage: RunningServer;
  beforeAll(async () => {
    pool = await createTestPool({ count: 2 });
    runtimePath = await makeTempDir('oyster-runtime-');
    ({ attestation, storage } = await startUpstreams([examplesDir, fixturesDir]));
  });
  afterAll(async () => {
    await Promise.all([attestation?.close(), storage?.close()]);
    await pool?.remove();
    await removeTempDir(runtimePath);
  });

  test('serves the examples over HTTP, then exits 0 on SIGTERM leaving nothing behind', async () => {
    const service = await startService({
      ...serviceEnv({ pool, runtimePath, attestation, storage }),
    });
    const response = await request(`${service.url}/api/serverless`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ code_id: 'primes', input: { num: 360 } }),
    });
    expect(response.statusCode).toBe(200);
    expect(await response.body.json()).toEqual({
      status: 'success',
      message: 'Response successfully generated',
      data: 'The prime factors of 360 are 2,2,2,3,3,5',
    });

    service.child.kill('SIGTERM');
    expect(await service.exited).toBe(0);
    expect(await readdir(runtimePath)).toEqual([]);
    expect(await processesMentioning(runtimePath)).toEqual([]);
  });

  test('serves the operator endpoints on ADMIN_PORT only, and /health follows draining', async () => {
    const adminPort = await getPort({ host: '127.0.0.1' });
    const service = await startService({
      ...serviceEnv({ pool, runtimePath, attestation, storage }),
      ADMIN_PORT: String(adminPort),
    });
    const admin = `http://127.0.0.1:${adminPort}`;
    expect(await postJson(`${service.url}/admin/drain`)).toMatchObject({ message: 'No such endpoint' });
    expect(await postJson(`${admin}/admin/drain`)).toMatchObject({ message: 'Draining' });
    expect(await statusOf(`${service.url}/health`)).toBe(503);
    expect(await postJson(`${admin}/admin/resume`)).toMatchObject({ message: 'Serving' });
    expect(await statusOf(`${service.url}/health`)).toBe(200);
    service.child.kill('SIGTERM');
    expect(await service.exited).toBe(0);
  });

  test('gives back memory after a burst: runs its collection once idle for IDLE_GC_MS', async () => {
    const service = await startService({
      ...serviceEnv({ pool, runtimePath, attestation, storage }),
      IDLE_GC_MS: '300',
    });
    try {
      const collections = async () => {
        const text = await (await request(`${service.url}/metrics`)).body.text();
        return Number(/^oyster_idle_collections_total (\d+)$/m.exec(text)?.[1]);
      };
      expect(await collections()).toBe(0);
      const response = await request(`${service.url}/api/serverless`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ code_id: 'hello' }),
      });
      expect(response.statusCode).toBe(200);
      await response.body.dump();
      // gc() is there only under the service's own Node flags: without it nothing would be counted.
      await waitFor('the collection after the burst', async () => (await collections()) >= 1);
    } finally {
      service.child.kill('SIGTERM');
      await service.exited;
    }
  });

  test('says at start that nothing will be collected after a burst when started without --expose-gc', async () => {
    const withoutGc = serviceNodeFlags.filter((flag) => flag !== '--expose-gc');
    const service = await startService(serviceEnv({ pool, runtimePath, attestation, storage }), {
      nodeFlags: withoutGc,
    });
    service.child.kill('SIGTERM');
    expect(await service.exited).toBe(0);
    expect(service.output()).toMatch(/gc\(\) is not exposed.*--expose-gc/);
  });

  test('logs each request in one JSON line with its id, route, status, time and failure code', async () => {
    const service = await startService({
      ...serviceEnv({ pool, runtimePath, attestation, storage }),
      LOG_LEVEL: 'info',
      // A request that finds no free cgroup is refused at once rather than queued.
      ADMISSION_QUEUE_MAX: '0',
    });
    const post = (codeId: string, input?: object) =>
      request(`${service.url}/api/serverless`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ code_id: codeId, input }),
      }).then(async (response) => {
        await response.body.dump();
        return response.statusCode;
      });
    expect(await post('hello')).toBe(200);
    expect(await post('no-such-code')).toBe(404);
    // Both cgroups busy, and no queue: the third request is refused.
    const slow = [post('slow', { ms: 1000 }), post('slow', { ms: 1000 })];
    await waitFor('both cgroups to be busy', async () => {
      const health = await request(`${service.url}/health`);
      return ((await health.body.json()) as { data: { free: number } }).data.free === 0;
    });
    expect(await post('hello')).toBe(503);
    expect(await Promise.all(slow)).toEqual([200, 200]);
    service.child.kill('SIGTERM');
    await service.exited;

    const lines = service
      .output()
      .split('\n')
      .filter((line) => line.startsWith('{'))
      .map((line) => JSON.parse(line) as Record<string, unknown>);
    const completed = lines.filter((line) => line.msg === 'request completed' && line.url === '/api/serverless');
    expect(completed.slice(0, 2)).toEqual([
      expect.objectContaining({
        reqId: expect.any(String),
        method: 'POST',
        statusCode: 200,
        responseTimeMs: expect.any(Number),
      }),
      expect.objectContaining({ reqId: expect.any(String), method: 'POST', statusCode: 404, code: 'CODE_NOT_FOUND' }),
    ]);
    expect(completed[0]!.reqId).not.toBe(completed[1]!.reqId);
    expect(completed[0]).not.toHaveProperty('code');
    // A refusal for lack of a cgroup is that one line and nothing more.
    const busy = completed.find((line) => line.statusCode === 503);
    expect(busy).toMatchObject({ code: 'SERVER_BUSY' });
    expect(lines.filter((line) => line.reqId === busy!.reqId)).toHaveLength(1);
    // Fastify's own pair of lines per request is off, and without a deprecated option.
    expect(lines.filter((line) => line.msg === 'incoming request')).toEqual([]);
    expect(service.output()).not.toMatch(/Deprecation|Warning/);
  });
});
