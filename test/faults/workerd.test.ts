import { spawn } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { discoverCgroups } from '../../src/sandbox/cgroups.js';
import { cgroupsOrSkip } from '../helpers/cgroups.js';
import { isWorkerd } from '../helpers/processes.js';
import { noLeftovers, type Stack, startStack } from '../helpers/stack.js';
import { waitFor } from '../helpers/wait.js';

const cgroups = await cgroupsOrSkip();

// The pid of a workerd running in the stack's pool, once there is one.
async function runningWorkerd(stack: Stack): Promise<number> {
  return waitFor('a workerd in the pool', async () => {
    for (const pid of (await stack.leftovers()).processesInPool) if (await isWorkerd(pid)) return pid;
    return undefined;
  });
}

describe.runIf(cgroups)('workerd faults', () => {
  let stack: Stack;
  beforeAll(async () => {
    stack = await startStack({ pool: { count: 2 }, env: { EXECUTION_TIMEOUT_MS: '10000' } });
  });
  afterAll(() => stack?.close());

  test('workerd killed from outside mid-request: 500 with a clear message, cgroup released', async () => {
    const answer = stack.invoke({ code_id: 'slow', input: { ms: 5000 } });
    const pid = await runningWorkerd(stack);
    await sleep(200);
    process.kill(pid, 'SIGKILL');
    const response = await answer;
    expect(response.statusCode).toBe(500);
    expect(response.body.message).toBe('The workerd runtime exited before it answered');
    expect(String(response.headers['x-oyster-usage'])).toMatch(/^outcome=crashed, /);
    expect(await stack.leftovers()).toEqual(noLeftovers);
  });

  test('a client that disconnects mid-request: workerd killed at once, files deleted, cgroup released', async () => {
    await stack.app.listen({ host: '127.0.0.1', port: 0 });
    const { port } = stack.app.server.address() as AddressInfo;
    const controller = new AbortController();
    const answer = request(`http://127.0.0.1:${port}/api/serverless`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ code_id: 'slow', input: { ms: 8000 } }),
      signal: controller.signal,
    }).catch((error: unknown) => error);
    await runningWorkerd(stack);
    controller.abort();
    await answer;
    const disconnected = Date.now();
    await waitFor(
      'everything to be cleaned up',
      async () => JSON.stringify(await stack.leftovers()) === JSON.stringify(noLeftovers),
      2000,
    );
    // Well before the function's own 8 s: the disconnect, not the function, ended it.
    expect(Date.now() - disconnected).toBeLessThan(2000);
  });

  test("a pool cgroup holding someone else's process is not handed out until it is empty", async () => {
    const [first, second] = await discoverCgroups(
      stack.config.cgroupRoot,
      stack.pool.version,
      stack.config.cgroupPrefix,
    );
    const stranger = spawn('sleep', ['60'], { stdio: 'ignore' });
    try {
      for (const procs of first!.procsFiles) await writeFile(procs, String(stranger.pid));
      const health = async () => (await stack.app.inject({ method: 'GET', url: '/health' })).json().data;

      // One at a time, each request gets a cgroup; it can only ever be the second.
      for (let i = 0; i < 3; i += 1) {
        const pids = new Set<number>();
        const answer = stack.invoke({ code_id: 'slow', input: { ms: 300 } });
        const pid = await runningWorkerd(stack);
        pids.add(pid);
        const inSecond = (await readFile(second!.procsFiles[0]!, 'utf8')).split('\n').map(Number);
        expect(inSecond).toContain(pid);
        expect((await answer).statusCode).toBe(200);
      }
      expect(await health()).toMatchObject({ usable: 1 });

      stranger.kill('SIGKILL');
      await waitFor('the stranger to leave', async () => (await readFile(first!.procsFiles[0]!, 'utf8')).trim() === '');
      const both = await Promise.all([stack.invoke({ code_id: 'hello' }), stack.invoke({ code_id: 'hello' })]);
      expect(both.map((response) => response.statusCode)).toEqual([200, 200]);
      await stack.service.capacity.settled();
      expect(await health()).toMatchObject({ usable: 2, free: 2 });
    } finally {
      stranger.kill('SIGKILL');
    }
  });
});
