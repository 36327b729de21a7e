import { chmod, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { parseConfig } from '../../src/config.js';
import { makeTempDir, removeTempDir } from '../../src/dev/tempDir.js';
import { cgroupsOrSkip } from '../helpers/cgroups.js';
import { metricValue } from '../helpers/metrics.js';
import { isWorkerd } from '../helpers/processes.js';
import { noLeftovers, type Stack, startStack } from '../helpers/stack.js';
import { waitFor } from '../helpers/wait.js';

const cgroups = await cgroupsOrSkip();

const startLimitMs = 1_000;
const workerdPath = parseConfig({}).workerdPath;

// The real workerd, except that its second start hangs without ever listening: the first
// invocation runs, and the spare started after it never becomes ready.
async function workerdWhoseSecondStartHangs(dir: string): Promise<string> {
  const wrapper = path.join(dir, 'workerd');
  const counter = path.join(dir, 'starts');
  await writeFile(
    wrapper,
    [
      '#!/bin/sh',
      `n=$(cat ${counter} 2>/dev/null || echo 0); n=$((n + 1)); echo $n > ${counter}`,
      `[ "$n" -eq 2 ] && exec sleep 600`,
      `exec ${workerdPath} "$@"`,
    ].join('\n'),
  );
  await chmod(wrapper, 0o755);
  return wrapper;
}

const killed = (stack: Stack, reason: string) => metricValue(stack.service, 'oyster_spares_killed_total', { reason });

describe.runIf(cgroups)('spare faults', () => {
  let dir: string;
  let stack: Stack;
  beforeAll(async () => {
    dir = await makeTempDir('oyster-spare-faults-');
    stack = await startStack({
      pool: { count: 2 },
      env: {
        SPARES_MAX: '1',
        EXECUTION_TIMEOUT_MS: String(startLimitMs),
        WORKERD_PATH: await workerdWhoseSecondStartHangs(dir),
      },
    });
  });
  afterAll(async () => {
    await stack?.close();
    await removeTempDir(dir);
  });

  test('a spare that does not listen within the start limit is killed, and its cgroup is free again', async () => {
    expect((await stack.invoke({ code_id: 'hello' })).statusCode).toBe(200);
    await stack.service.capacity.settled();
    expect(stack.service.capacity.spares.count).toBe(1);
    await waitFor('the hung spare to be killed', async () => (await killed(stack, 'start_failed')) === 1);
    expect(stack.service.capacity.spares.count).toBe(0);
    expect(await stack.leftovers()).toEqual(noLeftovers);
    // The next invocation starts its own workerd, and answers.
    expect((await stack.invoke({ code_id: 'hello' })).statusCode).toBe(200);
  });

  test('a spare whose workerd dies while it waits is let go of at once: the next invocation starts its own', async () => {
    await stack.service.capacity.settled();
    await waitFor('a listening spare', async () => stack.service.capacity.spares.listening === 1);
    const inPool = (await stack.leftovers()).processesInPool;
    const workerds = (await Promise.all(inPool.map(async (pid) => ((await isWorkerd(pid)) ? [pid] : [])))).flat();
    expect(workerds).toHaveLength(1);
    const spare = workerds[0]!;
    const endedBefore = await killed(stack, 'ended');
    process.kill(spare, 'SIGKILL');
    await waitFor('the dead spare to be let go of', async () => (await killed(stack, 'ended')) === endedBefore + 1);
    expect(stack.service.capacity.spares.count).toBe(0);
    const { statusCode, body } = await stack.invoke({ code_id: 'hello', input: { name: 'again' } });
    expect(statusCode).toBe(200);
    expect(body.data).toBe('Hello, again!');
  });
});
