import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, expect, test } from 'vitest';
import {
  detectCgroupVersion,
  discoverCgroups,
  readCpuUsageUs,
  readMemoryLimit,
  readOomKills,
  watchOom,
} from '../../src/sandbox/cgroups.js';
import { fakeRootsRemovedAfterEach } from '../helpers/fakeCgroupfs.js';

const { v2Root, emptyRoot } = fakeRootsRemovedAfterEach();

describe('cgroup version detection', () => {
  test('is 2 where the unified hierarchy has the memory controller', async () => {
    expect(await detectCgroupVersion(await v2Root([]))).toBe(2);
  });

  test('is 1 where only a v1 memory mount exists (a hybrid machine)', async () => {
    const root = await emptyRoot();
    await mkdir(path.join(root, 'unified'));
    await writeFile(path.join(root, 'unified', 'cgroup.controllers'), 'hugetlb\n');
    await mkdir(path.join(root, 'memory'));
    expect(await detectCgroupVersion(root)).toBe(1);
  });

  test('fails with a message naming CGROUP_ROOT where there is no memory controller', async () => {
    const root = await emptyRoot();
    await expect(detectCgroupVersion(root)).rejects.toThrow(/CGROUP_ROOT/);
  });
});

describe('cgroup discovery', () => {
  test('v2: every cgroup whose name starts with the prefix, in numeric order', async () => {
    const root = await v2Root(['workerd10', 'workerd2', 'workerd1', 'other', 'system.slice']);
    const cgroups = await discoverCgroups(root, 2, 'workerd');
    expect(cgroups.map((cgroup) => cgroup.name)).toEqual(['workerd1', 'workerd2', 'workerd10']);
    expect(cgroups[0]).toEqual({
      name: 'workerd1',
      procsFiles: [path.join(root, 'workerd1', 'cgroup.procs')],
      oomFile: path.join(root, 'workerd1', 'memory.events'),
      cpuCounter: { file: path.join(root, 'workerd1', 'cpu.stat'), format: 'cpu.stat' },
    });
  });

  test('v1: only cgroups present under both memory and cpu, joined through both', async () => {
    const root = await emptyRoot();
    for (const dir of ['memory/workerd1', 'cpu/workerd1', 'memory/workerd2'])
      await mkdir(path.join(root, dir), { recursive: true });
    const cgroups = await discoverCgroups(root, 1, 'workerd');
    expect(cgroups).toEqual([
      {
        name: 'workerd1',
        procsFiles: [path.join(root, 'memory/workerd1/cgroup.procs'), path.join(root, 'cpu/workerd1/cgroup.procs')],
        oomFile: path.join(root, 'memory/workerd1/memory.oom_control'),
        cpuCounter: undefined,
      },
    ]);
  });

  test('v1: joined through cpuacct too where it has the cgroup, which then counts its CPU', async () => {
    const root = await emptyRoot();
    for (const dir of ['memory/workerd1', 'cpu/workerd1', 'cpuacct/workerd1'])
      await mkdir(path.join(root, dir), { recursive: true });
    const [cgroup] = await discoverCgroups(root, 1, 'workerd');
    expect(cgroup!.procsFiles).toContain(path.join(root, 'cpuacct/workerd1/cgroup.procs'));
    expect(cgroup!.cpuCounter).toEqual({
      file: path.join(root, 'cpuacct/workerd1/cpuacct.usage'),
      format: 'cpuacct.usage',
    });
  });
});

describe('CPU counters', () => {
  test('v2: usage_usec of cpu.stat, in microseconds', async () => {
    const root = await v2Root(['w1']);
    const [cgroup] = await discoverCgroups(root, 2, 'w');
    // As a v2 kernel shows it (Debian's 6.1).
    await writeFile(
      cgroup!.cpuCounter!.file,
      'usage_usec 123456\nuser_usec 100000\nsystem_usec 23456\nnr_periods 0\nnr_throttled 0\nthrottled_usec 0\n',
    );
    expect(readCpuUsageUs(cgroup!)).toBe(123_456);
  });

  test('v1: cpuacct.usage, nanoseconds, read as microseconds; none without cpuacct', async () => {
    const root = await emptyRoot();
    for (const dir of ['memory/w1', 'cpu/w1', 'cpuacct/w1', 'memory/w2', 'cpu/w2'])
      await mkdir(path.join(root, dir), { recursive: true });
    await writeFile(path.join(root, 'cpuacct/w1/cpuacct.usage'), '98765432\n');
    const [counted, uncounted] = await discoverCgroups(root, 1, 'w');
    expect(readCpuUsageUs(counted!)).toBe(98_765.432);
    expect(readCpuUsageUs(uncounted!)).toBeUndefined();
  });
});

describe('OOM counters', () => {
  test('v2: read from memory.events oom_kill', async () => {
    const root = await v2Root(['w1']);
    const [cgroup] = await discoverCgroups(root, 2, 'w');
    const oomKilled = await watchOom(cgroup!);
    expect(await oomKilled()).toBe(false);
    await writeFile(cgroup!.oomFile, 'low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\noom_group_kill 0\n');
    expect(await readOomKills(cgroup!)).toBe(1);
    expect(await oomKilled()).toBe(true);
  });

  test('v1: read from memory.oom_control oom_kill', async () => {
    const root = await emptyRoot();
    for (const dir of ['memory/w1', 'cpu/w1']) await mkdir(path.join(root, dir), { recursive: true });
    await writeFile(path.join(root, 'memory/w1/memory.oom_control'), 'oom_kill_disable 0\nunder_oom 0\noom_kill 7\n');
    const [cgroup] = await discoverCgroups(root, 1, 'w');
    expect(await readOomKills(cgroup!)).toBe(7);
  });
});

describe('memory limits', () => {
  test('v2: memory.max in bytes; none where it says max', async () => {
    const root = await v2Root(['w1']);
    const [cgroup] = await discoverCgroups(root, 2, 'w');
    await writeFile(path.join(root, 'w1', 'memory.max'), '104857600\n');
    expect(readMemoryLimit(cgroup!)).toBe(100 * 1024 * 1024);
    await writeFile(path.join(root, 'w1', 'memory.max'), 'max\n');
    expect(readMemoryLimit(cgroup!)).toBeUndefined();
  });

  test("v1: memory.limit_in_bytes; none where it is the kernel's largest value", async () => {
    const root = await emptyRoot();
    for (const dir of ['memory/w1', 'cpu/w1']) await mkdir(path.join(root, dir), { recursive: true });
    const [cgroup] = await discoverCgroups(root, 1, 'w');
    await writeFile(path.join(root, 'memory/w1/memory.limit_in_bytes'), '134217728\n');
    expect(readMemoryLimit(cgroup!)).toBe(128 * 1024 * 1024);
    await writeFile(path.join(root, 'memory/w1/memory.limit_in_bytes'), '9223372036854771712\n');
    expect(readMemoryLimit(cgroup!)).toBeUndefined();
  });
});
