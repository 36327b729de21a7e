import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterEach, describe, expect, test } from 'vitest';
import { isServiceError } from '../../src/errors.js';
import type { Cgroup } from '../../src/sandbox/cgroups.js';
import { prepareWorkerd, type WorkerdStandby } from '../../src/sandbox/standby.js';
import { plainFileCgroup } from '../helpers/fakeCgroupfs.js';
import { childPids, childPidsSync, isRunning, isWorkerd } from '../helpers/processes.js';
import { tempDirsRemovedAfterEach } from '../helpers/tempDirs.js';
import { waitFor } from '../helpers/wait.js';

// A stand-in for workerd, run as \`workerd serve --control-fd=3 --verbose <config>\`: says it listens
// on a port named by its config path, prints its pid and waits; a config path ending in "fail"
// makes it exit 1 at once.
const fakeWorkerd = `#!/bin/sh
config=$4
echo "run of $$ with $config"
case $config in *fail) exit 1 ;; esac
echo '{"event":"listen","socket":"http","port":'"\${config##*/}"'}' >&3
exec sleep 30
`;

// A standby in a "cgroup" made of plain files: what it writes there is what the kernel would be told.
describe('a workerd standby', () => {
  const dirs = tempDirsRemovedAfterEach();
  const standbys: WorkerdStandby[] = [];
  afterEach(async () => {
    await Promise.all(standbys.splice(0).map((standby) => standby.stop()));
  });

  const prepare = async (workerdPath = '/bin/false', procsFiles?: string[]) => {
    const dir = await dirs.make('oyster-standby-');
    const plain = await plainFileCgroup(dir);
    const cgroup: Cgroup = procsFiles ? { ...plain, procsFiles } : plain;
    const standby = prepareWorkerd({ workerdPath, cgroup });
    standbys.push(standby);
    return { standby, files: cgroup.procsFiles };
  };
  const failureOf = (promise: Promise<unknown>) =>
    promise.then(
      () => undefined,
      (error: unknown) => error,
    );

  test('joins every cgroup file at once and waits there, not yet workerd', async () => {
    const { standby, files } = await prepare();
    for (const file of files) {
      await waitFor(`its pid in ${file}`, async () => (await readFile(file, 'utf8')).trim() === String(standby.pid));
    }
    expect(await isRunning(standby.pid!)).toBe(true);
    expect(await isWorkerd(standby.pid!)).toBe(false);
    expect(standby.exited).toBe(false);
  });

  test('one never started stops, and is gone', async () => {
    const { standby } = await prepare();
    await standby.stop();
    expect(standby.exited).toBe(true);
    expect(await isRunning(standby.pid!)).toBe(false);
  });

  const fake = async () => {
    const dir = await dirs.make('oyster-fake-workerd-');
    const file = path.join(dir, 'workerd');
    await writeFile(file, fakeWorkerd, { mode: 0o755 });
    return file;
  };

  test('starts a fresh workerd for each start, one after the other, each with its own output', async () => {
    const { standby } = await prepare(await fake());
    const first = await standby.start('/configs/4001', new AbortController().signal);
    expect(first.port).toBe(4001);
    await first.stop();
    expect(first.exited).toBe(true);
    expect(first.output()).toMatch(/^run of \d+ with \/configs\/4001\n$/);

    const second = await standby.start('/configs/4002', new AbortController().signal);
    expect(second.port).toBe(4002);
    await second.stop();
    expect(second.output()).toMatch(/^run of \d+ with \/configs\/4002\n$/);
    expect(second.output()).not.toBe(first.output());
    // The standby itself is still there, waiting for the next.
    expect(standby.exited).toBe(false);
    expect(await isRunning(standby.pid!)).toBe(true);
  });

  test('stopping a workerd kills it, not the standby', async () => {
    const { standby } = await prepare(await fake());
    const worker = await standby.start('/configs/4003', new AbortController().signal);
    const [pid] = await childPids(standby.pid!);
    expect(await isRunning(pid!)).toBe(true);
    await worker.stop();
    expect(await isRunning(pid!)).toBe(false);
    expect(await isRunning(standby.pid!)).toBe(true);
  });

  test("a workerd that exits before it listens fails the start as the user's code, with its output", async () => {
    const { standby } = await prepare(await fake());
    const failure = await failureOf(standby.start('/configs/fail', new AbortController().signal));
    expect(isServiceError(failure, 'USER_CODE_INVALID')).toBe(true);
    expect((failure as { data: unknown }).data).toMatch(/run of \d+ with \/configs\/fail/);
    expect(standby.exited).toBe(false);
  });

  test('a binary that cannot run fails the start as WORKERD_START_FAILED', async () => {
    const { standby } = await prepare('/nonexistent/workerd');
    const failure = await failureOf(standby.start('/nonexistent/config.capnp', new AbortController().signal));
    expect(isServiceError(failure, 'WORKERD_START_FAILED')).toBe(true);
    expect(String((failure as Error).cause)).toMatch(/cannot run \/nonexistent\/workerd/);
  });

  test("a cgroup it cannot join fails the start as WORKERD_START_FAILED, naming the cgroup, with the shell's reason", async () => {
    const { standby } = await prepare('/bin/false', ['/nonexistent/cgroup.procs']);
    const failure = await failureOf(standby.start('/nonexistent/config.capnp', new AbortController().signal));
    expect(isServiceError(failure, 'WORKERD_START_FAILED')).toBe(true);
    expect(String((failure as Error).cause)).toMatch(/cannot join cgroup fake/);
    expect((failure as { data: unknown }).data).toMatch(/\/nonexistent\/cgroup\.procs/);
    // So the pool can keep that cgroup out of its rotation.
    expect(standby.cannotJoin).toBe(true);
  });

  test('a standby stopped from outside could join its cgroup', async () => {
    const { standby } = await prepare(await fake());
    await standby.stop();
    expect(standby.exited).toBe(true);
    expect(standby.cannotJoin).toBe(false);
  });

  test('a start whose time is up fails with the time limit and starts nothing', async () => {
    const { standby } = await prepare(await fake());
    const controller = new AbortController();
    controller.abort(new DOMException('timed out', 'TimeoutError'));
    const failure = await failureOf(standby.start('/configs/4004', controller.signal));
    expect(isServiceError(failure, 'EXECUTION_TIMEOUT')).toBe(true);
    // Nothing was started: the next start is the standby's first.
    const worker = await standby.start('/configs/4005', new AbortController().signal);
    expect(worker.port).toBe(4005);
    await worker.stop();
  });

  test('a time limit that runs out while workerd starts kills it', async () => {
    const { standby } = await prepare(await fake());
    const controller = new AbortController();
    // The config path names no port: the stand-in never says it listens.
    const starting = failureOf(standby.start('/configs/never', controller.signal));
    const [pid] = await waitFor('a workerd of the standby', async () => {
      const pids = await childPids(standby.pid!);
      return pids.length > 0 && pids;
    });
    controller.abort(new DOMException('timed out', 'TimeoutError'));
    expect(isServiceError(await starting, 'EXECUTION_TIMEOUT')).toBe(true);
    expect(await isRunning(pid!)).toBe(false);
    expect(await isRunning(standby.pid!)).toBe(true);
  });

  test('a standby killed from outside fails the start as WORKERD_START_FAILED, naming the signal', async () => {
    const { standby, files } = await prepare();
    await waitFor('it to join', async () => (await readFile(files[1]!, 'utf8')).trim() === String(standby.pid));
    process.kill(standby.pid!, 'SIGKILL');
    const failure = await failureOf(standby.start('/nonexistent/config.capnp', new AbortController().signal));
    expect(isServiceError(failure, 'WORKERD_START_FAILED')).toBe(true);
    expect(String((failure as Error).cause)).toMatch(/ended by SIGKILL/);
  });

  test('a standby that dies while its workerd runs takes that workerd with it, its output complete', async () => {
    const { standby } = await prepare(await fake());
    const worker = await standby.start('/configs/4006', new AbortController().signal);
    const [pid] = await childPids(standby.pid!);
    process.kill(standby.pid!, 'SIGKILL');
    expect(await worker.exitsWithin(5_000)).toBe(true);
    expect(await isRunning(pid!)).toBe(false);
    expect(worker.output()).toMatch(/^run of \d+ with \/configs\/4006\n$/);
  });

  test('a workerd forked just before its standby died does not outlive the failed start', async () => {
    const { standby } = await prepare(await fake());
    const starting = failureOf(standby.start('/configs/never', new AbortController().signal));
    // Without letting the event loop run: the standby dies while its exec event may still be unread.
    const deadline = Date.now() + 5_000;
    let forked: number[] = [];
    while (forked.length === 0 && Date.now() < deadline) forked = childPidsSync(standby.pid!);
    expect(forked, 'the standby forked no workerd').not.toEqual([]);
    process.kill(standby.pid!, 'SIGKILL');
    expect(isServiceError(await starting, 'WORKERD_START_FAILED')).toBe(true);
    await waitFor('its workerd to be gone', async () => !(await isRunning(forked[0]!)));
  });

  test('starts one workerd at a time', async () => {
    const { standby } = await prepare(await fake());
    const worker = await standby.start('/configs/4007', new AbortController().signal);
    await expect(standby.start('/configs/4008', new AbortController().signal)).rejects.toThrow(/one workerd at a time/);
    await worker.stop();
  });
});
