// Runs one side's invocations (bare workerd, bare workerd in a cgroup, or Miniflare) in a process of
// its own, on the bench's behalf over an IPC channel. Each side then pays for its own process:
// Miniflare's memory stays in Miniflare's process, and bare workerd is spawned from a lean one, as
// the limit should be.
import { readFile } from 'node:fs/promises';
import type { RuntimeDefaults } from '../src/code/workerdConfig.js';
import type { BareInvocation } from './bareWorkerd.js';
import { Cleanup } from './cleanup.js';
import { invocationTimeoutMs } from './timeouts.js';

/** The line the bench waits for before it sends work. */
export const driverReadyLine = 'DRIVER READY';

export type DriverKind = 'bare' | 'bare-cgroup' | 'miniflare';

/** What the bench sends: one invocation with this request body. */
export interface DriverRequest {
  readonly id: number;
  readonly body: string;
}

/** What the driver answers: the function's answer (and, for bare workerd, its parts' durations). */
export type DriverReply =
  | { readonly id: number; readonly ok: true; readonly answer: string; readonly parts?: Omit<BareInvocation, 'answer'> }
  | { readonly id: number; readonly ok: false; readonly error: string };

/** Settings the bench passes in the environment. */
export interface DriverEnv {
  readonly BENCH_WORKERD_PATH: string;
  readonly BENCH_COMPATIBILITY_DATE: string;
  /** Comma-separated, as COMPATIBILITY_FLAGS. */
  readonly BENCH_COMPATIBILITY_FLAGS: string;
  readonly BENCH_CODE_PATH: string;
  /** For bare-cgroup: JSON, one array of cgroup.procs files per cgroup. */
  readonly BENCH_CGROUPS?: string;
}

async function main(): Promise<void> {
  const kind = process.argv[2] as DriverKind;
  const env = process.env as unknown as DriverEnv;
  const cleanup = new Cleanup();
  const stop = () => void cleanup.runAll().finally(() => process.exit(0));
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
  // The IPC channel closes when the bench exits, however it exits.
  process.once('disconnect', stop);

  const code = await readFile(env.BENCH_CODE_PATH, 'utf8');
  const compatibility: RuntimeDefaults = {
    compatibilityDate: env.BENCH_COMPATIBILITY_DATE,
    compatibilityFlags: env.BENCH_COMPATIBILITY_FLAGS.split(',').filter((flag) => flag !== ''),
  };
  let invoke: (
    body: string,
    signal: AbortSignal,
  ) => Promise<{ answer: string; parts?: Omit<BareInvocation, 'answer'> }>;
  if (kind === 'bare' || kind === 'bare-cgroup') {
    const { prepareBareWorkerd } = await import('./bareWorkerd.js');
    const bare = await prepareBareWorkerd({
      workerdPath: env.BENCH_WORKERD_PATH,
      ...compatibility,
      code,
      cleanup,
      ...(kind === 'bare-cgroup' ? { cgroups: JSON.parse(env.BENCH_CGROUPS ?? '[]') as string[][] } : {}),
    });
    invoke = async (body, signal) => {
      const { answer, ...parts } = await bare.invoke(body, signal);
      return { answer, parts };
    };
  } else if (kind === 'miniflare') {
    // Loaded only here, so the bare driver stays small.
    const { prepareMiniflare } = await import('./miniflare.js');
    const miniflare = prepareMiniflare(code, compatibility, cleanup);
    invoke = async (body, signal) => ({ answer: await miniflare.invoke(body, signal) });
  } else {
    throw new Error(`unknown driver kind '${String(kind)}'`);
  }

  process.on('message', (message: DriverRequest) => {
    invoke(message.body, AbortSignal.timeout(invocationTimeoutMs)).then(
      (result) => process.send?.({ id: message.id, ok: true, ...result } satisfies DriverReply),
      (error: unknown) =>
        process.send?.({
          id: message.id,
          ok: false,
          error: error instanceof Error ? error.message : String(error),
        } satisfies DriverReply),
    );
  });
  process.stdout.write(`${driverReadyLine}\n`);
}

if (process.argv[1] === import.meta.filename) {
  main().catch((error: unknown) => {
    process.stderr.write(`bench driver: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
    process.exit(1);
  });
}
