import { spawn } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, test, vi } from 'vitest';
import { CgroupPool } from '../../src/capacity/cgroupPool.js';
import { parseConfig } from '../../src/config.js';
import { listen, type RunningServer } from '../../src/dev/listen.js';
import { makeTempDir, removeTempDir } from '../../src/dev/tempDir.js';
import { buildApp, shutdown } from '../../src/http/app.js';
import { UsageLedger } from '../../src/ledger/usageLedger.js';
import { createService, type Service } from '../../src/service/service.js';
import { fakeCgroupV2Root } from '../helpers/fakeCgroupfs.js';
import { waitFor } from '../helpers/wait.js';

// The API's answers that come before any cgroup is used, against a pool in a fake cgroupfs.
// How long a request waits here for a cgroup.
const waitMs = 300;

describe('the HTTP API', () => {
  let app: FastifyInstance;
  let service: Service;
  let pool: CgroupPool;
  let root: string;
  let upstream: RunningServer;
  let upstreamCalls = 0;

  beforeAll(async () => {
    root = await fakeCgroupV2Root(['workerd1', 'workerd2']);
    pool = await CgroupPool.open({ root, version: undefined, prefix: 'workerd' });
    upstream = await listen(
      createServer((_request, response) => {
        upstreamCalls += 1;
        response.writeHead(500).end();
      }),
      '127.0.0.1',
      0,
    );
    const config = parseConfig({
      CGROUP_ROOT: root,
      ATTESTATION_URL: upstream.url,
      LOG_LEVEL: 'silent',
      // Short, so that a request waiting for a cgroup is refused within a test.
      ADMISSION_WAIT_MS: String(waitMs),
      ADMISSION_QUEUE_MAX: '1',
    });
    service = createService(config, { pool });
    app = buildApp(service);
    await app.ready();
  });
  afterAll(async () => {
    await app.close();
    await upstream.close();
    await removeTempDir(root);
  });

  const post = (payload: string, contentType = 'application/json') =>
    app.inject({ method: 'POST', url: '/api/serverless', payload, headers: { 'content-type': contentType } });

  test.each([
    ['no code_id', '{"input": {}}'],
    ['an empty code_id', '{"code_id": ""}'],
    ['a numeric code_id', '{"code_id": 7}'],
    ['an array input', '{"code_id": "a", "input": [1]}'],
    ['a string input', '{"code_id": "a", "input": "x"}'],
    ['a null input', '{"code_id": "a", "input": null}'],
    ['malformed JSON', '{"code_id": '],
  ])('%s answers 400 Invalid payload in the envelope', async (_name, payload) => {
    const response = await post(payload);
    expect(response.statusCode).toBe(400);
    expect(response.json()).toMatchObject({ status: 'error', message: 'Invalid payload' });
    expect(response.json().data).not.toBeNull();
  });

  test('an unknown route answers 404 in the envelope', async () => {
    const response = await app.inject({ method: 'GET', url: '/nope' });
    expect(response.statusCode).toBe(404);
    expect(response.json()).toMatchObject({ status: 'error', message: 'No such endpoint' });
  });

  test('GET /health reports the pool', async () => {
    const response = await app.inject({ method: 'GET', url: '/health' });
    expect(response.statusCode).toBe(200);
    expect(response.json().data).toEqual({
      pool_size: 2,
      free: 2,
      usable: 2,
      queued: 0,
      spares: 0,
      draining: false,
      in_flight: 0,
      sealing: 'off',
    });
  });

  test('with no free cgroup: a wait of ADMISSION_WAIT_MS, then 503 Server busy with Retry-After, and no upstream call', async () => {
    const held = [await pool.reserve(), await pool.reserve()];
    try {
      const callsBefore = upstreamCalls;
      const started = performance.now();
      const response = await post('{"code_id": "hello"}');
      expect(performance.now() - started).toBeGreaterThanOrEqual(waitMs - 1);
      expect(response.statusCode).toBe(503);
      expect(response.headers['retry-after']).toBe('1');
      expect(response.json()).toMatchObject({ status: 'error', message: 'Server busy' });
      expect(response.json().data).toMatchObject({ pool_size: 2, waited_ms: waitMs });
      expect(response.headers['server-timing']).toMatch(/\bqueue;dur=/);
      expect(upstreamCalls).toBe(callsBefore);
    } finally {
      for (const lease of held) await lease!.release();
    }
  });

  test('with the queue full: 503 Server busy at once', async () => {
    const held = [await pool.reserve(), await pool.reserve()];
    try {
      const waiting = post('{"code_id": "hello"}');
      await waitFor('the first request to wait', async () => service.capacity.queued === 1);
      const started = performance.now();
      const refused = await post('{"code_id": "hello"}');
      expect(performance.now() - started).toBeLessThan(waitMs / 2);
      expect(refused.statusCode).toBe(503);
      expect(refused.json().data).toMatchObject({ pool_size: 2, queued: 1, waited_ms: 0 });
      expect((await waiting).statusCode).toBe(503);
    } finally {
      for (const lease of held) await lease!.release();
    }
  });

  test('a waiting request gets the first cgroup given back, and goes on to the upstream', async () => {
    const held = [await pool.reserve(), await pool.reserve()];
    const callsBefore = upstreamCalls;
    const waiting = post('{"code_id": "hello"}');
    await waitFor('the request to wait', async () => service.capacity.queued === 1);
    await held[0]!.release();
    const response = await waiting;
    // The test's upstream answers 500: the request got past admission.
    expect(response.json().message).toBe('There was a problem in generating the attestation document');
    expect(upstreamCalls).toBe(callsBefore + 1);
    expect(service.capacity.queued).toBe(0);
    await held[1]!.release();
    await service.capacity.settled();
    expect(pool.free).toBe(2);
  });

  test('an upstream failure answers 500 and gives the cgroup back', async () => {
    const response = await post('{"code_id": "hello"}');
    expect(response.statusCode).toBe(500);
    expect(response.json().message).toBe('There was a problem in generating the attestation document');
    await service.capacity.settled();
    expect(pool.free).toBe(2);
  });
});

describe('GET /health while shutting down', () => {
  test('answers 503 once shutdown has begun, while a request is still in flight', async () => {
    const root = await fakeCgroupV2Root(['workerd1']);
    // An attestation server that never answers keeps one request in flight.
    const silent = await listen(
      createServer(() => undefined),
      '127.0.0.1',
      0,
    );
    try {
      const pool = await CgroupPool.open({ root, version: 2, prefix: 'workerd' });
      const config = parseConfig({
        CGROUP_ROOT: root,
        ATTESTATION_URL: silent.url,
        UPSTREAM_TIMEOUT_MS: '500',
        LOG_LEVEL: 'silent',
      });
      const service = createService(config, { pool });
      const app = buildApp(service);
      const inFlight = app.inject({ method: 'POST', url: '/api/serverless', payload: { code_id: 'a' } });
      await sleep(50);
      const stopping = shutdown(app, service, 5_000);
      const health = await app.inject({ method: 'GET', url: '/health' });
      expect(health.statusCode).toBe(503);
      expect(health.json()).toMatchObject({ status: 'error', message: 'Server is shutting down' });
      expect((await inFlight).statusCode).toBe(500);
      await stopping;
    } finally {
      await silent.close();
      await removeTempDir(root);
    }
  });
});

describe('a usage ledger that fails', () => {
  test('its roll-up at start does not stop the service, which then runs no work until the ledger takes writes', async () => {
    const root = await fakeCgroupV2Root(['workerd1']);
    const dir = await makeTempDir('oyster-ledger-');
    try {
      const pool = await CgroupPool.open({ root, version: 2, prefix: 'workerd' });
      // A ledger whose every statement throws, as one on a failing disk does.
      const ledger = UsageLedger.open({ file: path.join(dir, 'usage.sqlite'), retentionDays: 30 });
      ledger.close();
      const app = buildApp(createService(parseConfig({ CGROUP_ROOT: root, LOG_LEVEL: 'silent' }), { pool, ledger }));
      await app.ready();
      const refused = await app.inject({ method: 'POST', url: '/api/serverless', payload: { code_id: 'a' } });
      expect(refused.statusCode).toBe(503);
      expect(refused.headers['x-oyster-error']).toBe('LEDGER_UNAVAILABLE');
      await app.close();
    } finally {
      await removeTempDir(root);
      await removeTempDir(dir);
    }
  });
});

describe('GET /health with no usable cgroup', () => {
  test("answers 503 when every cgroup of the pool holds someone else's process", async () => {
    const root = await fakeCgroupV2Root(['workerd1']);
    const stranger = spawn('sleep', ['30'], { stdio: 'ignore' });
    try {
      await writeFile(path.join(root, 'workerd1', 'cgroup.procs'), `${stranger.pid}\n`);
      const pool = await CgroupPool.open({ root, version: 2, prefix: 'workerd' });
      const app = buildApp(createService(parseConfig({ CGROUP_ROOT: root, LOG_LEVEL: 'silent' }), { pool }));
      // A standby that writes no pid into the fake cgroup.procs, where the stranger's is.
      pool.keepStandbys((cgroup) => ({
        cgroup,
        pid: undefined,
        exited: false,
        cannotJoin: false,
        start: () => Promise.reject(new Error('unused')),
        stop: async () => {},
      }));
      expect(await pool.reserve()).toBeUndefined();
      const health = await app.inject({ method: 'GET', url: '/health' });
      expect(health.statusCode).toBe(503);
      expect(health.json()).toMatchObject({ status: 'error', data: { pool_size: 1, usable: 0 } });
      expect(health.headers['x-oyster-error']).toBe('POOL_UNUSABLE');
      await app.close();
    } finally {
      stranger.kill('SIGKILL');
      await removeTempDir(root);
    }
  });
});

describe('the collection after a burst of invocations', () => {
  test('runs once the service has been idle for IDLE_GC_MS, and is counted in /metrics', async () => {
    const root = await fakeCgroupV2Root(['workerd1']);
    try {
      const pool = await CgroupPool.open({ root, version: 2, prefix: 'workerd' });
      const collectGarbage = vi.fn();
      // No attestation server listens there: each invocation fails fast, which is activity all the same.
      // Long enough that no invocation of the burst, on a busy machine, outlasts it.
      const idleMs = 500;
      const config = parseConfig({
        CGROUP_ROOT: root,
        ATTESTATION_URL: 'http://127.0.0.1:9',
        LOG_LEVEL: 'silent',
        IDLE_GC_MS: String(idleMs),
      });
      const app = buildApp(createService(config, { pool, collectGarbage }));
      const invoke = () => app.inject({ method: 'POST', url: '/api/serverless', payload: { code_id: 'a' } });
      for (let i = 0; i < 3; i++) expect((await invoke()).statusCode).toBe(500);
      expect(collectGarbage).not.toHaveBeenCalled();
      await waitFor('the collection', async () => collectGarbage.mock.calls.length > 0, idleMs * 4);
      expect(collectGarbage).toHaveBeenCalledTimes(1);
      const metrics = await app.inject({ method: 'GET', url: '/metrics' });
      expect(metrics.body).toMatch(/^oyster_idle_collections_total 1$/m);

      // Health checks and scrapes are not a burst.
      for (let i = 0; i < 3; i++) await app.inject({ method: 'GET', url: '/health' });
      await sleep(idleMs * 1.5);
      expect(collectGarbage).toHaveBeenCalledTimes(1);
      await app.close();
    } finally {
      await removeTempDir(root);
    }
  });
});
