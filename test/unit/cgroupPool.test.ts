import { spawn } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach, describe, expect, test } from 'vitest';
import { CgroupPool } from '../../src/capacity/cgroupPool.js';
import { StartupError } from '../../src/errors.js';
import type { Cgroup } from '../../src/sandbox/cgroups.js';
import type { WorkerdStandby } from '../../src/sandbox/standby.js';
import { fakeRootsRemovedAfterEach } from '../helpers/fakeCgroupfs.js';

const { v2Root } = fakeRootsRemovedAfterEach();

describe('opening', () => {
  test('an empty pool stops the start with a message naming the setup script', async () => {
    const root = await v2Root(['other']);
    const opening = CgroupPool.open({ root, version: undefined, prefix: 'workerd' });
    await expect(opening).rejects.toThrow(StartupError);
    await expect(opening).rejects.toThrow(/cgroupv2_setup\.sh/);
  });
});

// Standbys stand in for the shells the service keeps in free cgroups: a pid, whether it has
// ended, and a stop that ends it.
let nextPid = 1_000_000;
const made: Array<WorkerdStandby & { stopped: boolean }> = [];
const fakeStandby = (cgroup: Cgroup) => {
  const standby = {
    cgroup,
    pid: nextPid++,
    stopped: false,
    cannotJoin: false,
    get exited() {
      return this.stopped;
    },
    start: () => Promise.reject(new Error('not in these tests')),
    stop: async () => {
      standby.stopped = true;
    },
  };
  made.push(standby);
  return standby;
};
afterEach(() => {
  made.length = 0;
});

// A pool in a fake v2 cgroupfs, keeping fake standbys.
async function openPool(names: string[], root?: string): Promise<CgroupPool> {
  const pool = await CgroupPool.open({ root: root ?? (await v2Root(names)), version: 2, prefix: 'w' });
  pool.keepStandbys(fakeStandby);
  return pool;
}

describe('reservation', () => {
  test('concurrent callers never get the same cgroup, and the one too many gets none', async () => {
    const pool = await openPool(['w1', 'w2', 'w3']);
    const taken = await Promise.all(Array.from({ length: 4 }, () => pool.reserve()));
    const names = taken.filter((lease) => lease !== undefined).map((lease) => lease.cgroup.name);
    expect(names.sort()).toEqual(['w1', 'w2', 'w3']);
    expect(taken.filter((lease) => lease === undefined)).toHaveLength(1);
    expect(pool.free).toBe(0);
  });

  test('a released cgroup can be taken again', async () => {
    const pool = await openPool(['w1']);
    const lease = await pool.reserve();
    expect(await pool.reserve()).toBeUndefined();
    await lease!.release();
    expect((await pool.reserve())?.cgroup.name).toBe('w1');
  });

  test('a caller finding every cgroup busy waits for one that is on its way back, instead of giving up', async () => {
    const pool = await openPool(['w1']);
    const lease = (await pool.reserve())!;
    let cleanedUp!: () => void;
    const releasing = lease.release(new Promise<void>((resolve) => (cleanedUp = resolve)));
    let got: string | undefined;
    const waiting = pool.reserve().then((next) => (got = next?.cgroup.name));
    await sleep(20);
    expect(got).toBeUndefined();
    cleanedUp();
    await Promise.all([releasing, waiting]);
    expect(got).toBe('w1');
  });

  test("a cgroup holding someone else's process is not handed out until it is empty", async () => {
    const root = await v2Root(['w1', 'w2']);
    const pool = await openPool([], root);
    const stranger = spawn('sleep', ['30']);
    try {
      await writeFile(path.join(root, 'w1', 'cgroup.procs'), `${stranger.pid}\n`);
      expect((await pool.reserve())?.cgroup.name).toBe('w2');
      expect(await pool.reserve()).toBeUndefined();
      expect(pool.usable).toBe(1);
      await writeFile(path.join(root, 'w1', 'cgroup.procs'), '');
      expect((await pool.reserve())?.cgroup.name).toBe('w1');
    } finally {
      stranger.kill('SIGKILL');
    }
  });

  test('hands out nothing before it keeps standbys, rather than a cgroup without one', async () => {
    const pool = await CgroupPool.open({ root: await v2Root(['w1']), version: 2, prefix: 'w' });
    await expect(pool.reserve()).rejects.toThrow(/only while it keeps standbys/);
    expect(pool.free).toBe(1);
  });
});

describe('standbys', () => {
  test('every free cgroup gets one, handed over once with its lease', async () => {
    const pool = await openPool(['w1', 'w2']);
    expect(made.map((standby) => standby.cgroup.name)).toEqual(['w1', 'w2']);
    const lease = (await pool.reserve())!;
    expect(lease.standby).toBe(made[0]);
    expect(pool.standbyPids).toEqual([made[1]!.pid]);
  });

  test('a cgroup given back after its invocation keeps its standby while it still waits, and gets a new one if not', async () => {
    const pool = await openPool(['w1']);
    const first = (await pool.reserve())!;
    await first.release();
    expect(made).toHaveLength(1);
    expect(first.standby.exited).toBe(false);
    const second = (await pool.reserve())!;
    expect(second.standby).toBe(first.standby);
    await second.standby.stop();
    await second.release();
    expect(made).toHaveLength(2);
    expect((await pool.reserve())!.standby).toBe(made[1]);
  });

  test('a dead one is not handed over: the lease gets a new one', async () => {
    const pool = await openPool(['w1']);
    await made[0]!.stop();
    const lease = (await pool.reserve())!;
    expect(lease.standby).not.toBe(made[0]);
    expect(lease.standby.exited).toBe(false);
  });

  test("its own pid does not make a cgroup look occupied; a stranger's does, and its standby is stopped", async () => {
    const root = await v2Root(['w1', 'w2']);
    const pool = await openPool([], root);
    const stranger = spawn('sleep', ['30']);
    try {
      await writeFile(path.join(root, 'w1', 'cgroup.procs'), `${made[0]!.pid}\n${stranger.pid}\n`);
      await writeFile(path.join(root, 'w2', 'cgroup.procs'), `${made[1]!.pid}\n`);
      expect((await pool.reserve())?.cgroup.name).toBe('w2');
      expect(made[0]!.exited).toBe(true);
      expect(made[1]!.exited).toBe(false);
    } finally {
      stranger.kill('SIGKILL');
    }
  });

  test('a cgroup no standby can join is never handed out again, nor counted as usable', async () => {
    const pool = await CgroupPool.open({ root: await v2Root(['w1', 'w2']), version: 2, prefix: 'w' });
    // The kernel refuses the standby of w1, as it does one in a cgroup that passes controllers on.
    pool.keepStandbys((cgroup) => {
      const standby = fakeStandby(cgroup);
      if (cgroup.name === 'w1') Object.assign(standby, { stopped: true, cannotJoin: true });
      return standby;
    });
    const lease = (await pool.reserve())!;
    expect(lease.cgroup.name).toBe('w2');
    expect(await pool.reserve()).toBeUndefined();
    expect(pool.usable).toBe(1);
    await lease.release();
    expect((await pool.reserve())?.cgroup.name).toBe('w2');
  });

  test('a lease whose standby could not join gives its cgroup up on release', async () => {
    const pool = await openPool(['w1']);
    const lease = (await pool.reserve())!;
    Object.assign(lease.standby, { stopped: true, cannotJoin: true });
    await lease.release();
    expect(pool.usable).toBe(0);
    expect(await pool.reserve()).toBeUndefined();
  });

  test('discarding stops them all and makes no more', async () => {
    const pool = await openPool(['w1', 'w2']);
    const lease = (await pool.reserve())!;
    await pool.discardStandbys();
    expect(made.filter((standby) => standby !== lease.standby).every((standby) => standby.exited)).toBe(true);
    expect(pool.standbyPids).toEqual([]);
    await lease.release();
    expect(lease.standby.exited).toBe(true);
    expect(made).toHaveLength(2);
  });

  test('a standby given back after discarding is gone once its release is over', async () => {
    const pool = await CgroupPool.open({ root: await v2Root(['w1']), version: 2, prefix: 'w' });
    // One that takes a while to die, as a killed process does.
    pool.keepStandbys((cgroup) => {
      const standby = fakeStandby(cgroup);
      standby.stop = async () => {
        await sleep(50);
        standby.stopped = true;
      };
      return standby;
    });
    const lease = (await pool.reserve())!;
    await pool.discardStandbys();
    await lease.release();
    expect(lease.standby.exited).toBe(true);
  });
});
