import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest';
import { type Cgroup, discoverCgroups, readPids } from '../../src/sandbox/cgroups.js';
import { cgroupsOrSkip } from '../helpers/cgroups.js';
import { childPids, isRunning, isWorkerd } from '../helpers/processes.js';
import { noLeftovers, type Stack, startStack } from '../helpers/stack.js';
import { waitFor } from '../helpers/wait.js';

const cgroups = await cgroupsOrSkip();

// Each free cgroup of the pool holds a standby: a shell of the service's, already inside the
// cgroup, that starts a fresh workerd for each invocation. The join (which can wait on the kernel)
// happens once, not during a request, and each workerd is forked from the small shell, not from
// the service.
describe.runIf(cgroups)('standbys in the cgroup pool', () => {
  let stack: Stack;
  let pool: Cgroup[];
  beforeAll(async () => {
    stack = await startStack({ pool: { count: 2 }, env: { EXECUTION_TIMEOUT_MS: '5000' } });
    pool = await discoverCgroups(stack.config.cgroupRoot, stack.pool.version, stack.config.cgroupPrefix);
  });
  afterAll(() => stack?.close());
  afterEach(async () => {
    expect(await stack.leftovers()).toEqual(noLeftovers);
  });

  // The pids in each cgroup, once every free cgroup has its standby inside.
  const standbysInPlace = () =>
    waitFor('a standby inside every cgroup', async () => {
      const pids = await Promise.all(pool.map(readPids));
      return pids.every((inCgroup) => inCgroup.length === 1) && pids.map((inCgroup) => inCgroup[0]!);
    });

  test("every free cgroup holds one process of the service's, not yet workerd", async () => {
    const pids = await standbysInPlace();
    expect(new Set(pids).size).toBe(pool.length);
    expect(pids.sort()).toEqual([...stack.pool.standbyPids].sort());
    const children = await childPids(process.pid);
    for (const pid of pids) {
      expect(children).toContain(pid);
      expect(await isWorkerd(pid)).toBe(false);
    }
  });

  test('an invocation runs a fresh workerd, started by the standby inside its cgroup, which stays for the next', async () => {
    const waiting = await standbysInPlace();
    const answer = stack.invoke({ code_id: 'slow', input: { ms: 300 } });
    const running = await waitFor('a workerd in the pool', async () => {
      for (const cgroup of pool) for (const pid of readPids(cgroup)) if (await isWorkerd(pid)) return { pid, cgroup };
      return undefined;
    });
    const standby = readPids(running.cgroup).find((pid) => waiting.includes(pid));
    expect(standby).toBeDefined();
    expect(await childPids(standby!)).toContain(running.pid);
    expect((await answer).statusCode).toBe(200);
    await stack.service.capacity.settled();
    // The process that ran the function is gone; the standbys are the same as before.
    expect(await isRunning(running.pid)).toBe(false);
    expect((await standbysInPlace()).sort()).toEqual([...waiting].sort());
  });

  test('a request that fails before workerd starts leaves the standby waiting for the next one', async () => {
    const before = await standbysInPlace();
    const response = await stack.invoke({ code_id: 'no-such-code' });
    expect(response.statusCode).toBe(404);
    await stack.service.capacity.settled();
    expect(await standbysInPlace()).toEqual(before);
  });

  test('a standby killed from outside is replaced, and requests keep working', async () => {
    const [victim] = await standbysInPlace();
    process.kill(victim!, 'SIGKILL');
    await waitFor('the standby to be gone', async () => !(await isRunning(victim!)));
    const responses = await Promise.all([stack.invoke({ code_id: 'hello' }), stack.invoke({ code_id: 'hello' })]);
    expect(responses.map((response) => response.statusCode)).toEqual([200, 200]);
    await stack.service.capacity.settled();
    expect(await standbysInPlace()).not.toContain(victim);
  });
});

describe.runIf(cgroups)('standbys at the end', () => {
  test('closing the app kills every standby and leaves the pool empty', async () => {
    const stack = await startStack({ pool: { count: 2 } });
    try {
      const pids = await waitFor(
        'two standbys',
        async () => stack.pool.standbyPids.length === 2 && stack.pool.standbyPids,
      );
      await stack.app.close();
      for (const pid of pids) expect(await isRunning(pid)).toBe(false);
      const cgroupsOfPool = await discoverCgroups(
        stack.config.cgroupRoot,
        stack.pool.version,
        stack.config.cgroupPrefix,
      );
      expect((await Promise.all(cgroupsOfPool.map(readPids))).flat()).toEqual([]);
    } finally {
      await stack.close();
    }
  });
});
