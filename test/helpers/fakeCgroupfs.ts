import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach } from 'vitest';

// Lays out a temporary directory like a cgroup v2 root with the memory and cpu controllers and
// the given child cgroups, each with empty cgroup.procs and a memory.events file.
export async function fakeCgroupV2Root(names: readonly string[]): Promise<string> {
  const root = await mkdtemp(path.join(os.tmpdir(), 'oyster-cgroupfs-'));
  await writeFile(path.join(root, 'cgroup.controllers'), 'cpuset cpu io memory hugetlb pids\n');
  await writeFile(path.join(root, 'cgroup.procs'), '');
  for (const name of names) {
    await mkdir(path.join(root, name));
    await writeFile(path.join(root, name, 'cgroup.procs'), '');
    await writeFile(
      path.join(root, name, 'memory.events'),
      'low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\noom_group_kill 0\n',
    );
  }
  return root;
}

// For a test file: a function that makes a fake v2 root (or takes a directory made otherwise) and
// has it removed after the test that made it.
export function fakeRootsRemovedAfterEach(): {
  v2Root(names: readonly string[]): Promise<string>;
  removeLater(dir: string): string;
} {
  const roots: string[] = [];
  afterEach(async () => {
    await Promise.all(roots.splice(0).map((root) => rm(root, { recursive: true, force: true })));
  });
  const removeLater = (dir: string) => {
    roots.push(dir);
    return dir;
  };
  return { v2Root: async (names) => removeLater(await fakeCgroupV2Root(names)), removeLater };
}
