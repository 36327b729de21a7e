import { performance } from 'node:perf_hooks';

/** The stages of one request, in order; their names appear in logs, Server-Timing and metrics. */
export type StageName =
  | 'admission'
  | 'queue'
  | 'attestation'
  | 'download'
  | 'files'
  | 'start'
  | 'execution'
  | 'ledger'
  | 'cleanup';

/** Records which stage a request is in and how long each one took. */
export class StageTimer {
  #current: StageName = 'admission';
  readonly #durations: Array<readonly [StageName, number]> = [];

  /** The stage running now, or the last one that ran. */
  get current(): StageName {
    return this.#current;
  }

  /** Each finished stage with its duration in milliseconds. */
  get durations(): ReadonlyArray<readonly [StageName, number]> {
    return this.#durations;
  }

  /** Runs one stage and records its duration, whether it succeeds or fails. */
  async run<T>(name: StageName, stage: () => Promise<T>): Promise<T> {
    this.#current = name;
    const start = performance.now();
    try {
      return await stage();
    } finally {
      this.#durations.push([name, performance.now() - start]);
    }
  }
}
