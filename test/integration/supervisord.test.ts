import { readdir, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import getPort from 'get-port';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { devRootPem } from '../../src/dev/devAttestationChain.js';
import { makeTempDir, removeTempDir } from '../../src/dev/tempDir.js';
import { discoverCgroups, readPids } from '../../src/sandbox/cgroups.js';
import { cgroupRoot, cgroupsOrSkip, createTestPool, type TestPool } from '../helpers/cgroups.js';
import { invoke, statusOf } from '../helpers/http.js';
import { childPids, isRunning, isWorkerd, signal } from '../helpers/processes.js';
import { programOrSkip } from '../helpers/programs.js';
import { projectRoot } from '../helpers/projectRoot.js';
import { processesMentioning } from '../helpers/stack.js';
import { type Supervisord, startEnclaveStartPath } from '../helpers/supervisord.js';
import { runVerify, saveAnswer, saveBody } from '../helpers/verifyCommand.js';
import { waitFor } from '../helpers/wait.js';

const ready = (await cgroupsOrSkip()) && (await programOrSkip('supervisord', 'supervisor'));

// What identifies each program's process: its command line names the compiled entry point.
const serviceEntry = 'dist/src/main.js';
const devServersEntry = 'dist/src/dev/main.js';
const poolSize = 2;
const startTimeoutMs = 20_000;
// Short, so the test of stopping with a request running does not wait long for it.
const shutdownGraceMs = 1000;

const freePort = () => getPort({ host: '127.0.0.1' });
const answers200 = (url: string) => async () => (await statusOf(url)) === 200;

describe.runIf(ready)('supervisord runs the service as the enclave image does', () => {
  let pool: TestPool;
  let runtimePath: string;
  let workDir: string;
  let supervisord: Supervisord;
  let serviceUrl: string;

  beforeAll(async () => {
    // The start script makes the pool itself; creating it first under the same prefix only gives
    // the test a way to remove it (the setup scripts are idempotent).
    pool = await createTestPool({ count: poolSize });
    runtimePath = await makeTempDir('oyster-runtime-');
    workDir = await makeTempDir('oyster-supervisord-');
    const [port, attestationPort, storagePort] = [await freePort(), await freePort(), await freePort()];
    serviceUrl = `http://127.0.0.1:${port}`;
    supervisord = startEnclaveStartPath(
      {
        // The documented override: the enclave-only programs stay stopped, the development
        // servers run in their place.
        OYSTER_ENCLAVE_PROGRAMS: 'false',
        OYSTER_EXTRA_PROGRAMS: 'deploy/supervisord-dev.conf',
        POOL_SIZE: String(poolSize),
        POOL_MEMORY: '128M',
        CGROUP_ROOT: cgroupRoot,
        CGROUP_PREFIX: pool.prefix,
        HOST: '127.0.0.1',
        PORT: String(port),
        RUNTIME_PATH: runtimePath,
        ATTESTATION_URL: `http://127.0.0.1:${attestationPort}/attestation/raw`,
        STORAGE_URL: `http://127.0.0.1:${storagePort}/load`,
        EXECUTION_TIMEOUT_MS: '20000',
        SHUTDOWN_GRACE_MS: String(shutdownGraceMs),
        // Where the start script puts the key it makes; signing and the key check stay as the image has them.
        SIGNER_KEY_PATH: path.join(workDir, 'id.sec'),
        SIGNER_PUBLIC_KEY_PATH: path.join(workDir, 'id.pub'),
      },
      ['--pidfile', path.join(workDir, 'supervisord.pid')],
      path.join(workDir, 'output.log'),
    );
    try {
      await waitFor('the service under supervisord to be healthy', answers200(`${serviceUrl}/health`), startTimeoutMs);
      await waitFor(
        'the development attestation server',
        answers200(`http://127.0.0.1:${attestationPort}/root.pem`),
        startTimeoutMs,
      );
    } catch (error) {
      throw new Error(`${(error as Error).message}; supervisord's output:\n${supervisord.output()}`);
    }
  });

  // The workerd processes serving a request of this file's service, once there are any.
  const workers = () =>
    waitFor(
      'a workerd running the request',
      async () => {
        const pids = await processesMentioning(runtimePath);
        return pids.length > 0 && pids;
      },
      startTimeoutMs,
    );

  afterAll(async () => {
    await supervisord?.stop();
    // Only what this file's service started: workerd processes serving from its runtime directory.
    if (runtimePath) for (const pid of await processesMentioning(runtimePath)) signal(pid, 'SIGKILL');
    await pool?.remove();
    for (const dir of [runtimePath, workDir]) if (dir) await removeTempDir(dir);
  });

  test('starts with a pool for the detected cgroup version, the service and the development servers, not the enclave-only programs', async () => {
    const output = supervisord.output();
    expect(output).toContain(`cgroup v${pool.version} pool ready: ${pool.prefix}1..${pool.prefix}${poolSize}`);
    expect(output).toContain("spawned: 'server'");
    expect(output).toContain("spawned: 'dev-servers'");
    expect(output).not.toContain("spawned: 'my-server-proxy'");
    expect(output).not.toContain("spawned: 'attestation-server'");
    // The service's own log reaches supervisord's stdout.
    expect(output).toContain('"msg":"cgroup pool ready"');
  });

  test('signs with a key the start script made, which the service checked the attestation server attests', async () => {
    const generated = /generated the signing key (0x[0-9a-fA-F]{40})/.exec(supervisord.output())?.[1];
    expect(generated).toBeDefined();
    expect((await stat(path.join(workDir, 'id.sec'))).mode & 0o777).toBe(0o600);
    expect(supervisord.output()).toContain(`"signer":"${generated}","attestedKeyChecked":true`);

    await saveBody(`${serviceUrl}/attestation`, path.join(workDir, 'attestation.cbor'));
    await writeFile(path.join(workDir, 'root.pem'), devRootPem);
    const body = '{"code_id": "hello", "input": {"name": "Ada"}}';
    await saveAnswer(
      path.join(workDir, 'answer.txt'),
      `${serviceUrl}/api/serverless`,
      '-H',
      'content-type: application/json',
      '--data-binary',
      body,
    );
    const verified = await runVerify(
      ...['--attestation', path.join(workDir, 'attestation.cbor'), '--root', path.join(workDir, 'root.pem'), '--json'],
      ...['--request', body, '--code-file', path.join(projectRoot, 'examples/hello.js')],
      ...['--response', path.join(workDir, 'answer.txt')],
    );
    expect(verified.exitCode, verified.stderr).toBe(0);
    expect(JSON.parse(verified.stdout)).toMatchObject({ signer: generated, answer_signer: generated });
  });

  test('a request through the service works', async () => {
    const answer = await invoke(serviceUrl, { code_id: 'hello', input: { name: 'Ada' } });
    expect(answer.statusCode).toBe(200);
    expect(JSON.parse(answer.body)).toMatchObject({ status: 'success', data: 'Hello, Ada!' });
  });

  test('killed mid-request, the service is started again, clears the orphaned workerd, and serves the next request', async () => {
    const killed = await supervisord.programPid(serviceEntry);
    expect(killed).toBeDefined();
    const interrupted = invoke(serviceUrl, { code_id: 'loop', input: {} }).then(
      (answer) => answer.statusCode,
      () => 'connection lost',
    );
    const [orphan] = await workers();

    signal(killed!, 'SIGKILL');
    expect(await interrupted).toBe('connection lost');
    const restarted = await waitFor(
      'supervisord to start the service again',
      async () => {
        const pid = await supervisord.programPid(serviceEntry);
        return pid !== undefined && pid !== killed && pid;
      },
      startTimeoutMs,
    );
    await waitFor('the restarted service to be healthy', answers200(`${serviceUrl}/health`), startTimeoutMs);

    expect(supervisord.output()).toMatch(/exited: server \(terminated by SIGKILL; not expected\)/);
    expect(await isRunning(orphan!)).toBe(false);
    // What is in the pool now are the restarted service's standbys, none of them a workerd.
    const cgroups = await discoverCgroups(cgroupRoot, pool.version, pool.prefix);
    const inPool = (await Promise.all(cgroups.map(readPids))).flat();
    const children = await childPids(restarted);
    expect(inPool.filter((pid) => !children.includes(pid))).toEqual([]);
    expect(await Promise.all(inPool.map(isWorkerd))).not.toContain(true);
    const answer = await invoke(serviceUrl, { code_id: 'hello', input: { name: 'again' } });
    expect(answer.statusCode).toBe(200);
    expect(JSON.parse(answer.body)).toMatchObject({ data: 'Hello, again!' });
    expect(await supervisord.programPid(serviceEntry)).toBe(restarted);
  });

  test("on supervisord's stop signal (SIGTERM) the service ends a running request's workerd after the grace period and exits 0", async () => {
    const stopped = await supervisord.programPid(serviceEntry);
    const running = invoke(serviceUrl, { code_id: 'loop', input: {} }).catch(() => undefined);
    const [worker] = await workers();

    const signalled = Date.now();
    signal(stopped!, 'SIGTERM');
    await waitFor('the service to exit', async () => !(await isRunning(stopped!)), startTimeoutMs);
    const tookMs = Date.now() - signalled;
    // Looked at before supervisord's next start of the service could clear it.
    const workerLeft = await isRunning(worker!);
    await running;
    await waitFor('the restarted service to be healthy', answers200(`${serviceUrl}/health`), startTimeoutMs);

    expect(workerLeft).toBe(false);
    expect(supervisord.output()).toMatch(/exited: server \(exit status 0; expected\)/);
    // Not held open by the client's connection until supervisord's SIGKILL 15 s later.
    expect(tookMs).toBeLessThan(shutdownGraceMs + 2000);
  });

  test('stopping supervisord stops every program and leaves no workerd and no files', async () => {
    const programs = [await supervisord.programPid(serviceEntry), await supervisord.programPid(devServersEntry)];
    expect(programs).not.toContain(undefined);
    expect((await invoke(serviceUrl, { code_id: 'hello', input: {} })).statusCode).toBe(200);

    expect(await supervisord.stop()).toBe(0);
    for (const pid of programs) expect(await isRunning(pid!)).toBe(false);
    expect(supervisord.output()).toMatch(/stopped: server \(exit status 0\)/);
    expect(await processesMentioning(runtimePath)).toEqual([]);
    expect(await readdir(runtimePath)).toEqual([]);
  });
});
