import { execFile } from 'node:child_process';
import { readdir, readFile, stat } from 'node:fs/promises';
import { createServer } from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { listen } from '../../src/dev/listen.js';
import { discoverCgroups } from '../../src/sandbox/cgroups.js';
import { cgroupsOrSkip } from '../helpers/cgroups.js';
import { noLeftovers, type Stack, startStack } from '../helpers/stack.js';
import { waitFor } from '../helpers/wait.js';

const cgroups = await cgroupsOrSkip();

// An address of this machine's that no deny range covers (the machine's own interface address may
// lie in a documentation range, as 192.0.2.2 does here): added to loopback for the test, so only
// the list of the machine's own addresses, read at start, stands between user code and it.
const ownPublicAddress = '192.88.99.2';

describe.runIf(cgroups)("the user's code and this machine's own addresses", () => {
  const ip = (...args: string[]) => promisify(execFile)('ip', args);
  let stack: Stack;
  beforeAll(async () => {
    await ip('address', 'add', `${ownPublicAddress}/32`, 'dev', 'lo');
    stack = await startStack({ pool: { count: 1 } });
  });
  afterAll(async () => {
    await stack?.close();
    await ip('address', 'del', `${ownPublicAddress}/32`, 'dev', 'lo');
  });

  test('an address of an interface that counts as public is denied too', async () => {
    const exposed = await listen(
      createServer((_request, response) => response.end('exposed')),
      '0.0.0.0',
      0,
    );
    try {
      const url = `http://${ownPublicAddress}:${new URL(exposed.url).port}/`;
      const response = await stack.invoke({ code_id: 'fetch', input: { url } });
      expect(response.body.data, url).toMatch(/^blocked /);
    } finally {
      await exposed.close();
    }
  });
});

describe.runIf(cgroups)("the user's code stays in its box", () => {
  let stack: Stack;
  beforeAll(async () => {
    // No code cache: each invocation's files are its own, and go with it.
    stack = await startStack({ pool: { count: 2 }, env: { EXECUTION_TIMEOUT_MS: '10000', CODE_CACHE_MAX_BYTES: '0' } });
  });
  afterAll(() => stack?.close());

  test('it cannot reach the attestation server, the storage server or the service on loopback', async () => {
    await stack.app.listen({ host: '127.0.0.1', port: 0 });
    const service = `http://127.0.0.1:${(stack.app.server.address() as { port: number }).port}/health`;
    for (const url of [
      // The attestation server would attest any key a function asked for: the chain of trust rests on this.
      `${stack.attestation.url}/attestation/raw?public_key=${'11'.repeat(64)}`,
      `${stack.storage.url}/load`,
      service,
      'http://localhost:1300/attestation/raw',
      'http://10.0.0.1/',
    ]) {
      const response = await stack.invoke({ code_id: 'fetch', input: { url } });
      expect(response.statusCode, url).toBe(200);
      expect(response.body.data, url).toMatch(/^blocked /);
    }
  });

  test('it cannot reach this machine through its interface addresses, even with the service on all of them', async () => {
    const outside = Object.values(os.networkInterfaces())
      .flatMap((addresses) => addresses ?? [])
      .filter((address) => !address.internal && address.family === 'IPv4');
    expect(outside.length, 'this test needs a network interface other than loopback').toBeGreaterThan(0);
    // A second server on every interface stands for this service listening on 0.0.0.0.
    const exposed = await listen(
      createServer((_request, response) => response.end('exposed')),
      '0.0.0.0',
      0,
    );
    try {
      const port = new URL(exposed.url).port;
      const urls = [...outside.map(({ address }) => `http://${address}:${port}/`), `http://0.0.0.0:${port}/`];
      for (const url of urls) {
        const response = await stack.invoke({ code_id: 'fetch', input: { url } });
        expect(response.body.data, url).toMatch(/^blocked /);
      }
    } finally {
      await exposed.close();
    }
  });

  test('its files are private to the service while it runs, and gone afterwards', async () => {
    // The earlier tests' files are gone (no code cache keeps them), so the one directory is this invocation's.
    await stack.service.capacity.settled();
    expect(await readdir(stack.config.runtimePath)).toEqual([]);
    const answer = stack.invoke({ code_id: 'slow', input: { ms: 1500 } });
    const dir = await waitFor('the invocation directory', async () => (await readdir(stack.config.runtimePath))[0]);
    const full = path.join(stack.config.runtimePath, dir);
    expect((await stat(full)).mode & 0o777).toBe(0o700);
    const files = await readdir(full);
    expect(files.sort()).toEqual(['config.capnp', 'worker.js']);
    for (const file of files) expect((await stat(path.join(full, file))).mode & 0o777).toBe(0o600);
    expect((await answer).statusCode).toBe(200);
    expect(await stack.leftovers()).toEqual(noLeftovers);
    expect(await readdir(stack.config.runtimePath)).toEqual([]);
  });

  test("megabytes printed to the console do not grow the service's memory; the answer carries the end of it", async () => {
    const megabytes = 128;
    await stack.invoke({ code_id: 'chatty', input: { megabytes: 4 } });
    const rssBefore = process.memoryUsage().rss;
    let peak = rssBefore;
    const sampler = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 5);
    const response = await stack
      .invoke({ code_id: 'chatty', input: { megabytes } })
      .finally(() => clearInterval(sampler));
    expect(response.statusCode).toBe(500);
    expect(response.body.data).toContain('last words');
    expect((response.body.data as string).length).toBeLessThanOrEqual(64 * 1024);
    const growth = (peak - rssBefore) / 1024 / 1024;
    console.log(`service peak RSS growth while a function printed ${megabytes} MiB: ${growth.toFixed(1)} MiB`);
    // Keeping the output would need all of it at once; what passes through is only ever chunks.
    expect(growth).toBeLessThan(megabytes / 2);
  });
});

describe.runIf(cgroups)('printing', () => {
  let stack: Stack;
  beforeAll(async () => {
    stack = await startStack({ pool: { count: 1 }, env: { EXECUTION_TIMEOUT_MS: '10000' } });
  });
  afterAll(() => stack?.close());

  test('a function printing in a loop costs the service little CPU: the printing is paid for in its cgroup', async () => {
    const printMs = 2_000;
    const started = performance.now();
    const cpuBefore = process.cpuUsage();
    const response = await stack.invoke({ code_id: 'print-loop', input: { ms: printMs } });
    const cpu = process.cpuUsage(cpuBefore);
    const wallMs = performance.now() - started;
    const serviceCpuMs = (cpu.user + cpu.system) / 1000;
    console.log(
      `service CPU while a function printed for ${printMs} ms: ${serviceCpuMs.toFixed(0)} ms of ${wallMs.toFixed(0)} ms`,
    );
    expect(response.statusCode).toBe(500);
    expect(response.body.data).toContain('last words');
    expect(response.body.data).toMatch(/printed \d+ lines/);
    expect(wallMs).toBeGreaterThanOrEqual(printMs);
    // Reading every line the function printed took the service about a core for as long.
    expect(serviceCpuMs).toBeLessThan(printMs / 5);
    expect(await stack.leftovers()).toEqual(noLeftovers);
  });
});

describe.runIf(cgroups)('the CPU cap', () => {
  let stack: Stack;
  beforeAll(async () => {
    stack = await startStack({ pool: { count: 2, cpuPercent: 20 }, env: { EXECUTION_TIMEOUT_MS: '1500' } });
  });
  afterAll(() => stack?.close());

  // Reads how often a cgroup's CPU cap has stopped its processes (cpu.stat nr_throttled, v1 and v2).
  async function throttled(name: string): Promise<number> {
    const dir =
      stack.pool.version === 2
        ? path.join(stack.config.cgroupRoot, name)
        : path.join(stack.config.cgroupRoot, 'cpu', name);
    const match = /^nr_throttled (\d+)$/m.exec(await readFile(path.join(dir, 'cpu.stat'), 'utf8'));
    return Number(match?.[1] ?? 0);
  }

  test('holds a CPU-bound loop to its cap, kills it at the time limit, and leaves room for others', async () => {
    const names = (await discoverCgroups(stack.config.cgroupRoot, stack.pool.version, stack.config.cgroupPrefix)).map(
      (c) => c.name,
    );
    const before = await Promise.all(names.map(throttled));
    const loop = stack.invoke({ code_id: 'loop' });
    await sleep(300);
    const hello = await stack.invoke({ code_id: 'hello', input: { name: 'neighbour' } });
    expect(hello.statusCode).toBe(200);
    const timedOut = await loop;
    expect(timedOut.statusCode).toBe(408);
    const after = await Promise.all(names.map(throttled));
    expect(after.some((count, i) => count > before[i]!)).toBe(true);
    expect(await stack.leftovers()).toEqual(noLeftovers);
  });
});
