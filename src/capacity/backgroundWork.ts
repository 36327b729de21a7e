/**
 * Work that goes on after the answer has been sent (an invocation's cleanup), tracked so that
 * shutdown, and anyone checking that nothing is left, can wait for it.
 */
export class BackgroundWork {
  readonly #pending = new Set<Promise<void>>();

  /** How many pieces of work are still running. */
  get pending(): number {
    return this.#pending.size;
  }

  /** Starts a piece of work; it must handle its own errors. */
  run(work: () => Promise<void>): void {
    const running: Promise<void> = work().finally(() => this.#pending.delete(running));
    this.#pending.add(running);
  }

  /** Resolves once everything started so far, and anything it started in turn, has finished. */
  async settled(): Promise<void> {
    while (this.#pending.size > 0) await Promise.allSettled([...this.#pending]);
  }
}
