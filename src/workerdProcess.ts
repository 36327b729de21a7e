import { type ChildProcess, spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import type { Readable } from 'node:stream';
import type { Cgroup } from './cgroupPool.js';
import { abortError, ServiceError } from './errors.js';

// What is kept of workerd's stdout and stderr: the end, where the error is, and never more, so a
// function that prints megabytes cannot grow the service's memory.
const outputTailBytes = 64 * 1024;
// Exit statuses of the wrapper: it cannot put itself into the cgroup; its stdin closed without a
// config (the service discarded it, or is gone); the shell's own for a binary it cannot execute or
// cannot find (after its exec event).
const cgroupJoinFailed = 125;
const noConfigGiven = 124;
const shellCannotExecute = 126;
const shellNotFound = 127;

// How the wrapper (and so workerd) ended.
interface Exit {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  /** Set when the process could not be started at all. */
  readonly error?: Error;
}

// Sends its stderr where its stdout goes (one pipe, in the order things were written), puts the
// shell itself into every cgroup named before "--", then waits for the path of a config on stdin,
// says {"event":"exec"} on the control fd and execs workerd with it in its place: workerd is
// capped from its first instruction on, before it reads any user code. Joining ahead of the
// request keeps its cost off the request: a write to cgroup.procs can wait ~10 ms for the kernel
// (an RCU grace period), and the fork from the service's large process takes its share too.
const joinCgroupsThenExec =
  `exec 2>&1; while [ "$1" != -- ]; do echo $$ > "$1" || exit ${cgroupJoinFailed}; shift; done; shift; ` +
  `IFS= read -r config || exit ${noConfigGiven}; echo '{"event":"exec"}' >&3; exec "$@" "$config" </dev/null`;

export interface PrepareWorkerdOptions {
  /** The workerd binary. */
  readonly workerdPath: string;
  /** The cgroup the process runs in. */
  readonly cgroup: Cgroup;
}

// A process inside a cgroup (or on its way in) that turns into workerd once it is given a config.
export interface WorkerdStandby {
  readonly cgroup: Cgroup;
  readonly pid: number | undefined;
  /** Whether the process has ended, on its own or stopped. */
  readonly exited: boolean;
  /** Makes it `workerd serve configPath` and resolves once that listens; never leaves it running on failure. Once only. */
  start(configPath: string, signal: AbortSignal): Promise<WorkerdProcess>;
  /** Kills it, started or not, and waits until it is gone; safe to call more than once. */
  stop(): Promise<void>;
}

// A running workerd that listens on 127.0.0.1:port.
export interface WorkerdProcess {
  readonly port: number;
  /** Whether the process has ended on its own or been stopped. */
  readonly exited: boolean;
  /** The last part of what it wrote to stdout and stderr. */
  output(): string;
  /** Resolves true once the process has exited, or false if it still runs after timeoutMs. */
  exitsWithin(timeoutMs: number): Promise<boolean>;
  /** Kills it and waits until it is gone; safe to call more than once. */
  stop(): Promise<void>;
}

// Spawns the process that will become workerd in a cgroup, ahead of the request that needs it.
// Never throws: a standby that could not be spawned says why when it is started.
export function prepareWorkerd(options: PrepareWorkerdOptions): WorkerdStandby {
  const tail = new OutputTail(outputTailBytes);
  // fd 3 carries the exec and listen events; --verbose makes workerd write the function's console
  // output to stderr, which shares the output pipe with stdout, where the bounded tail keeps it for
  // error answers.
  const workerd = [options.workerdPath, 'serve', '--control-fd=3', '--verbose'];
  let child: ChildProcess;
  try {
    child = spawn('/bin/sh', ['-c', joinCgroupsThenExec, 'cgroup-exec', ...options.cgroup.procsFiles, '--', ...workerd], {
      stdio: ['pipe', 'pipe', 'ignore', 'pipe'],
      // workerd needs nothing from the service's environment, and user code must not see it.
      env: { PATH: '/usr/bin:/bin' },
    });
  } catch (error) {
    return unspawnedStandby(options.cgroup, error);
  }
  // Out of file descriptors, spawn() returns without pipes and reports the error as an event.
  // A wrapper that is already gone makes the write fail; its exit says why.
  child.stdin?.on('error', () => undefined);
  let exited = false;
  // 'close', not 'exit': it comes once its output is drained, so the tail and the control events are complete.
  const exit = new Promise<Exit>((resolve) => {
    child.once('error', (error) => resolve({ code: null, signal: null, error }));
    child.once('close', (code, signal) => resolve({ code, signal }));
  }).then((result) => {
    exited = true;
    return result;
  });
  child.stdout?.on('data', (chunk: Buffer) => tail.push(chunk));
  const control = watchControl((child.stdio[3] as Readable | null) ?? undefined);

  const stop = async () => {
    if (!exited) child.kill('SIGKILL');
    await exit;
  };

  let started = false;
  const start = async (configPath: string, signal: AbortSignal): Promise<WorkerdProcess> => {
    if (started) throw new Error('a workerd standby starts only once');
    started = true;
    // Out of time already: no workerd should read the code at all.
    if (signal.aborted) {
      await stop();
      throw abortError(signal);
    }
    child.stdin?.end(`${configPath}\n`);
    const aborted = new Promise<never>((_, reject) => {
      const onAbort = () => reject(abortError(signal));
      signal.addEventListener('abort', onAbort, { once: true });
      void exit.finally(() => signal.removeEventListener('abort', onAbort));
    });
    const exitedEarly = exit.then((result): never => {
      if (result.error) throw new ServiceError('WORKERD_START_FAILED', { cause: result.error });
      // Before its exec event the process was still the wrapper, and no user code was read.
      if (!control.execed) {
        throw new ServiceError('WORKERD_START_FAILED', { data: tail.text(), cause: new Error(standbyEnd(result, options.cgroup)) });
      }
      if (result.code === shellCannotExecute || result.code === shellNotFound) {
        throw new ServiceError('WORKERD_START_FAILED', { data: tail.text(), cause: new Error(`cannot run ${options.workerdPath}`) });
      }
      // The usual reason workerd exits before it listens: the code does not compile. The caller
      // tells an out-of-memory kill apart by the cgroup's counters.
      throw new ServiceError('USER_CODE_INVALID', { data: withoutAddressStacks(tail.text()) });
    });
    // A control fd that closes without a listen event means workerd is exiting: its exit says why.
    const listening = control.listening.then((port) => port ?? exitedEarly);

    try {
      const port = await Promise.race([listening, exitedEarly, aborted]);
      return {
        port,
        get exited() {
          return exited;
        },
        output: () => withoutAddressStacks(tail.text()),
        exitsWithin: (timeoutMs) => {
          let timer: NodeJS.Timeout | undefined;
          const timeout = new Promise<boolean>((resolve) => (timer = setTimeout(resolve, timeoutMs, false)));
          return Promise.race([exit.then(() => true), timeout]).finally(() => clearTimeout(timer));
        },
        stop,
      };
    } catch (error) {
      await stop();
      throw error;
    } finally {
      // The losers of the race settle later; nobody awaits them.
      for (const loser of [listening, exitedEarly, aborted]) loser.catch(() => undefined);
    }
  };

  return {
    cgroup: options.cgroup,
    pid: child.pid,
    get exited() {
      return exited;
    },
    start,
    stop,
  };
}

// A standby whose spawn() threw: nothing runs, and starting it reports the error.
function unspawnedStandby(cgroup: Cgroup, error: unknown): WorkerdStandby {
  return {
    cgroup,
    pid: undefined,
    exited: true,
    start: () => Promise.reject(new ServiceError('WORKERD_START_FAILED', { cause: error })),
    stop: () => Promise.resolve(),
  };
}

// Why a wrapper ended before it became workerd.
function standbyEnd(exit: Exit, cgroup: Cgroup): string {
  if (exit.code === cgroupJoinFailed) return `cannot join cgroup ${cgroup.name}`;
  if (exit.code === noConfigGiven) return 'the workerd standby ended before it got its config';
  if (exit.signal) return `the workerd standby was ended by ${exit.signal} before it ran workerd`;
  return `the workerd standby exited with ${exit.code} before it ran workerd`;
}

// Follows the control fd, one JSON object per line: the wrapper's {"event":"exec"} just before it
// becomes workerd, then workerd's {"event":"listen","socket":"http","port":40123}. Lines are
// handled as they arrive, so by the process's close every one of them has been seen.
function watchControl(controlFd: Readable | undefined): { readonly listening: Promise<number | undefined>; readonly execed: boolean } {
  let execed = false;
  if (!controlFd) return { listening: Promise.resolve(undefined), execed };
  const listening = new Promise<number | undefined>((resolve) => {
    const lines = createInterface({ input: controlFd, crlfDelay: Infinity });
    lines.on('line', (line) => {
      const message = parseJson(line) as { event?: unknown; port?: unknown } | undefined;
      if (message?.event === 'exec') execed = true;
      else if (message?.event === 'listen' && typeof message.port === 'number') resolve(message.port);
    });
    lines.once('close', () => resolve(undefined));
  });
  return {
    listening,
    get execed() {
      return execed;
    },
  };
}

function parseJson(line: string): unknown {
  try {
    return JSON.parse(line);
  } catch {
    return undefined;
  }
}

// workerd follows each internal error with a line of raw code addresses, which tell users nothing.
function withoutAddressStacks(output: string): string {
  return output.replace(/^stack: .*\n?/gm, '');
}

// Keeps the last maxBytes of a stream of chunks.
export class OutputTail {
  #chunks: Buffer[] = [];
  #size = 0;

  constructor(readonly maxBytes: number) {}

  push(chunk: Buffer): void {
    this.#chunks.push(chunk);
    this.#size += chunk.length;
    while (this.#chunks.length > 1 && this.#size - this.#chunks[0]!.length >= this.maxBytes) {
      this.#size -= this.#chunks.shift()!.length;
    }
  }

  text(): string {
    const all = Buffer.concat(this.#chunks, this.#size);
    return all.subarray(Math.max(0, all.length - this.maxBytes)).toString('utf8');
  }
}
