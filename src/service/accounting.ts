import { performance } from 'node:perf_hooks';
import type { Logger } from 'pino';
import type { FunctionUsage } from '../capacity/usage.js';
import { type Outcome, outcomeOf, toServiceError } from '../errors.js';
import type { UsageLedger } from '../ledger/usageLedger.js';
import type { RunRequest, RunResult } from '../pipeline/runFunction.js';

// How often ledger rows past their retention are folded into hourly totals.
const rollUpEveryMs = 60 * 60 * 1000;

/**
 * The usage ledger's side of each invocation: what it used is committed before its answer, and
 * after a failed write no new work runs until the ledger takes writes again. Without a ledger
 * (LEDGER_PATH unset) it records nothing and never holds work back.
 */
export class Accounting {
  readonly #ledger: UsageLedger | undefined;
  readonly #log: Logger;
  #failing = false;
  #rollUps: NodeJS.Timeout | undefined;

  constructor(ledger: UsageLedger | undefined, log: Logger) {
    this.#ledger = ledger;
    this.#log = log;
  }

  /** Whether new work may run: not while the ledger cannot be written after a failed write. */
  ready(): boolean {
    if (!this.#failing) return true;
    if (!this.#ledger?.writable()) return false;
    this.#failing = false;
    return true;
  }

  /**
   * Runs one invocation and commits what it used, with its outcome, before its answer; a failure
   * is committed too. An invocation whose workerd never started used nothing and has no row.
   */
  async recorded(request: RunRequest, run: (request: RunRequest) => Promise<RunResult>): Promise<RunResult> {
    const startedMs = performance.now();
    let usage: FunctionUsage | undefined;
    const counted = {
      ...request,
      onUsage: (used: FunctionUsage) => {
        usage = used;
        request.onUsage?.(used);
      },
    };
    let result: RunResult;
    try {
      result = await run(counted);
    } catch (error) {
      await this.#record(request, startedMs, usage, outcomeOf(toServiceError(error).code), 0);
      throw error;
    }
    const invocationId = await this.#record(request, startedMs, usage, 'ok', result.answer.body.length);
    return { ...result, invocationId };
  }

  async #record(
    request: RunRequest,
    startedMs: number,
    usage: FunctionUsage | undefined,
    outcome: Outcome,
    bytesOut: number,
  ): Promise<number | undefined> {
    const ledger = this.#ledger;
    if (!ledger || !usage) return undefined;
    try {
      return await request.stages.run('ledger', async () =>
        ledger.record({
          atMs: Date.now(),
          codeId: request.codeId,
          outcome,
          cpuUs: usage.cpuMs === undefined ? undefined : usage.cpuMs * 1000,
          peakMemoryBytes: usage.peakMemoryBytes,
          wallUs: (performance.now() - startedMs) * 1000,
          bytesIn: request.request.body.length,
          bytesOut,
        }),
      );
    } catch (error) {
      this.#failing = true;
      throw error;
    }
  }

  /** Folds rows past their retention into hourly totals, now and every hour. */
  start(): void {
    if (!this.#ledger) return;
    this.#rollUp(this.#ledger);
    const ledger = this.#ledger;
    this.#rollUps = setInterval(() => this.#rollUp(ledger), rollUpEveryMs).unref();
  }

  // A roll-up that fails (a full disk, say) is retried at the next; new work waits for the ledger meanwhile.
  #rollUp(ledger: UsageLedger): void {
    try {
      ledger.rollUp(Date.now());
    } catch (error) {
      this.#failing = true;
      this.#log.error({ err: error }, 'folding old ledger rows into hourly totals failed');
    }
  }

  /** Stops the hourly roll-ups. */
  close(): void {
    clearInterval(this.#rollUps);
  }
}
