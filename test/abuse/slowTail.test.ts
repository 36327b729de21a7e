import type net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import getPort from 'get-port';
import { Agent, request } from 'undici';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import type { RunningServer } from '../../src/dev/listen.js';
import { makeTempDir, removeTempDir } from '../../src/dev/tempDir.js';
import { maxQueuedBytes } from '../../src/tail/tailHub.js';
import { cgroupsOrSkip, createTestPool, type TestPool } from '../helpers/cgroups.js';
import { rssBytes } from '../helpers/processes.js';
import { connect } from '../helpers/rawClient.js';
import { type ServiceProcess, serviceEnv, startService } from '../helpers/service.js';
import { fixturesDir } from '../helpers/stack.js';
import { type OpenTail, openTail } from '../helpers/tail.js';
import { startUpstreams } from '../helpers/upstreams.js';
import { waitFor } from '../helpers/wait.js';

const cgroups = await cgroupsOrSkip();
const concurrency = 2;
// Each invocation logs this much, so that its event is about as big: far more in all than a tail holds.
const logKiB = 200;
// With a reading tail: enough for the heap and the allocator to reach their working size before "before" is read.
const warmUpInvocations = 100;
const stalledInvocations = 200;
// The service's collection after a burst runs this soon, so that what it reads as RSS is what it
// still holds, not garbage a loaded machine had not yet collected.
const idleGcMs = 300;
const collectedMs = 3 * idleGcMs;

// A reader of GET /admin/tail that stops reading, against the built service: what it costs the service.
describe.runIf(cgroups)('a tail whose reader never reads', () => {
  let pool: TestPool;
  let runtimePath: string;
  let upstreams: { attestation: RunningServer; storage: RunningServer };
  let service: ServiceProcess;
  let adminPort: number;
  const agent = new Agent({ connections: concurrency });

  beforeAll(async () => {
    pool = await createTestPool({ count: concurrency, memory: '128M' });
    runtimePath = await makeTempDir('oyster-runtime-');
    upstreams = await startUpstreams([fixturesDir]);
    adminPort = await getPort({ host: '127.0.0.1' });
    service = await startService({
      ...serviceEnv({ pool, runtimePath, ...upstreams }),
      ADMIN_PORT: String(adminPort),
      IDLE_GC_MS: String(idleGcMs),
      LOG_LEVEL: 'warn',
    });
  });
  afterAll(async () => {
    service?.child.kill('SIGKILL');
    await service?.exited;
    await agent.close();
    await Promise.all([upstreams?.attestation.close(), upstreams?.storage.close()]);
    await pool?.remove();
    await removeTempDir(runtimePath);
  });

  const invokeMany = async (count: number) => {
    let next = 0;
    const statuses: number[] = [];
    const worker = async () => {
      for (let i = next++; i < count; i = next++) {
        const response = await request(`${service.url}/fn/tail-logs/?kb=${logKiB}`, { dispatcher: agent });
        await response.body.dump();
        statuses.push(response.statusCode);
      }
    };
    await Promise.all(Array.from({ length: concurrency }, worker));
    return statuses;
  };

  test("neither grows the service's memory nor holds up invocations, and is told how many events it lost", async () => {
    const reading: OpenTail = await openTail(`http://127.0.0.1:${adminPort}`, 'tail-logs');
    expect(new Set(await invokeMany(warmUpInvocations))).toEqual(new Set([200]));
    await waitFor('the reading tail to get every event', async () => reading.events.length === warmUpInvocations);
    reading.close();

    const stalled = await connect(adminPort, 'GET /admin/tail?code_id=tail-logs HTTP/1.1\r\nHost: x\r\n\r\n');
    await waitFor('the tail to open', async () => stalled.received().includes(': tail open'));
    stalled.socket.pause();
    await sleep(collectedMs);
    const rssBefore = await rssBytes(service.child.pid!);
    expect(new Set(await invokeMany(stalledInvocations))).toEqual(new Set([200]));
    await sleep(collectedMs);
    const rssAfter = await rssBytes(service.child.pid!);
    const eventBytes = stalledInvocations * logKiB * 1024;
    console.log(
      `stalled tail: ${(eventBytes / 2 ** 20).toFixed(0)} MiB of events offered; service RSS ` +
        `${(rssBefore / 2 ** 20).toFixed(1)} → ${(rssAfter / 2 ** 20).toFixed(1)} MiB`,
    );
    // What a tail may hold, and room for the heap's own noise; without the bound it keeps most of what was offered.
    expect(rssAfter - rssBefore).toBeLessThan(maxQueuedBytes + 16 * 2 ** 20);

    // Reading again, it gets what was held and then how many it missed: together, every invocation.
    stalled.socket.resume();
    const lostNotice = /event: lost\ndata: \{"lost":(\d+)\}/;
    await waitFor('the lost notice', async () => lostNotice.test(stalled.received()), 10_000);
    const received = stalled.received().split('event: invocation\n').length - 1;
    const lost = Number(lostNotice.exec(stalled.received())![1]);
    expect(lost).toBeGreaterThan(0);
    expect(received + lost).toBe(stalledInvocations);
    (stalled.socket as net.Socket).destroy();
  });
});
