import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { makeTempDir } from '../../src/dev/tempDir.js';
import type { Cgroup } from '../../src/sandbox/cgroups.js';
import { tempDirsRemovedAfterEach } from './tempDirs.js';

// The files' contents are those a real cgroup v2 kernel (Debian's 6.1, in the guest of
// scripts/v2-vm.sh) shows for the pool cgroupv2_setup.sh makes. What plain files cannot model:
// the kernel's refusals (EBUSY when a cgroup below the root would both hold processes and delegate
// controllers, EINVAL or ESRCH for a bad pid in cgroup.procs); test/v2/ meets those for real.
const memoryEvents = 'low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\noom_group_kill 0\n';

// Lays out a temporary directory like a cgroup v2 root with the memory and cpu controllers, which
// it delegates to its children (as cgroupv2_setup.sh leaves it), and the given child cgroups.
export async function fakeCgroupV2Root(names: readonly string[]): Promise<string> {
  const root = await makeTempDir('oyster-cgroupfs-');
  await writeFile(path.join(root, 'cgroup.controllers'), 'cpuset cpu io memory hugetlb pids rdma misc\n');
  await writeFile(path.join(root, 'cgroup.subtree_control'), 'cpu memory\n');
  await writeFile(path.join(root, 'cgroup.procs'), '');
  for (const name of names) await fakeChildCgroup(root, name);
  return root;
}

// Adds a cgroup below a fake one. As in the kernel, it has exactly the controllers its parent
// delegates (the parent's cgroup.subtree_control), the memory files only with the memory
// controller, and a cgroup.type, which only cgroups below the root have; it delegates nothing.
export async function fakeChildCgroup(parent: string, name: string): Promise<string> {
  const dir = path.join(parent, name);
  const controllers = (await readFile(path.join(parent, 'cgroup.subtree_control'), 'utf8')).trim();
  await mkdir(dir);
  await writeFile(path.join(dir, 'cgroup.controllers'), `${controllers}\n`);
  await writeFile(path.join(dir, 'cgroup.subtree_control'), '\n');
  await writeFile(path.join(dir, 'cgroup.type'), 'domain\n');
  await writeFile(path.join(dir, 'cgroup.procs'), '');
  if (controllers.split(/\s+/).includes('memory')) await writeFile(path.join(dir, 'memory.events'), memoryEvents);
  return dir;
}

// For a test file: fake cgroup roots, each removed after the test that made it: a v2 root laid out
// as above, or an empty directory for the test to lay out itself.
export function fakeRootsRemovedAfterEach(): {
  v2Root(names: readonly string[]): Promise<string>;
  emptyRoot(): Promise<string>;
} {
  const { make, removeLater } = tempDirsRemovedAfterEach();
  return {
    v2Root: async (names) => removeLater(await fakeCgroupV2Root(names)),
    emptyRoot: () => make('oyster-cgroupfs-'),
  };
}

// A cgroup made of plain files in a directory: what a standby writes into them is what the kernel
// would be told, and nothing limits its processes.
export async function plainFileCgroup(dir: string): Promise<Cgroup> {
  const procsFiles = [path.join(dir, 'memory.procs'), path.join(dir, 'cpu.procs')];
  for (const file of procsFiles) await writeFile(file, '');
  return { name: 'fake', procsFiles, oomFile: path.join(dir, 'memory.events'), cpuCounter: undefined };
}
