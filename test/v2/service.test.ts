// The built service against a real cgroup v2 kernel, end to end. This file runs only inside the
// guest that scripts/v2-vm.sh boots with cgroup_no_v1=all (test/integration/cgroupv2.test.ts
// starts it there); the host's own `vitest run` leaves test/v2/ out, as the host's cgroups are v1.
//
// The guest is emulated (qemu's TCG), so everything in it runs tens of times slower than on the
// host: a request that takes 20 ms there takes about 2 s here, and the service takes seconds to
// start. Every time limit below is a host-sized one stretched by `stretch`; none is about speed.
import { execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile, rmdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { parseConfig } from '../../src/config.js';
import { rawDocumentPath } from '../../src/dev/attestationServer.js';
import { makeTempDir, removeTempDir } from '../../src/dev/tempDir.js';
import {
  type Cgroup,
  detectCgroupVersion,
  discoverCgroups,
  readOomKills,
  readPids,
} from '../../src/sandbox/cgroups.js';
import { cgroupRoot, createTestPool, type TestPool } from '../helpers/cgroups.js';
import { getJson, invoke } from '../helpers/http.js';
import { isWorkerd } from '../helpers/processes.js';
import { projectRoot } from '../helpers/projectRoot.js';
import { type ServiceProcess, serviceEnv, startService } from '../helpers/service.js';
import { examplesDir, fixturesDir, processesMentioning, wranglerFixturesDir } from '../helpers/stack.js';
import { startUpstreams } from '../helpers/upstreams.js';
import { waitFor } from '../helpers/wait.js';

const run = promisify(execFile);
const stretch = 20;
// The host tests' 2 s would be 40 s here; a workerd start plus a short function takes about 2 s in
// the guest, so half of that still leaves a wide margin and keeps the time-out test short.
const executionTimeoutMs = 1_000 * stretch;
const poolSize = 2;
const poolMemory = 128 * 1024 * 1024;

interface Health {
  readonly data: {
    readonly pool_size: number;
    readonly free: number;
    readonly usable: number;
    readonly queued: number;
    readonly spares: number;
    readonly draining: boolean;
    readonly in_flight: number;
  };
}

// The built service on a pool of its own, with the development servers; close() removes it all.
interface V2Service {
  readonly service: ServiceProcess;
  readonly pool: TestPool;
  readonly runtimePath: string;
  close(): Promise<void>;
}

async function startV2Service(env: Readonly<Record<string, string>>): Promise<V2Service> {
  // Not a v1 machine by mistake: the whole point is the unified hierarchy.
  expect(await detectCgroupVersion(cgroupRoot)).toBe(2);
  const { attestation, storage } = await startUpstreams([examplesDir, fixturesDir, wranglerFixturesDir]);
  const pool = await createTestPool({ count: poolSize, memory: '128M' });
  const runtimePath = await makeTempDir('oyster-runtime-');
  const service = await startService(
    {
      ...serviceEnv({ pool, runtimePath, attestation, storage }),
      CGROUP_VERSION: '2',
      EXECUTION_TIMEOUT_MS: String(executionTimeoutMs),
      UPSTREAM_TIMEOUT_MS: String(5_000 * stretch),
      SHUTDOWN_GRACE_MS: String(10_000 * stretch),
      ADMISSION_WAIT_MS: String(1_000 * stretch),
      LOG_LEVEL: 'warn',
      ...env,
    },
    { startTimeoutMs: 10_000 * stretch },
  );
  return {
    service,
    pool,
    runtimePath,
    close: async () => {
      service.child.kill('SIGKILL');
      await service.exited;
      await pool.remove();
      await Promise.all([attestation.close(), storage.close()]);
      await removeTempDir(runtimePath);
    },
  };
}

describe('the service on a cgroup v2 kernel', () => {
  let started: V2Service;
  let pool: TestPool;
  let runtimePath: string;
  let service: ServiceProcess;
  let cgroups: Cgroup[];
  const workerdPath = parseConfig({}).workerdPath;

  beforeAll(async () => {
    // Spares would hold cgroups between the tests below, which count them; they have their own test.
    started = await startV2Service({ SPARES_MAX: '0' });
    ({ service, pool, runtimePath } = started);
    cgroups = [...pool.cgroups];
  });
  afterAll(() => started?.close());

  const call = (payload: unknown) => invoke(service.url, payload);
  const envelope = (body: string) => JSON.parse(body) as { status: string; message: string; data: unknown };
  const health = () => getJson<Health>(`${service.url}/health`);
  // Each free cgroup holds its standby and nothing else; the pid of each, by cgroup.
  const standbys = async () => {
    await waitFor('every cgroup to be free', async () => (await health()).data.free === poolSize, 5_000 * stretch);
    return cgroups.map((cgroup) => readPids(cgroup));
  };
  const workerdsInPool = async () =>
    (await Promise.all(cgroups.flatMap(readPids).map(async (pid) => ((await isWorkerd(pid)) ? [pid] : [])))).flat();

  test('the pool is made by cgroupv2_setup.sh with the limits it was given, a standby in each cgroup', async () => {
    expect(pool.version).toBe(2);
    for (const cgroup of cgroups) {
      const dir = path.dirname(cgroup.procsFiles[0]!);
      expect((await readFile(path.join(dir, 'cgroup.controllers'), 'utf8')).split(/\s+/)).toEqual(
        expect.arrayContaining(['cpu', 'memory']),
      );
      expect(Number(await readFile(path.join(dir, 'memory.max'), 'utf8'))).toBe(poolMemory);
      expect((await readFile(path.join(dir, 'cpu.max'), 'utf8')).trim()).toBe('100000 100000');
    }
    const pids = await standbys();
    expect(pids.map((inCgroup) => inCgroup.length)).toEqual(cgroups.map(() => 1));
    expect((await health()).data).toEqual({
      pool_size: poolSize,
      free: poolSize,
      usable: poolSize,
      queued: 0,
      spares: 0,
      draining: false,
      in_flight: 0,
      sealing: 'off',
    });
  });

  test('a function answers 200 with its output, and what it used from the cgroup v2 counters', async () => {
    const answer = await call({ code_id: 'hello', input: { name: 'v2' } });
    expect(answer.statusCode).toBe(200);
    expect(envelope(answer.body).data).toBe('Hello, v2!');
    // cpu.stat's usage_usec, and workerd's own VmHWM.
    const usage = String(answer.headers['x-oyster-usage']);
    expect(Number(/cpu-ms=([\d.]+)/.exec(usage)?.[1])).toBeGreaterThan(0);
    expect(Number(/peak-memory=(\d+)/.exec(usage)?.[1])).toBeGreaterThan(10 * 1024 * 1024);
  });

  test('code that does not compile answers 400', async () => {
    const answer = await call({ code_id: 'syntax-error', input: {} });
    expect(answer.statusCode).toBe(400);
    expect(envelope(answer.body).data).toMatch(/SyntaxError/);
  });

  test('a never-ending function answers 408 at the time limit', async () => {
    const started = Date.now();
    const answer = await call({ code_id: 'loop', input: {} });
    expect(answer.statusCode).toBe(408);
    expect(Date.now() - started).toBeLessThan(executionTimeoutMs + 1_500 * stretch);
  });

  test("a never-ending loop past its upload's limits.cpu_ms is ended by cpu.stat's count, long before the time limit", async () => {
    const started = Date.now();
    const answer = await request(`${service.url}/fn/limits/spin`);
    expect(answer.statusCode).toBe(500);
    expect(answer.headers['x-oyster-error']).toBe('CPU_LIMIT_EXCEEDED');
    await answer.body.dump();
    expect(Date.now() - started).toBeLessThan(executionTimeoutMs / 2);
  });

  test("past the memory limit: 500 out of memory from the cgroup's own oom_kill counter, the standby survives", async () => {
    const before = await standbys();
    const killsBefore = cgroups.map(readOomKills);
    const answer = await call({ code_id: 'oom', input: {} });
    expect(answer.statusCode).toBe(500);
    expect(envelope(answer.body).message).toBe('The execution of the code has run out of memory.');
    // The service's own log line for it (errors are logged at LOG_LEVEL=warn) names the code.
    expect(service.output()).toContain('"code":"OUT_OF_MEMORY"');
    // The kernel's memory.events counted exactly one kill, in one cgroup of the pool.
    const kills = cgroups.map(readOomKills).map((count, i) => count - killsBefore[i]!);
    expect(kills.reduce((sum, count) => sum + count, 0)).toBe(1);
    // The OOM killer took workerd, not the standby shell that started it.
    expect(await standbys()).toEqual(before);
  });

  test("objects past V8's heap limit, which memory.max sets below the cgroup's: 500 out of memory, no cgroup kill", async () => {
    const killsBefore = cgroups.map(readOomKills);
    // Arrays of 10,000 numbers: the heap fills with fewer objects to allocate and mark, sooner in an emulated guest.
    const answer = await call({ code_id: 'heap-oom', input: { items: 10_000 } });
    expect(answer.statusCode).toBe(500);
    expect(envelope(answer.body).message).toBe('The execution of the code has run out of memory.');
    expect(String(envelope(answer.body).data)).toContain('Reached heap limit');
    expect(cgroups.map(readOomKills)).toEqual(killsBefore);
  });

  test('more requests than cgroups: the extra ones wait for a cgroup, and each answers its own input', async () => {
    const answers = await Promise.all(
      Array.from({ length: poolSize + 2 }, (_, i) => call({ code_id: 'echo', input: { request: i } })),
    );
    for (const [i, answer] of answers.entries()) {
      expect(answer.statusCode).toBe(200);
      expect(JSON.parse(envelope(answer.body).data as string)).toEqual({ request: i });
    }
    const waited = answers.filter((answer) => /\bqueue;dur=/.test(String(answer.headers['server-timing'])));
    expect(waited.length).toBeGreaterThanOrEqual(2);
  });

  test('a client that disconnects: its workerd is killed and its cgroup freed', async () => {
    const controller = new AbortController();
    const answer = request(`${service.url}/api/serverless`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ code_id: 'slow', input: { ms: 60_000 * stretch } }),
      signal: controller.signal,
    }).catch((error: unknown) => error);
    await waitFor('a workerd in the pool', async () => (await workerdsInPool()).length > 0, 5_000 * stretch);
    controller.abort();
    await answer;
    await waitFor('no workerd in the pool', async () => (await workerdsInPool()).length === 0, 2_000 * stretch);
    expect((await standbys()).map((inCgroup) => inCgroup.length)).toEqual(cgroups.map(() => 1));
  });

  test('SIGTERM: an in-flight request finishes, the service exits 0 and leaves nothing in the pool', async () => {
    const inFlight = call({ code_id: 'slow', input: { ms: 1_000 } });
    await waitFor('a workerd in the pool', async () => (await workerdsInPool()).length > 0, 5_000 * stretch);
    service.child.kill('SIGTERM');
    const answer = await inFlight;
    expect(answer.statusCode).toBe(200);
    expect(envelope(answer.body).data).toBe('done');
    expect(await service.exited).toBe(0);
    // No process at all in any cgroup of the pool (the standbys went with the service), no
    // workerd or standby anywhere, and no file of any request.
    const current = await discoverCgroups(cgroupRoot, 2, pool.prefix);
    expect(current.map((cgroup) => readPids(cgroup))).toEqual(current.map(() => []));
    expect(await processesMentioning(workerdPath)).toEqual([]);
    expect(await readdir(runtimePath)).toEqual([]);
  });
});

describe('spares on a cgroup v2 kernel', () => {
  let started: V2Service;
  beforeAll(async () => {
    started = await startV2Service({ SPARES_MAX: '1' });
  });
  afterAll(() => started?.close());

  test('the next invocation of cached code takes the spare its last one left; SIGTERM kills it and leaves nothing', async () => {
    const { service, pool } = started;
    const health = () => getJson<Health>(`${service.url}/health`);
    const metric = async (name: string) => {
      const text = await (await request(`${service.url}/metrics`)).body.text();
      return Number(new RegExp(`^${name} (\\d+)$`, 'm').exec(text)?.[1] ?? 0);
    };
    const first = await invoke(service.url, { code_id: 'hello', input: { name: 'v2' } });
    expect(first.statusCode).toBe(200);
    await waitFor('a spare', async () => (await health()).data.spares === 1, 5_000 * stretch);
    await waitFor(
      'the spare to listen',
      async () => (await metric('oyster_spares_ready_total')) === 1,
      5_000 * stretch,
    );
    const second = await invoke(service.url, { code_id: 'hello', input: { name: 'spare' } });
    expect(second.statusCode).toBe(200);
    expect(JSON.parse(second.body).data).toBe('Hello, spare!');
    expect(await metric('oyster_spare_hits_total')).toBe(1);
    await waitFor('the next spare', async () => (await health()).data.spares === 1, 5_000 * stretch);
    service.child.kill('SIGTERM');
    expect(await service.exited).toBe(0);
    const current = await discoverCgroups(cgroupRoot, 2, pool.prefix);
    expect(current.map((cgroup) => readPids(cgroup))).toEqual(current.map(() => []));
    expect(await processesMentioning(started.runtimePath)).toEqual([]);
  });
});

// A CGROUP_ROOT below the hierarchy's root: a subtree delegated to the service, as a container or
// a systemd unit with Delegate= gets. Its name is unique; it is removed with all it holds.
describe('cgroupv2_setup.sh under a delegated cgroup', () => {
  const setup = path.join(projectRoot, 'cgroupv2_setup.sh');
  const outer = path.join(cgroupRoot, `oyv2${randomBytes(4).toString('hex')}`);
  const runSetup = (root: string, prefix: string) =>
    run(setup, ['2', '128M', '100'], { env: { ...process.env, CGROUP_ROOT: root, CGROUP_PREFIX: prefix } }).then(
      ({ stdout }) => ({ ok: true, output: stdout }),
      (error: { stderr?: string }) => ({ ok: false, output: error.stderr ?? String(error) }),
    );
  const children = async (dir: string) =>
    (await readdir(dir, { withFileTypes: true }))
      .filter((entry) => entry.isDirectory())
      .map((entry) => path.join(dir, entry.name));

  beforeAll(async () => {
    // The root hands both controllers down to `outer`, and `outer` to its children, as the
    // service's own setup made them; each test then sets up its own cgroup below.
    await writeFile(path.join(cgroupRoot, 'cgroup.subtree_control'), '+memory +cpu');
    await mkdir(outer);
    await writeFile(path.join(outer, 'cgroup.subtree_control'), '+memory +cpu');
  });
  afterAll(async () => {
    await removeTree(outer);
  });

  test('makes a pool whose cgroups get memory and cpu from a delegated parent, and the service runs in it', async () => {
    const result = await runSetup(outer, 'dlg');
    expect(result).toMatchObject({ ok: true });
    const made = (await children(outer)).filter((dir) => path.basename(dir).startsWith('dlg'));
    expect(made.map((dir) => path.basename(dir)).sort()).toEqual(['dlg1', 'dlg2']);
    for (const dir of made) {
      expect((await readFile(path.join(dir, 'cgroup.controllers'), 'utf8')).trim()).toBe('cpu memory');
      expect((await readFile(path.join(dir, 'cpu.max'), 'utf8')).trim()).toBe('100000 100000');
    }

    const { attestation, storage } = await startUpstreams([examplesDir]);
    const runtimePath = await makeTempDir('oyster-runtime-');
    // CGROUP_VERSION is left to the service: the delegated cgroup's own cgroup.controllers says 2.
    const service = await startService(
      {
        CGROUP_ROOT: outer,
        CGROUP_PREFIX: 'dlg',
        RUNTIME_PATH: runtimePath,
        ATTESTATION_URL: `${attestation.url}${rawDocumentPath}`,
        STORAGE_URL: `${storage.url}/load`,
        EXECUTION_TIMEOUT_MS: String(executionTimeoutMs),
        LOG_LEVEL: 'warn',
      },
      { startTimeoutMs: 10_000 * stretch },
    );
    try {
      const answer = await invoke(service.url, { code_id: 'hello', input: { name: 'delegated' } });
      expect(answer.statusCode).toBe(200);
      expect(JSON.parse(answer.body).data).toBe('Hello, delegated!');
      service.child.kill('SIGTERM');
      expect(await service.exited).toBe(0);
    } finally {
      service.child.kill('SIGKILL');
      await Promise.all([attestation.close(), storage.close()]);
      await removeTempDir(runtimePath);
    }
    for (const dir of made) expect(await readFile(path.join(dir, 'cgroup.procs'), 'utf8')).toBe('');
  });

  test('says which parent must delegate a controller it lacks', async () => {
    // `inner` gets nothing: `middle` delegates no controller to its children.
    const middle = path.join(outer, 'middle');
    const inner = path.join(middle, 'inner');
    await mkdir(inner, { recursive: true });
    expect((await readFile(path.join(inner, 'cgroup.controllers'), 'utf8')).trim()).toBe('');
    const result = await runSetup(inner, 'nd');
    expect(result.ok).toBe(false);
    expect(result.output).toContain(`${middle} does not delegate the memory controller to ${inner}`);
    expect(await children(inner)).toEqual([]);
  });

  test('refuses, saying why, a CGROUP_ROOT that holds a process ("no internal processes")', async () => {
    const busy = path.join(outer, 'busy');
    await mkdir(busy);
    const sleeper = spawn('sleep', ['600'], { stdio: 'ignore' });
    try {
      await writeFile(path.join(busy, 'cgroup.procs'), String(sleeper.pid));
      const result = await runSetup(busy, 'ip');
      expect(result.ok).toBe(false);
      expect(result.output).toContain(`it holds processes (${sleeper.pid})`);
      expect(await children(busy)).toEqual([]);
    } finally {
      sleeper.kill('SIGKILL');
    }
  });

  test('refuses a pool cgroup that passes controllers on: the kernel would refuse its standby', async () => {
    const parentOfOthers = path.join(outer, 'np1');
    await mkdir(path.join(parentOfOthers, 'below'), { recursive: true });
    await writeFile(path.join(parentOfOthers, 'cgroup.subtree_control'), '+memory');
    const sleeper = spawn('sleep', ['600'], { stdio: 'ignore' });
    try {
      // What the standby would meet: EBUSY, the "no internal processes" rule from the other side.
      await expect(writeFile(path.join(parentOfOthers, 'cgroup.procs'), String(sleeper.pid))).rejects.toMatchObject({
        code: 'EBUSY',
      });
    } finally {
      sleeper.kill('SIGKILL');
    }
    const result = await runSetup(outer, 'np');
    expect(result.ok).toBe(false);
    expect(result.output).toContain(
      `${parentOfOthers} passes controllers (memory) on to the cgroups below it, so no process can join it`,
    );
    expect(await readFile(path.join(parentOfOthers, 'memory.max'), 'utf8')).toBe('max\n');
  });
});

// Kills what is left in a cgroup and everything below it, then removes them, deepest first.
async function removeTree(dir: string): Promise<void> {
  const entries = await readdir(dir, { withFileTypes: true }).catch(() => []);
  for (const entry of entries) if (entry.isDirectory()) await removeTree(path.join(dir, entry.name));
  for (const pid of (await readFile(path.join(dir, 'cgroup.procs'), 'utf8').catch(() => ''))
    .split('\n')
    .filter(Boolean)) {
    try {
      process.kill(Number(pid), 'SIGKILL');
    } catch {
      // Gone already.
    }
  }
  await waitFor(
    `${dir} to be removed`,
    () =>
      rmdir(dir).then(
        () => true,
        (error: NodeJS.ErrnoException) => error.code === 'ENOENT',
      ),
    2_000 * stretch,
  );
}
