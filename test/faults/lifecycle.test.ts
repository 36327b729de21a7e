import { readdir } from 'node:fs/promises';
import { request } from 'undici';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, test } from 'vitest';
import type { RunningServer } from '../../src/dev/listen.js';
import { makeTempDir, removeTempDir } from '../../src/dev/tempDir.js';
import { isServiceError, ServiceError } from '../../src/errors.js';
import { discoverCgroups, readPids } from '../../src/sandbox/cgroups.js';
import { cgroupRoot, cgroupsOrSkip, createTestPool, type TestPool } from '../helpers/cgroups.js';
import { isWorkerd } from '../helpers/processes.js';
import { type ServiceProcess, serviceEnv, startService } from '../helpers/service.js';
import {
  examplesDir,
  fixturesDir,
  invokeAbandoned,
  noLeftovers,
  processesMentioning,
  startStack,
} from '../helpers/stack.js';
import { startUpstreams } from '../helpers/upstreams.js';
import { waitFor } from '../helpers/wait.js';

const cgroups = await cgroupsOrSkip();

describe.runIf(cgroups)('the service process: shutdown and recovery', () => {
  let pool: TestPool;
  let runtimePath: string;
  let attestation: RunningServer;
  let storage: RunningServer;
  const started: ServiceProcess[] = [];

  beforeAll(async () => {
    ({ attestation, storage } = await startUpstreams([examplesDir, fixturesDir]));
  });
  afterAll(async () => {
    await Promise.all([attestation?.close(), storage?.close()]);
  });
  beforeEach(async () => {
    pool = await createTestPool({ count: 2 });
    runtimePath = await makeTempDir('oyster-runtime-');
  });
  afterEach(async () => {
    for (const service of started.splice(0)) service.child.kill('SIGKILL');
    await pool.remove();
    await removeTempDir(runtimePath);
  });

  const start = async (env: Readonly<Record<string, string>> = {}) => {
    const service = await startService({
      ...serviceEnv({ pool, runtimePath, attestation, storage }),
      ...env,
    });
    started.push(service);
    return service;
  };
  const invoke = (service: ServiceProcess, payload: unknown) =>
    request(`${service.url}/api/serverless`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(payload),
    }).then(async (response) => ({
      statusCode: response.statusCode,
      body: (await response.body.json()) as { message: string; data: unknown },
    }));
  const processesInPool = async () =>
    (await Promise.all((await discoverCgroups(cgroupRoot, pool.version, pool.prefix)).map(readPids))).flat();
  const workerdRunning = () =>
    waitFor('a workerd in the pool', async () =>
      (await Promise.all((await processesInPool()).map(isWorkerd))).includes(true),
    );

  test('SIGTERM: stops accepting, lets an in-flight request finish, exits 0 leaving nothing', async () => {
    const service = await start({ SHUTDOWN_GRACE_MS: '10000' });
    const inFlight = invoke(service, { code_id: 'slow', input: { ms: 1000 } });
    await workerdRunning();
    service.child.kill('SIGTERM');
    await waitFor('the listener to close', () =>
      invoke(service, { code_id: 'hello' }).then(
        () => false,
        () => true,
      ),
    );
    const answer = await inFlight;
    expect(answer.statusCode).toBe(200);
    expect(answer.body.data).toBe('done');
    expect(await service.exited).toBe(0);
    expect(await processesInPool()).toEqual([]);
    expect(await readdir(runtimePath)).toEqual([]);
    expect(await processesMentioning(runtimePath)).toEqual([]);
  });

  test('SIGTERM: past SHUTDOWN_GRACE_MS, kills the workers still running and exits 0', async () => {
    const service = await start({ SHUTDOWN_GRACE_MS: '500', EXECUTION_TIMEOUT_MS: '30000' });
    const inFlight = invoke(service, { code_id: 'loop' });
    await workerdRunning();
    const signalled = Date.now();
    service.child.kill('SIGTERM');
    const answer = await inFlight;
    // Not 503: the function had run, so a load balancer must not retry it elsewhere.
    expect(answer.statusCode).toBe(500);
    expect(answer.body.message).toBe('The server shut down while the function was running');
    expect(await service.exited).toBe(0);
    expect(Date.now() - signalled).toBeLessThan(5000);
    expect(await processesInPool()).toEqual([]);
    expect(await readdir(runtimePath)).toEqual([]);
  });

  test('after a SIGKILL with workers running, the next start kills them, removes stale files and serves', async () => {
    const crashed = await start();
    void invoke(crashed, { code_id: 'slow', input: { ms: 60_000 } }).catch(() => undefined);
    await workerdRunning();
    crashed.child.kill('SIGKILL');
    await crashed.exited;
    // Its idle standbys end by themselves once their stdin, the service's end of a pipe, closes;
    // the workerd it was running stays until the next start, with the standby waiting for it.
    const leftBehind = await waitFor('the idle standbys to end', async () => {
      const pids = await processesInPool();
      const workerds = await Promise.all(pids.map(isWorkerd));
      return pids.length === 2 && workerds.filter(Boolean).length === 1 && pids;
    });
    expect((await readdir(runtimePath)).length).toBe(1);

    const restarted = await start();
    expect(restarted.output()).toMatch(/"killedLeftovers":[1-9]/);
    expect(restarted.output()).toMatch(/"removedStaleDirs":1/);
    // Only the new run's standbys are in the pool now.
    const inPool = await processesInPool();
    expect(inPool.filter((pid) => leftBehind.includes(pid))).toEqual([]);
    expect(await Promise.all(inPool.map(isWorkerd))).not.toContain(true);
    const answer = await invoke(restarted, { code_id: 'hello', input: { name: 'again' } });
    expect(answer.statusCode).toBe(200);
    expect(answer.body.data).toBe('Hello, again!');
  });

  test('after a SIGKILL with a spare waiting, the next start kills it and starts afresh', async () => {
    const crashed = await start({ SPARES_MAX: '1' });
    expect((await invoke(crashed, { code_id: 'hello' })).statusCode).toBe(200);
    // The spare that invocation left: a workerd in the pool with no request.
    await workerdRunning();
    crashed.child.kill('SIGKILL');
    await crashed.exited;
    // The idle standby ends with the service; the spare's waits for its workerd, which stays.
    const spare = await waitFor('the spare and its standby, alone in the pool', async () => {
      const pids = await processesInPool();
      return pids.length === 2 && pids;
    });
    expect((await Promise.all(spare.map(isWorkerd))).filter(Boolean)).toHaveLength(1);

    const restarted = await start({ SPARES_MAX: '1' });
    expect(restarted.output()).toMatch(/"killedLeftovers":[1-9]/);
    const inPool = await processesInPool();
    expect(inPool.filter((pid) => spare.includes(pid))).toEqual([]);
    expect(await Promise.all(inPool.map(isWorkerd))).not.toContain(true);
    expect((await invoke(restarted, { code_id: 'hello' })).statusCode).toBe(200);
  });
});

describe.runIf(cgroups)('an invocation shutdown abandons before its workerd starts', () => {
  test('is answered 503 SHUTTING_DOWN, safe to retry elsewhere, not 500: no user code ran', async () => {
    const stack = await startStack({ pool: { count: 1 } });
    try {
      // Cached code: nothing between the cgroup and workerd's start looks at the signal.
      expect((await stack.invoke({ code_id: 'hello', input: { name: 'Ada' } })).statusCode).toBe(200);
      const failure = await invokeAbandoned(stack.service, 'hello', new ServiceError('SHUTTING_DOWN'));
      expect(isServiceError(failure, 'SHUTTING_DOWN')).toBe(true);
      expect(await stack.leftovers()).toEqual(noLeftovers);
    } finally {
      await stack.close();
    }
  });
});
