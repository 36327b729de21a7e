import { performance } from 'node:perf_hooks';
import type { ResponseGuard } from '../code/responseGuard.js';
import type { RunnableCode } from '../code/workerCode.js';
import { abortError, type ServiceError } from '../errors.js';
import { type Deadline, startDeadline } from '../httpClient.js';
import type { WorkerdProcess } from '../sandbox/standby.js';
import type { FunctionTrace } from '../sandbox/traceLines.js';
import type { StageTimer } from '../stages.js';
import type { BackgroundWork } from './backgroundWork.js';
import { type CpuWatch, watchCpu } from './cpuLimit.js';
import { whyItFailed } from './failure.js';
import { type FunctionRequest, type Invocation, invokeWorker } from './invokeWorker.js';
import type { Placement } from './placement.js';
import { type SettleOutcome, settleWork } from './settleWork.js';
import type { FunctionUsage } from './usage.js';
import type { FilesLease } from './workerFileStore.js';

/** How long a tailed invocation's workerd is kept after its answer for the trace that workerd sends just after it. */
const traceWaitMs = 250;

/** Where a failed cleanup is reported. */
export interface ErrorLog {
  error(details: object, message: string): void;
}

/** What one invocation asks of the capacity module. */
export interface LeaseRequest {
  readonly codeId: string;
  /**
   * The code to run, from the code cache or the storage server: called once a cgroup is held (so a
   * busy server calls no upstream), and not at all when a spare of the cached code is taken.
   */
  readonly prepare: () => Promise<RunnableCode>;
  /** Fires when the client goes away or shutdown gives up on the request. */
  readonly signal: AbortSignal;
  /** Records the stages: admission, files, start, execution. */
  readonly stages: StageTimer;
  /** Where a failed cleanup is reported, with the request's id. */
  readonly log: ErrorLog;
  /** Told what the function's workerd used, once it has answered or failed, if it was started. */
  readonly onUsage?: (usage: FunctionUsage) => void;
  /** Given workerd's trace of the invocation to come (for the tail), once its workerd listens. */
  readonly onTrace?: (trace: Promise<FunctionTrace>) => void;
}

/** What every lease shares: the capacity module's own parts and settings. */
export interface LeaseContext {
  /** Wall-clock limit of an invocation, from workerd's start to its answer; waitUntil work gets what is left. */
  readonly timeLimitMs: number;
  /** The CPU time an invocation of this code may use, from its request to the end of its waitUntil work. */
  cpuLimitMs(code: RunnableCode): number;
  readonly maxResponseBytes: number;
  /** What tells a complete answer of the function's from one it did not finish. */
  readonly guard: ResponseGuard;
  /** The files of the code, shared while the code cache holds it. */
  acquireFiles(code: RunnableCode): Promise<FilesLease>;
  /** Where each release runs once its answer is on its way. */
  readonly background: BackgroundWork;
  /** Fires when shutdown stops waiting for waitUntil work. */
  readonly shutdown: AbortSignal;
  /** Whether a tail is open on a code_id: its workerd is then kept, a moment at most, until its trace is in. */
  tailed(codeId: string): boolean;
  /** Told how each start of some code ended: code whose last start failed gets no spares. */
  started(code: RunnableCode, listened: boolean): void;
  /** Told of code that started cleanly once its lease is over, for a spare of it. */
  offer(code: RunnableCode): void;
  /** Told how long each release took. */
  cleanedUp(durationMs: number): void;
  /** Told how each invocation's waitUntil work ended, for those that had some. */
  waitUntilEnded(outcome: SettleOutcome): void;
}

/**
 * One invocation's workerd, listening with its code in a cgroup of its own: `invoke` sends it the
 * request, and `release` gives everything back. The time limit runs from the start to the answer.
 */
export class WorkerLease {
  readonly #placement: Placement;
  readonly #context: LeaseContext;
  readonly #request: LeaseRequest;
  #deadline: Deadline | undefined;
  #limitEndsAt = 0;
  #worker: WorkerdProcess | undefined;
  #cpu: CpuWatch | undefined;
  #waitUntilPending = false;
  #usageTold = false;
  #released = false;

  constructor(placement: Placement, context: LeaseContext, request: LeaseRequest) {
    this.#placement = placement;
    this.#context = context;
    this.#request = request;
  }

  /** The code its workerd runs, once started. */
  get code(): RunnableCode {
    const code = this.#placement.code;
    if (!code) throw new Error('a lease has code only once it has started');
    return code;
  }

  /**
   * The code and its files (a spare has both), then workerd, until it listens (a spare's may listen
   * already). A request abandoned before the start never starts it.
   */
  async start(): Promise<void> {
    const { stages, signal } = this.#request;
    const placement = this.#placement;
    const code = placement.code ?? (await this.#request.prepare());
    if (!placement.code) {
      const files = await stages.run('files', () => this.#context.acquireFiles(code));
      placement.place(code, files);
    }
    if (signal.aborted) throw abortError(signal);
    this.#deadline = startDeadline(signal, this.#context.timeLimitMs);
    this.#limitEndsAt = performance.now() + this.#context.timeLimitMs;
    try {
      this.#worker = await stages.run('start', () => placement.listening(this.#limit()));
    } catch (error) {
      // A start cut short by the client or shutdown says nothing of the code.
      if (!signal.aborted) this.#context.started(code, false);
      throw await this.#failed(error);
    }
    this.#context.started(code, true);
    this.#request.onTrace?.(this.#worker.trace());
  }

  /** Sends the function its request and reads its whole answer; a failure says why it ended. */
  async invoke(request: FunctionRequest): Promise<Invocation> {
    const worker = this.#worker;
    if (!worker) throw new Error('a lease invokes only once it has started');
    // The CPU time counts from the request on: neither workerd's start nor a spare's wait is the function's.
    const cpu = watchCpu({
      limitMs: this.#context.cpuLimitMs(this.code),
      readUs: () => this.#placement.cpuUsageUs(),
      parent: this.#limit(),
    });
    this.#cpu = cpu;
    try {
      const { answer, waitUntilPending } = await this.#request.stages.run('execution', () =>
        invokeWorker({
          port: worker.port,
          request,
          maxResponseBytes: this.#context.maxResponseBytes,
          guard: this.#context.guard,
          signal: cpu.signal,
        }),
      );
      this.#tellUsage();
      this.#waitUntilPending = waitUntilPending;
      return answer;
    } catch (error) {
      throw await this.#failed(error);
    }
  }

  /**
   * Gives everything back, on every path, without holding up the answer: workerd is killed now,
   * or once the waitUntil work it still runs has settled within what is left of its time limit;
   * its cgroup goes back once the process is gone, then its files. Code that started cleanly is
   * offered for a spare once this invocation is gone.
   */
  release(): void {
    if (this.#released) return;
    this.#released = true;
    this.#deadline?.clear();
    const started = performance.now();
    const worker = this.#worker;
    const cpu = this.#cpu;
    const { background, guard, shutdown } = this.#context;
    const settled =
      worker && this.#waitUntilPending
        ? settleWork({
            port: worker.port,
            guard,
            timeoutMs: this.#limitEndsAt - started,
            shutdown,
            cpuLimit: cpu?.signal,
          }).then((outcome) => this.#context.waitUntilEnded(outcome))
        : undefined;
    if (settled) void settled.finally(() => cpu?.clear());
    else cpu?.clear();
    const traced = worker && this.#tailed() ? Promise.resolve(settled).then(() => worker.traced(traceWaitMs)) : settled;
    background.run(async () => {
      for (const error of await this.#placement.release(traced))
        this.#request.log.error({ stage: 'cleanup', err: error }, 'cleanup failed');
      this.#context.cleanedUp(performance.now() - started);
      const code = this.#placement.code;
      if (worker && code) this.#context.offer(code);
    });
  }

  #limit(): AbortSignal {
    if (!this.#deadline) throw new Error('the time limit runs only once the start has begun');
    return this.#deadline.signal;
  }

  // What the function used, told once: while its workerd still runs, or just after it failed.
  #tellUsage(): void {
    if (this.#usageTold) return;
    this.#usageTold = true;
    const worker = this.#worker;
    this.#request.onUsage?.(this.#placement.usage(worker?.exited === false ? worker.pid : undefined));
  }

  #tailed(): boolean {
    return this.#context.tailed(this.#request.codeId);
  }

  async #failed(error: unknown): Promise<ServiceError> {
    this.#tellUsage();
    return whyItFailed(error, this.#worker, () => this.#placement.oomKilled(), this.#tailed() ? traceWaitMs : 0);
  }
}
