import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, test } from 'vitest';
import type { Cgroup } from '../../src/cgroupPool.js';
import { isServiceError } from '../../src/errors.js';
import { OutputTail, prepareWorkerd, type WorkerdStandby } from '../../src/workerdProcess.js';
import { isRunning, isWorkerd } from '../helpers/processes.js';
import { waitFor } from '../helpers/wait.js';

describe('OutputTail', () => {
  test('keeps everything while under its limit', () => {
    const tail = new OutputTail(100);
    tail.push(Buffer.from('first '));
    tail.push(Buffer.from('second'));
    expect(tail.text()).toBe('first second');
  });

  test('keeps only the last maxBytes of a long stream, holding little more than that', () => {
    const tail = new OutputTail(1024);
    for (let i = 0; i < 10_000; i += 1) tail.push(Buffer.from(`line ${i}\n`.padStart(100, '.')));
    const text = tail.text();
    expect(text.length).toBe(1024);
    expect(text.endsWith('line 9999\n')).toBe(true);
  });

  test('cuts a single chunk larger than the limit to its end', () => {
    const tail = new OutputTail(4);
    tail.push(Buffer.from('abcdefgh'));
    expect(tail.text()).toBe('efgh');
  });
});

// A standby in a "cgroup" made of plain files: what it writes there is what the kernel would be told.
describe('a workerd standby', () => {
  const dirs: string[] = [];
  const standbys: WorkerdStandby[] = [];
  afterEach(async () => {
    await Promise.all(standbys.splice(0).map((standby) => standby.stop()));
    await Promise.all(dirs.splice(0).map((dir) => rm(dir, { recursive: true, force: true })));
  });

  const prepare = async (workerdPath = '/bin/false', procsFiles?: string[]) => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'oyster-standby-'));
    dirs.push(dir);
    const files = procsFiles ?? [path.join(dir, 'memory.procs'), path.join(dir, 'cpu.procs')];
    for (const file of procsFiles ? [] : files) await writeFile(file, '');
    const cgroup: Cgroup = { name: 'fake', procsFiles: files, oomFile: path.join(dir, 'memory.events') };
    const standby = prepareWorkerd({ workerdPath, cgroup });
    standbys.push(standby);
    return { standby, files };
  };
  const failureOf = (promise: Promise<unknown>) => promise.then(() => undefined, (error: unknown) => error);

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

  test('a binary that cannot run fails the start as WORKERD_START_FAILED', async () => {
    const { standby } = await prepare('/nonexistent/workerd');
    const failure = await failureOf(standby.start('/nonexistent/config.capnp', new AbortController().signal));
    expect(isServiceError(failure, 'WORKERD_START_FAILED')).toBe(true);
    expect(standby.exited).toBe(true);
  });

  test('a cgroup it cannot join fails the start as WORKERD_START_FAILED, naming the cgroup', async () => {
    const { standby } = await prepare('/bin/false', ['/nonexistent/cgroup.procs']);
    const failure = await failureOf(standby.start('/nonexistent/config.capnp', new AbortController().signal));
    expect(isServiceError(failure, 'WORKERD_START_FAILED')).toBe(true);
    expect(String((failure as Error).cause)).toMatch(/cannot join cgroup fake/);
  });

  test('a start whose time is up fails with the time limit and kills it', async () => {
    const { standby } = await prepare();
    const controller = new AbortController();
    controller.abort(new DOMException('timed out', 'TimeoutError'));
    const failure = await failureOf(standby.start('/nonexistent/config.capnp', controller.signal));
    expect(isServiceError(failure, 'EXECUTION_TIMEOUT')).toBe(true);
    expect(standby.exited).toBe(true);
    expect(await isRunning(standby.pid!)).toBe(false);
  });

  test('one killed before it ran workerd fails the start as WORKERD_START_FAILED, not as the user\'s code', async () => {
    const { standby, files } = await prepare();
    await waitFor('it to join', async () => (await readFile(files[1]!, 'utf8')).trim() === String(standby.pid));
    process.kill(standby.pid!, 'SIGKILL');
    const failure = await failureOf(standby.start('/nonexistent/config.capnp', new AbortController().signal));
    expect(isServiceError(failure, 'WORKERD_START_FAILED')).toBe(true);
    expect(String((failure as Error).cause)).toMatch(/ended by SIGKILL before it ran workerd/);
  });

  test('starts only once', async () => {
    const { standby } = await prepare();
    const first = failureOf(standby.start('/nonexistent/config.capnp', new AbortController().signal));
    await expect(standby.start('/nonexistent/config.capnp', new AbortController().signal)).rejects.toThrow(/only once/);
    await first;
  });
});
