import { execFileSync } from 'node:child_process';
import { readdir } from 'node:fs/promises';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import type { RunningServer } from '../../src/dev/listen.js';
import { makeTempDir, removeTempDir } from '../../src/dev/tempDir.js';
import { readOpenFileLimit } from '../../src/http/connectionRoom.js';
import { cgroupsOrSkip, createTestPool, type TestPool } from '../helpers/cgroups.js';
import { connect, type RawClient, stalledHead } from '../helpers/rawClient.js';
import { type ServiceProcess, serviceEnv, startService } from '../helpers/service.js';
import { examplesDir } from '../helpers/stack.js';
import { startUpstreams } from '../helpers/upstreams.js';
import { waitFor } from '../helpers/wait.js';

// The service may open 4096 files; more clients than that stall after their headers.
const openFileLimit = 4096;
const stalledCount = 4100;
const batch = 100;
const legitimate = 20;
// This process holds a descriptor for each stalled client, besides its own.
const ownNeed = stalledCount + 2048;

// Raises this process's own open-file limit where it is too low for the clients (root may).
function ownLimitRaised(): boolean {
  if ((readOpenFileLimit() ?? Number.POSITIVE_INFINITY) >= ownNeed) return true;
  try {
    execFileSync('prlimit', ['--pid', String(process.pid), `--nofile=${ownNeed}:${ownNeed}`], { stdio: 'ignore' });
  } catch {
    return false;
  }
  return (readOpenFileLimit() ?? 0) >= ownNeed;
}

const cgroups = await cgroupsOrSkip();
const roomForClients = ownLimitRaised();
if (!roomForClients) {
  const reason = `this process may not open the ${ownNeed} files its clients need (raise its open-file limit)`;
  if (process.env.CI === 'true') throw new Error(`CI=true but the connection-cap test cannot run: ${reason}`);
  console.warn(`Skipping the connection-cap test: ${reason}`);
}

// Slowloris against the service process at its open-file limit: thousands of connections that
// send their headers and then nothing, and legitimate clients that come after them.
describe.runIf(cgroups && roomForClients)('at the open-file limit, with thousands of stalled connections', () => {
  let upstreams: { attestation: RunningServer; storage: RunningServer };
  let pool: TestPool;
  let runtimePath: string;
  let service: ServiceProcess;
  const stalled: RawClient[] = [];
  beforeAll(async () => {
    upstreams = await startUpstreams([examplesDir]);
    pool = await createTestPool({ count: 2 });
    runtimePath = await makeTempDir('oyster-runtime-');
    service = await startService(
      {
        ...serviceEnv({ pool, runtimePath, ...upstreams }),
        LOG_LEVEL: 'warn',
        MAX_CONNECTIONS: '100000',
        // The stalled ones are not timed out while the test runs: only the cap makes room.
        REQUEST_TIMEOUT_MS: '120000',
      },
      { openFileLimit },
    );
    const port = Number(new URL(service.url).port);
    while (stalled.length < stalledCount) {
      stalled.push(...(await Promise.all(Array.from({ length: batch }, () => connect(port, stalledHead)))));
    }
    // A connection is established before the service accepts it: wait until it holds them.
    await waitFor(
      'the service to hold the stalled connections',
      async () => (await readdir(`/proc/${service.child.pid}/fd`)).length > openFileLimit - 512,
      10_000,
    );
  }, 120_000);
  afterAll(async () => {
    for (const client of stalled) client.socket.destroy();
    if (service) {
      service.child.kill('SIGTERM');
      await service.exited;
    }
    await pool?.remove();
    if (runtimePath) await removeTempDir(runtimePath);
    await upstreams?.attestation.close();
    await upstreams?.storage.close();
  }, 60_000);

  test('legitimate requests are answered 200 while thousands of the stalled connections are held', async () => {
    expect(service.output()).toContain('the open-file limit holds client connections below MAX_CONNECTIONS');
    for (let i = 0; i < legitimate; i += 1) {
      // Each on a connection of its own, which the service must make room for.
      const answer = await request(`${service.url}/api/serverless`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ code_id: 'hello', input: { name: `client ${i}` } }),
        reset: true,
      });
      expect(answer.statusCode, await answer.body.text()).toBe(200);
    }
    const held = stalled.filter((client) => !client.socket.closed).length;
    expect(held).toBeGreaterThan(openFileLimit - 512);
    const metrics = await (await request(`${service.url}/metrics`)).body.text();
    const closedForRoom = Number(/^oyster_connections_closed_for_room_total (\d+)/m.exec(metrics)?.[1]);
    expect(closedForRoom).toBeGreaterThanOrEqual(stalledCount - held);
  }, 60_000);
});
