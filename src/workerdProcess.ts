import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import type { Readable } from 'node:stream';
import type { Cgroup } from './cgroupPool.js';
import { abortError, ServiceError } from './errors.js';

// What is kept of workerd's stdout and stderr: the end, where the error is, and never more, so a
// function that prints megabytes cannot grow the service's memory.
const outputTailBytes = 64 * 1024;
// Exit statuses of the wrapper: it cannot put itself into the cgroup; its stdin closed without a
// config (the service discarded it, or is gone); the shell's own for a binary it cannot execute or
// cannot find.
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
// shell itself into every cgroup named before "--", then waits for the path of a config on stdin
// and execs workerd with it in its place: workerd is capped from its first instruction on,
// before it reads any user code. Joining ahead of the request keeps its cost off the request: a
// write to cgroup.procs can wait ~10 ms for the kernel (an RCU grace period), and the fork from
// the service's large process takes its share too.
const joinCgroupsThenExec =
  `exec 2>&1; while [ "$1" != -- ]; do echo $$ > "$1" || exit ${cgroupJoinFailed}; shift; done; shift; ` +
  `IFS= read -r config || exit ${noConfigGiven}; exec "$@" "$config" </dev/null`;

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
export function prepareWorkerd(options: PrepareWorkerdOptions): WorkerdStandby {
  const tail = new OutputTail(outputTailBytes);
  // fd 3 carries the listen event; --verbose makes workerd write the function's console output to
  // stderr, which shares the output pipe with stdout, where the bounded tail keeps it for error answers.
  const workerd = [options.workerdPath, 'serve', '--control-fd=3', '--verbose'];
  const child = spawn('/bin/sh', ['-c', joinCgroupsThenExec, 'cgroup-exec', ...options.cgroup.procsFiles, '--', ...workerd], {
    stdio: ['pipe', 'pipe', 'ignore', 'pipe'],
    // workerd needs nothing from the service's environment, and user code must not see it.
    env: { PATH: '/usr/bin:/bin' },
  });
  // A wrapper that is already gone makes the write fail; its exit says why.
  child.stdin!.on('error', () => undefined);
  let exited = false;
  // 'close', not 'exit': it comes once its output is drained, so the tail is complete.
  const exit = new Promise<Exit>((resolve) => {
    child.once('error', (error) => resolve({ code: null, signal: null, error }));
    child.once('close', (code, signal) => resolve({ code, signal }));
  }).then((result) => {
    exited = true;
    return result;
  });
  child.stdout!.on('data', (chunk: Buffer) => tail.push(chunk));
  // Flowing from the start, so that its end is seen (and the process's close comes) even if the
  // standby is never started; nothing is written to it before start() listens.
  const controlFd = (child.stdio[3] as Readable).resume();

  const stop = async () => {
    if (!exited) child.kill('SIGKILL');
    await exit;
  };

  let started = false;
  const start = async (configPath: string, signal: AbortSignal): Promise<WorkerdProcess> => {
    if (started) throw new Error('a workerd standby starts only once');
    started = true;
    child.stdin!.end(`${configPath}\n`);
    const aborted = new Promise<never>((_, reject) => {
      const onAbort = () => reject(abortError(signal));
      if (signal.aborted) onAbort();
      else signal.addEventListener('abort', onAbort, { once: true });
      void exit.finally(() => signal.removeEventListener('abort', onAbort));
    });
    const exitedEarly = exit.then((result): never => {
      if (result.error) throw new ServiceError('WORKERD_START_FAILED', { cause: result.error });
      if (result.code === cgroupJoinFailed) {
        throw new ServiceError('WORKERD_START_FAILED', { data: tail.text(), cause: new Error(`cannot join cgroup ${options.cgroup.name}`) });
      }
      if (result.code === shellCannotExecute || result.code === shellNotFound) {
        throw new ServiceError('WORKERD_START_FAILED', { data: tail.text(), cause: new Error(`cannot run ${options.workerdPath}`) });
      }
      if (result.code === noConfigGiven) {
        throw new ServiceError('WORKERD_START_FAILED', { cause: new Error('the workerd standby ended before it got its config') });
      }
      // The usual reason workerd exits before it listens: the code does not compile. The caller
      // tells an out-of-memory kill apart by the cgroup's counters.
      throw new ServiceError('USER_CODE_INVALID', { data: withoutAddressStacks(tail.text()) });
    });
    // A control fd that closes without a listen event means workerd is exiting: its exit says why.
    const listening = readListenPort(controlFd).then((port) => port ?? exitedEarly);

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

// Resolves with the port of workerd's http socket from its control fd, where it writes one JSON
// object per line, e.g. {"event":"listen","socket":"http","port":40123}.
async function readListenPort(controlFd: Readable): Promise<number | undefined> {
  try {
    for await (const line of createInterface({ input: controlFd, crlfDelay: Infinity })) {
      let message: unknown;
      try {
        message = JSON.parse(line);
      } catch {
        continue;
      }
      if (isListenEvent(message)) return message.port;
    }
    return undefined;
  } finally {
    // Keep draining: a paused pipe would never see its end, and the process's close would wait for it.
    controlFd.resume();
  }
}

function isListenEvent(message: unknown): message is { event: 'listen'; port: number } {
  const m = message as { event?: unknown; port?: unknown } | null;
  return typeof m === 'object' && m !== null && m.event === 'listen' && typeof m.port === 'number';
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
