// cgroupv2_setup.sh's checks of where it makes the pool, against fake cgroup v2 trees laid out as
// the kernel lays them out (test/helpers/fakeCgroupfs.ts); test/v2/ runs it on a real kernel, where
// the kernel's own refusals happen too.
import { execFile } from 'node:child_process';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, test } from 'vitest';
import { fakeChildCgroup, fakeRootsRemovedAfterEach } from '../helpers/fakeCgroupfs.js';
import { projectRoot } from '../helpers/projectRoot.js';

const run = promisify(execFile);
const setup = path.join(projectRoot, 'cgroupv2_setup.sh');

// The script refuses to run as anyone but root; CI runs as root, so there a skip is a failure.
const asRoot = process.getuid?.() === 0;
if (!asRoot) {
  if (process.env.CI === 'true')
    throw new Error('CI=true but the cgroupv2_setup.sh tests cannot run: not running as root');
  console.warn('Skipping the cgroupv2_setup.sh tests: the script runs only as root');
}

describe.runIf(asRoot)('cgroupv2_setup.sh', () => {
  const { v2Root: fakeRoot } = fakeRootsRemovedAfterEach();
  const runSetup = (cgroupRoot: string) =>
    run(setup, ['2', '128M', '50'], { env: { ...process.env, CGROUP_ROOT: cgroupRoot, CGROUP_PREFIX: 'pool' } }).then(
      () => '',
      (error: { stderr?: string }) => error.stderr ?? String(error),
    );
  const subdirectories = async (dir: string) =>
    (await readdir(dir, { withFileTypes: true })).filter((entry) => entry.isDirectory()).map((entry) => entry.name);

  test('makes the pool in a cgroup below the root that its parent delegates memory and cpu to', async () => {
    const service = path.join(await fakeRoot(['service']), 'service');
    expect(await runSetup(service)).toBe('');
    expect(await subdirectories(service)).toEqual(['pool1', 'pool2']);
    expect(await readFile(path.join(service, 'cgroup.subtree_control'), 'utf8')).toBe('+memory +cpu\n');
    expect(await readFile(path.join(service, 'pool1', 'memory.max'), 'utf8')).toBe('128M\n');
    expect(await readFile(path.join(service, 'pool1', 'cpu.max'), 'utf8')).toBe('50000 100000\n');
  });

  test('names the parent that does not delegate memory to a CGROUP_ROOT below the root, and makes nothing', async () => {
    const outer = path.join(await fakeRoot(['outer']), 'outer');
    const inner = await fakeChildCgroup(outer, 'inner');
    expect(await runSetup(inner)).toContain(
      `${outer} does not delegate the memory controller to ${inner}: echo +memory > ${outer}/cgroup.subtree_control`,
    );
    expect(await subdirectories(inner)).toEqual([]);
  });

  test('refuses a pool cgroup that passes controllers on, which no process could join', async () => {
    const root = await fakeRoot(['pool1']);
    await writeFile(path.join(root, 'pool1', 'cgroup.subtree_control'), 'cpu memory\n');
    expect(await runSetup(root)).toContain(
      `${root}/pool1 passes controllers (cpu memory) on to the cgroups below it, so no process can join it: echo '-cpu -memory' > ${root}/pool1/cgroup.subtree_control`,
    );
    expect(await subdirectories(root)).toEqual(['pool1']);
  });

  test('says so when the hierarchy itself has no memory controller', async () => {
    const root = await fakeRoot([]);
    await writeFile(path.join(root, 'cgroup.controllers'), 'cpu io pids\n');
    expect(await runSetup(root)).toContain(`the cgroup v2 hierarchy at ${root} has no memory controller`);
  });
});
