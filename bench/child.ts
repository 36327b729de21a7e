// A Node.js program the bench runs as its own process, so its CPU and memory are its own.
import { type ChildProcess, spawn } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Cleanup } from './cleanup.js';

// Enough of a child's output to explain why it failed, and no more, however much it logs.
const outputTailChars = 64 * 1024;
const startTimeoutMs = 15_000;
const pollMs = 10;

export interface NodeChild {
  readonly pid: number;
  /** The last part of what it wrote to stdout and stderr. */
  output(): string;
  /** Whether it has exited. */
  readonly exited: boolean;
  /** SIGTERM, then SIGKILL after graceMs; resolves once it has been reaped. Safe to call again. */
  stop(graceMs: number): Promise<void>;
}

export interface StartNodeChildOptions {
  /** Options for node itself, before the script. */
  readonly nodeArgs?: readonly string[];
  /** The compiled script to run. */
  readonly script: string;
  /** Its working directory; the bench's when not given. */
  readonly cwd?: string;
  /** Its arguments. */
  readonly args?: readonly string[];
  /** Its whole environment (nothing of the bench's leaks in). */
  readonly env: Readonly<Record<string, string>>;
  /** It is ready once its output matches this; the match is returned. */
  readonly ready: RegExp;
  /** A pipe on stdin that closes when the bench dies, for children that watch it. */
  readonly stdinPipe?: boolean;
  /** A Node IPC channel (process.send); it also tells the child when the bench dies. */
  readonly ipc?: boolean;
  readonly cleanup: Cleanup;
  /** Name in error messages and cleanup reports. */
  readonly name: string;
}

/** Starts the program and resolves once its output shows it is ready; kills it if it is not in time. */
export async function startNodeChild(
  options: StartNodeChildOptions,
): Promise<{ child: NodeChild; match: RegExpExecArray; subprocess: ChildProcess }> {
  const subprocess: ChildProcess = spawn(
    process.execPath,
    [...(options.nodeArgs ?? []), options.script, ...(options.args ?? [])],
    {
      env: options.env,
      ...(options.cwd ? { cwd: options.cwd } : {}),
      stdio: [options.stdinPipe ? 'pipe' : 'ignore', 'pipe', 'pipe', ...(options.ipc ? (['ipc'] as const) : [])],
    },
  );
  let output = '';
  const append = (chunk: Buffer) => {
    output = (output + chunk.toString('utf8')).slice(-outputTailChars);
  };
  subprocess.stdout?.on('data', append);
  subprocess.stderr?.on('data', append);
  let exited = false;
  const exit = new Promise<void>((resolve) => {
    subprocess.once('exit', () => {
      exited = true;
      resolve();
    });
    subprocess.once('error', () => {
      exited = true;
      resolve();
    });
  });

  const stop = async (graceMs: number) => {
    if (!exited) subprocess.kill('SIGTERM');
    const timer = setTimeout(() => {
      if (!exited) subprocess.kill('SIGKILL');
    }, graceMs);
    await exit;
    clearTimeout(timer);
  };
  const unregister = options.cleanup.add(`stop ${options.name}`, () => stop(startTimeoutMs));
  const child: NodeChild = {
    get pid() {
      return subprocess.pid ?? -1;
    },
    output: () => output,
    get exited() {
      return exited;
    },
    stop: async (graceMs) => {
      await stop(graceMs);
      await unregister();
    },
  };

  for (const deadline = Date.now() + startTimeoutMs; !exited && Date.now() < deadline; ) {
    const match = options.ready.exec(output);
    if (match) return { child, match, subprocess };
    await sleep(pollMs);
  }
  await child.stop(0);
  throw new Error(`${options.name} did not start within ${startTimeoutMs} ms:\n${output}`);
}
