// Starts bench/driver.ts for one side and sends it invocations over IPC.
import path from 'node:path';
import type { RuntimeDefaults } from '../src/code/workerdConfig.js';
import type { BareInvocation } from './bareWorkerd.js';
import { startNodeChild } from './child.js';
import type { Cleanup } from './cleanup.js';
import { type DriverKind, type DriverReply, type DriverRequest, driverReadyLine } from './driver.js';
import { type CpuTimes, readCpuTimes, readMemory } from './procStats.js';

const driverScript = path.resolve(import.meta.dirname, 'driver.js');
const stopGraceMs = 5_000;
// The driver applies its own time limit; this one only catches a driver that stopped answering.
const replyTimeoutMs = 40_000;

/** A driver for the code; it runs it with the compatibility date and flags the service gives code naming none. */
export interface DriverOptions extends RuntimeDefaults {
  readonly kind: DriverKind;
  readonly workerdPath: string;
  readonly codePath: string;
  /** For bare-cgroup: the cgroups to run in, each as its cgroup.procs files. */
  readonly cgroups?: ReadonlyArray<readonly string[]>;
  readonly cleanup: Cleanup;
}

/** A running driver process. */
export interface Driver {
  readonly pid: number;
  /** One invocation; resolves with the answer and, for bare workerd, its parts' durations. */
  invoke(body: string): Promise<{ answer: string; parts?: Omit<BareInvocation, 'answer'> }>;
  /** Its resident memory now, in MiB. */
  rssMb(): Promise<number>;
  /** Its own CPU, and that of every workerd (or Miniflare) it has spawned and reaped. */
  cpu(): Promise<CpuTimes>;
  stop(): Promise<void>;
}

/** Starts a driver and resolves once it is ready for work. */
export async function startDriver(options: DriverOptions): Promise<Driver> {
  const { child, subprocess } = await startNodeChild({
    name: `${options.kind} driver`,
    script: driverScript,
    args: [options.kind],
    env: {
      PATH: process.env.PATH ?? '/usr/bin:/bin',
      BENCH_WORKERD_PATH: options.workerdPath,
      BENCH_COMPATIBILITY_DATE: options.compatibilityDate,
      BENCH_COMPATIBILITY_FLAGS: options.compatibilityFlags.join(','),
      BENCH_CODE_PATH: options.codePath,
      ...(options.cgroups ? { BENCH_CGROUPS: JSON.stringify(options.cgroups) } : {}),
    },
    ready: new RegExp(`^${driverReadyLine}$`, 'm'),
    ipc: true,
    cleanup: options.cleanup,
  });
  const pending = new Map<number, { resolve: (reply: DriverReply) => void; timer: NodeJS.Timeout }>();
  subprocess.on('message', (reply: DriverReply) => {
    const waiter = pending.get(reply.id);
    if (!waiter) return;
    pending.delete(reply.id);
    clearTimeout(waiter.timer);
    waiter.resolve(reply);
  });
  // A driver that dies fails whatever it still owed.
  subprocess.once('exit', () => {
    for (const [id, waiter] of pending) {
      clearTimeout(waiter.timer);
      waiter.resolve({ id, ok: false, error: `the ${options.kind} driver exited:\n${child.output()}` });
    }
    pending.clear();
  });
  let nextId = 0;
  return {
    pid: child.pid,
    invoke: async (body) => {
      const id = nextId++;
      const reply = await new Promise<DriverReply>((resolve) => {
        const timer = setTimeout(() => {
          pending.delete(id);
          resolve({ id, ok: false, error: `the ${options.kind} driver did not answer in ${replyTimeoutMs} ms` });
        }, replyTimeoutMs);
        pending.set(id, { resolve, timer });
        subprocess.send({ id, body } satisfies DriverRequest, (error) => {
          if (!error || !pending.has(id)) return;
          pending.delete(id);
          clearTimeout(timer);
          resolve({ id, ok: false, error: `cannot reach the ${options.kind} driver: ${error.message}` });
        });
      });
      if (!reply.ok) throw new Error(reply.error);
      return reply.parts ? { answer: reply.answer, parts: reply.parts } : { answer: reply.answer };
    },
    rssMb: async () => (await readMemory(child.pid)).rssMb,
    cpu: () => readCpuTimes(child.pid),
    stop: () => child.stop(stopGraceMs),
  };
}
