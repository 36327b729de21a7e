import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import type { Readable } from 'node:stream';
import { abortError, ServiceError } from '../errors.js';
import type { Cgroup } from './cgroups.js';
import { readWithinBudget } from './outputBudget.js';
import { OutputTail } from './outputTail.js';
import {
  cannotExecStatuses,
  cgroupJoinFailed,
  outputTailBytes,
  splitRuns,
  standbyName,
  standbyScript,
  watchControl,
} from './standbyProtocol.js';
import { type FunctionTrace, parseTrace, TraceLineFilter } from './traceLines.js';

const standbyOutputBytes = 4 * 1024;
// workerd's line when it refuses a worker's compatibility date or flags before running any of it.
const compatibilityRefusal =
  /^service \w+: (?:No such compatibility flag|Compatibility flags are mutually contradictory|This Worker requires compatibility date).*$/m;

// How the standby's shell ended.
interface Exit {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  /** Set when the process could not be started at all. */
  readonly error?: Error;
}

export interface PrepareWorkerdOptions {
  /** The workerd binary. */
  readonly workerdPath: string;
  /** The cgroup the process runs in. */
  readonly cgroup: Cgroup;
  /** How the guard's line with workerd's trace begins (src/sandbox/traceLines.ts); none is looked for without it. */
  readonly traceMarker?: string;
}

/**
 * A process of the service's inside a cgroup that starts a fresh workerd for each invocation, one
 * at a time, and outlives them.
 */
export interface WorkerdStandby {
  readonly cgroup: Cgroup;
  /** The standby's own pid (each workerd has its own). */
  readonly pid: number | undefined;
  /** Whether the standby has ended, on its own or stopped. */
  readonly exited: boolean;
  /** Whether it ended because the kernel would not let it into its cgroup: no standby ever will be. */
  readonly cannotJoin: boolean;
  /** Starts `workerd serve configPath` and resolves once it listens; never leaves it running on failure. One workerd at a time. */
  start(configPath: string, signal: AbortSignal): Promise<WorkerdProcess>;
  /** Kills it and waits until it is gone; safe to call more than once. */
  stop(): Promise<void>;
}

/** A running workerd that listens on 127.0.0.1:port. */
export interface WorkerdProcess {
  readonly port: number;
  /** Its pid (told before it listens). */
  readonly pid: number | undefined;
  /** Whether the process has ended on its own or been stopped. */
  readonly exited: boolean;
  /** The last part of what it wrote to stdout and stderr. */
  output(): string;
  /** Resolves true once the process has exited, or false if it still runs after timeoutMs. */
  exitsWithin(timeoutMs: number): Promise<boolean>;
  /** Kills it and waits until it is gone, its output read to the end; safe to call more than once. */
  stop(): Promise<void>;
  /**
   * workerd's trace of the invocation once the guard has handed it over, or what it printed once it
   * has ended without one; until then, neither (the caller bounds the wait before it kills workerd).
   */
  trace(): Promise<FunctionTrace>;
  /** Resolves once the trace line has been read or the process has ended, or after withinMs. */
  traced(withinMs: number): Promise<void>;
}

// One workerd of a standby's: its pid once known, its port once it listens, and its end.
interface Run {
  readonly turn: number;
  pid: number | undefined;
  /** Set once it must die: the pid is then killed as soon as it is known. */
  killed: boolean;
  ended: boolean;
  readonly output: OutputTail;
  /** Takes a chunk of its output: the guard's trace line out of it, when the standby knows its marker, the rest to `output`. */
  take(chunk: Buffer): void;
  /** The trace line's JSON, once it has been read. */
  readonly traceLine: Promise<string>;
  readonly listening: Promise<number>;
  listen(port: number): void;
  /** The status of its output's tail, or undefined when the standby ended before telling it. */
  readonly end: Promise<number | undefined>;
  finish(status: number | undefined): void;
}

/**
 * Spawns the process that starts workerd in a cgroup, ahead of the requests that need it.
 * Never throws: a standby that could not be spawned says why when it is started.
 */
export function prepareWorkerd(options: PrepareWorkerdOptions): WorkerdStandby {
  const marker = randomBytes(16).toString('hex');
  // --verbose makes workerd write the function's console output to stderr, which shares the
  // output pipe with stdout, where a bounded tail keeps it for error answers.
  const workerd = [options.workerdPath, 'serve', '--control-fd=3', '--verbose'];
  let child: ChildProcess;
  try {
    child = spawn(
      '/bin/sh',
      ['-c', standbyScript, standbyName, marker, ...options.cgroup.procsFiles, '--', ...workerd],
      {
        stdio: ['pipe', 'pipe', 'pipe', 'pipe'],
        // workerd needs nothing from the service's environment, and user code must not see it.
        env: { PATH: '/usr/bin:/bin' },
      },
    );
  } catch (error) {
    return unspawnedStandby(options.cgroup, error);
  }
  return new Standby(options, child, marker);
}

// The standby's shell, and the one workerd it runs at a time.
class Standby implements WorkerdStandby {
  readonly cgroup: Cgroup;
  readonly pid: number | undefined;
  readonly #workerdPath: string;
  readonly #traceMarker: string | undefined;
  readonly #child: ChildProcess;
  /** The standby's own stderr: why it could not join its cgroup, say (and dash's "Killed" for each workerd stopped). */
  readonly #ownOutput = new OutputTail(standbyOutputBytes);
  readonly #exit: Promise<Exit>;
  #run: Run | undefined;
  #turns = 0;
  #exited = false;
  #cannotJoin = false;

  constructor(options: PrepareWorkerdOptions, child: ChildProcess, marker: string) {
    this.cgroup = options.cgroup;
    this.#workerdPath = options.workerdPath;
    this.#traceMarker = options.traceMarker;
    this.#child = child;
    this.pid = child.pid;
    // Out of file descriptors, spawn() returns without pipes and reports the error as an event.
    // A standby that is already gone makes the write fail; its exit says why.
    child.stdin?.on('error', () => undefined);
    child.stderr?.on('data', (chunk: Buffer) => this.#ownOutput.push(chunk));
    this.#exit = new Promise<Exit>((resolve) => {
      child.once('error', (error) => resolve({ code: null, signal: null, error }));
      child.once('exit', (code, signal) => resolve({ code, signal }));
    }).then((result) => this.#ended(result));
    // Once the pipes have closed, every line the standby and its workerd wrote has been read: a run
    // still going ends here, with its output complete.
    child.once('close', () => this.#run?.finish(undefined));
    this.#readOutput(marker);
  }

  get exited(): boolean {
    return this.#exited;
  }

  get cannotJoin(): boolean {
    return this.#cannotJoin;
  }

  async stop(): Promise<void> {
    if (!this.#exited) this.#child.kill('SIGKILL');
    await this.#exit;
  }

  async start(configPath: string, signal: AbortSignal): Promise<WorkerdProcess> {
    if (this.#run) throw new Error('a workerd standby starts one workerd at a time');
    // Out of time already: no workerd should read the code at all.
    if (signal.aborted) throw abortError(signal);
    const exitedBefore = this.#exited ? await this.#exit : undefined;
    if (exitedBefore) throw standbyFailure(exitedBefore, this.#ownOutput, this.cgroup);
    this.#turns += 1;
    const run = newRun(this.#turns, this.#traceMarker, (ended) => {
      if (this.#run === ended) this.#run = undefined;
    });
    this.#run = run;
    this.#child.stdin?.write(`${configPath}\n`);
    const aborted = new Promise<never>((_, reject) => {
      const onAbort = () => reject(abortError(signal));
      signal.addEventListener('abort', onAbort, { once: true });
      void run.end.finally(() => signal.removeEventListener('abort', onAbort));
    });
    const endedEarly = run.end.then((status) => this.#whyEndedEarly(run, status));
    try {
      return runningWorkerd(run, await Promise.race([run.listening, endedEarly, aborted]));
    } catch (error) {
      await stopRun(run);
      throw error;
    } finally {
      // The losers of the race settle later; nobody awaits them.
      for (const loser of [endedEarly, aborted]) loser.catch(() => undefined);
    }
  }

  #ended(exit: Exit): Exit {
    this.#exited = true;
    this.#cannotJoin = exit.code === cgroupJoinFailed;
    // A workerd whose standby is gone is nobody's child any more: it goes too, now or as soon as
    // its exec event tells its pid. Until it has, it holds the pipes open.
    if (this.#run) killRun(this.#run);
    // A standby that never ran has no pipes to close and no workerd to wait for.
    if (exit.error) this.#run?.finish(undefined);
    return exit;
  }

  // The standby's output, split into runs at its end lines (between runs it writes nothing), and
  // the control fd's events: each workerd's pid, then its port.
  #readOutput(marker: string): void {
    const runs = splitRuns(
      marker,
      (chunk) => this.#run?.take(chunk),
      (turn, status) => {
        if (this.#run?.turn === turn) this.#run.finish(status);
      },
    );
    if (this.#child.stdout) readWithinBudget(this.#child.stdout, (chunk) => runs.push(chunk));
    watchControl((this.#child.stdio[3] as Readable | null) ?? undefined, {
      exec: (turn, pid) => {
        const run = this.#run;
        if (run?.turn !== turn) return;
        run.pid = pid;
        if (run.killed) killRun(run);
      },
      // A listen event follows its own run's exec event on the same pipe, so one that comes before
      // the current run's exec event is an earlier run's.
      listen: (port) => {
        if (this.#run?.pid !== undefined) this.#run.listen(port);
      },
    });
  }

  // Why a workerd ended before it listened.
  async #whyEndedEarly(run: Run, status: number | undefined): Promise<never> {
    // A standby that died during the start killed its workerd, whose end is then no verdict on the code.
    if (status === undefined || this.#exited) throw standbyFailure(await this.#exit, this.#ownOutput, this.cgroup);
    const output = run.output.text();
    if (cannotExecStatuses.includes(status)) {
      throw new ServiceError('WORKERD_START_FAILED', {
        data: output,
        cause: new Error(`cannot run ${this.#workerdPath}`),
      });
    }
    // The usual reason workerd exits before it listens: the code does not compile. The caller
    // tells an out-of-memory kill apart by the cgroup's counters.
    const refusal = compatibilityRefusal.exec(output);
    if (refusal) throw new ServiceError('INVALID_COMPATIBILITY', { data: refusal[0] });
    throw new ServiceError('USER_CODE_INVALID', { data: withoutAddressStacks(output) });
  }
}

// A run is over once its end line has been read, with all of its output before it.
function newRun(turn: number, traceMarker: string | undefined, onFinish: (run: Run) => void): Run {
  let listen!: (port: number) => void;
  let traced!: (payload: string) => void;
  const traceLine = new Promise<string>((resolve) => (traced = resolve));
  const listening = new Promise<number>((resolve) => (listen = resolve));
  let finish!: (status: number | undefined) => void;
  const end = new Promise<number | undefined>((resolve) => (finish = resolve));
  const output = new OutputTail(outputTailBytes);
  const filter =
    traceMarker === undefined ? undefined : new TraceLineFilter(traceMarker, traced, (bytes) => output.push(bytes));
  const run: Run = {
    turn,
    pid: undefined,
    killed: false,
    ended: false,
    output,
    take: (chunk) => (filter ? filter.push(chunk) : output.push(chunk)),
    traceLine,
    listening,
    listen,
    end,
    finish: (status) => {
      if (run.ended) return;
      run.ended = true;
      filter?.flush();
      onFinish(run);
      finish(status);
    },
  };
  return run;
}

// A run's workerd, listening on a port.
function runningWorkerd(run: Run, port: number): WorkerdProcess {
  const output = () => withoutAddressStacks(run.output.text());
  return {
    port,
    pid: run.pid,
    get exited() {
      return run.ended;
    },
    output,
    trace: () =>
      Promise.race([run.traceLine, run.end.then(() => undefined)]).then(
        (payload): FunctionTrace => (payload === undefined ? { traced: false, output: output() } : parseTrace(payload)),
      ),
    exitsWithin: (timeoutMs) =>
      within(
        run.end.then(() => true),
        timeoutMs,
        false,
      ),
    traced: async (withinMs) => {
      await within(Promise.race([run.traceLine, run.end]), withinMs, undefined);
    },
    stop: () => stopRun(run),
  };
}

// What a promise settles with, or `otherwise` once timeoutMs have passed.
function within<T, U>(promise: Promise<T>, timeoutMs: number, otherwise: U): Promise<T | U> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<U>((resolve) => (timer = setTimeout(resolve, timeoutMs, otherwise)));
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

async function stopRun(run: Run): Promise<void> {
  killRun(run);
  await run.end;
}

// Kills a run's workerd, now if its pid is known, else as soon as it is. Its parent reaps it just
// before the end line is written, so a kill in between reaches a pid that is free;
// the kernel hands a freed pid out again only after the others up to pid_max, which takes that
// many new processes, not one moment.
function killRun(run: Run): void {
  run.killed = true;
  if (run.pid === undefined || run.ended) return;
  try {
    process.kill(run.pid, 'SIGKILL');
  } catch {
    // Already gone.
  }
}

// A standby whose spawn() threw: nothing runs, and starting it reports the error.
function unspawnedStandby(cgroup: Cgroup, error: unknown): WorkerdStandby {
  return {
    cgroup,
    pid: undefined,
    exited: true,
    cannotJoin: false,
    start: () => Promise.reject(new ServiceError('WORKERD_START_FAILED', { cause: error })),
    stop: () => Promise.resolve(),
  };
}

// Why a standby cannot start workerd: it could not be spawned, or has ended.
function standbyFailure(exit: Exit, output: OutputTail, cgroup: Cgroup): ServiceError {
  if (exit.error) return new ServiceError('WORKERD_START_FAILED', { cause: exit.error });
  return new ServiceError('WORKERD_START_FAILED', { data: output.text(), cause: new Error(standbyEnd(exit, cgroup)) });
}

// Why a standby ended.
function standbyEnd(exit: Exit, cgroup: Cgroup): string {
  if (exit.code === cgroupJoinFailed) return `cannot join cgroup ${cgroup.name}`;
  if (exit.signal) return `the workerd standby was ended by ${exit.signal}`;
  return `the workerd standby exited with ${exit.code}`;
}
// workerd follows each internal error with a line of raw code addresses, which tell users nothing.
function withoutAddressStacks(output: string): string {
  return output.replace(/^stack: .*\n?/gm, '');
}
