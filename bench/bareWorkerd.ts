// The physical limit: what one invocation costs with nothing but workerd itself. The same binary,
// the service's own config renderer (a service worker on 127.0.0.1:0, with the same egress
// service, without the guard worker in front) and the same readiness method as the service (the port read from --control-fd), spawned directly: no
// cgroup, no shell wrapper, no files written per invocation. Optionally inside a cgroup, joined the
// way the service joins it, to show what cgroup placement alone costs. Run from a lean process
// (see driver.ts): fork() copies the parent's page tables, so a big parent pays more.
import { type ChildProcess, spawn } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { request } from 'node:http';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import type { Readable } from 'node:stream';
import { egressDenyList } from '../src/code/egress.js';
import { type RuntimeDefaults, renderWorkerdConfig } from '../src/code/workerdConfig.js';
import { makeTempDir, removeTempDir } from '../src/dev/tempDir.js';
import { watchControl } from '../src/sandbox/standbyProtocol.js';
import type { Cleanup } from './cleanup.js';

const scriptFileName = 'worker.js';
const configFileName = 'config.capnp';
// The service's own config renderer; no guard: the function answers the socket itself.
const renderConfig = (options: BareWorkerdOptions) =>
  renderWorkerdConfig({
    code: { format: 'service-worker', file: scriptFileName, bindings: [] },
    compatibilityDate: options.compatibilityDate,
    compatibilityFlags: options.compatibilityFlags,
    allowPublicEgress: true,
    deniedEgress: egressDenyList(),
  });
// Exit status of the wrapper when it cannot join a cgroup.
const cgroupJoinFailed = 125;
// Writes its own pid into every cgroup.procs named before "--", then execs the command: workerd
// starts inside the cgroup without the cgroup holding anything else.
const joinCgroupsThenExec = `while [ "$1" != -- ]; do echo $$ > "$1" || exit ${cgroupJoinFailed}; shift; done; shift; exec "$@"`;

/** How bare workerd runs the code: with the compatibility date and flags the service gives code that names none. */
export interface BareWorkerdOptions extends RuntimeDefaults {
  readonly workerdPath: string;
  /** The worker's source, a service worker like the ones the service runs. */
  readonly code: string;
  /** When given, each invocation runs in one of these cgroups (each a list of cgroup.procs files), one invocation per cgroup at a time. */
  readonly cgroups?: ReadonlyArray<readonly string[]>;
  readonly cleanup: Cleanup;
}

/** One bare invocation: the answer and how long each part took, in milliseconds. */
export interface BareInvocation {
  readonly answer: string;
  /** Spawn until workerd reports its port. */
  readonly startMs: number;
  /** POST until the whole answer is read. */
  readonly executionMs: number;
  /** SIGKILL until the process is reaped. */
  readonly cleanupMs: number;
}

/** Runs one invocation at a time or many at once; each spawns, serves one POST and is reaped. */
export interface BareWorkerd {
  /** Spawns workerd, waits until it listens, POSTs body, kills and reaps it. */
  invoke(body: string, signal: AbortSignal): Promise<BareInvocation>;
  remove(): Promise<void>;
}

/** Writes the ready-made config once; every invocation serves it. */
export async function prepareBareWorkerd(options: BareWorkerdOptions): Promise<BareWorkerd> {
  const dir = await makeTempDir('oyster-bench-bare-');
  const live = new Set<ChildProcess>();
  const remove = options.cleanup.add('bare workerd', async () => {
    await Promise.all([...live].map((child) => killAndReap(child)));
    await removeTempDir(dir);
  });
  await writeFile(path.join(dir, scriptFileName), options.code);
  const configPath = path.join(dir, configFileName);
  await writeFile(configPath, renderConfig(options));
  const freeCgroups = [...(options.cgroups ?? [])];
  const workerdArgs = ['serve', configPath, '--control-fd=3'];

  const invoke = async (body: string, signal: AbortSignal): Promise<BareInvocation> => {
    const cgroup = options.cgroups ? freeCgroups.shift() : undefined;
    if (options.cgroups && !cgroup)
      throw new Error('no free cgroup for bare workerd: more concurrent invocations than cgroups');
    const spawned = performance.now();
    const child = cgroup
      ? spawn(
          '/bin/sh',
          ['-c', joinCgroupsThenExec, 'cgroup-exec', ...cgroup, '--', options.workerdPath, ...workerdArgs],
          {
            stdio: ['ignore', 'ignore', 'ignore', 'pipe'],
            env: { PATH: '/usr/bin:/bin' },
          },
        )
      : spawn(options.workerdPath, workerdArgs, {
          stdio: ['ignore', 'ignore', 'ignore', 'pipe'],
          env: { PATH: '/usr/bin:/bin' },
        });
    live.add(child);
    const reaped = reapedPromise(child);
    let listening = Number.NaN;
    let answered = Number.NaN;
    let answer: string;
    try {
      const port = await Promise.race([
        // The service's own reader of the control fd.
        new Promise<number>((listen) => watchControl(child.stdio[3] as Readable, { exec: () => undefined, listen })),
        reaped.then(() => undefined),
        aborted(signal),
      ]);
      if (port === undefined)
        throw new Error(`bare workerd exited before it listened (exit ${child.exitCode ?? child.signalCode})`);
      listening = performance.now();
      const response = await post(port, body, signal);
      answer = response.body;
      if (response.statusCode !== 200) throw new Error(`bare workerd answered ${response.statusCode}: ${answer}`);
      answered = performance.now();
    } finally {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await reaped;
      live.delete(child);
      if (cgroup) freeCgroups.push(cgroup);
    }
    return {
      answer,
      startMs: listening - spawned,
      executionMs: answered - listening,
      cleanupMs: performance.now() - answered,
    };
  };
  return { invoke, remove };
}

// One POST on a fresh connection with node:http, which this lean process has loaded anyway.
function post(port: number, body: string, signal: AbortSignal): Promise<{ statusCode: number; body: string }> {
  return new Promise((resolve, reject) => {
    const outgoing = request(
      {
        host: '127.0.0.1',
        port,
        method: 'POST',
        path: '/',
        agent: false,
        signal,
        headers: { 'content-type': 'application/json' },
      },
      (response) => {
        let text = '';
        response.setEncoding('utf8');
        response.on('data', (chunk: string) => (text += chunk));
        response.on('end', () => resolve({ statusCode: response.statusCode ?? 0, body: text }));
        response.on('error', reject);
      },
    );
    outgoing.on('error', reject);
    outgoing.end(body);
  });
}

function reapedPromise(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) resolve();
    child.once('exit', () => resolve());
    child.once('error', () => resolve());
  });
}

async function killAndReap(child: ChildProcess): Promise<void> {
  const reaped = reapedPromise(child);
  child.kill('SIGKILL');
  await reaped;
}

// Rejects when the signal fires; never unhandled, as it usually fires (if at all) after the race.
function aborted(signal: AbortSignal): Promise<never> {
  const promise = new Promise<never>((_, reject) => {
    if (signal.aborted) reject(signal.reason);
    else signal.addEventListener('abort', () => reject(signal.reason), { once: true });
  });
  promise.catch(() => undefined);
  return promise;
}
