// Undoes what the bench made (processes, cgroups, temporary directories) on every way out:
// normal end, an error, Ctrl-C or SIGTERM.
import { setTimeout as sleep } from 'node:timers/promises';

type Undo = () => Promise<void> | void;

// Bounds the whole teardown, so a stuck step cannot keep a Ctrl-C'd bench alive.
const teardownTimeoutMs = 20_000;
// Conventional exit status after a signal: 128 + its number.
const signalExitBase = 128;

/** The undo steps, run last-registered first, like nested try/finally. */
export class Cleanup {
  readonly #steps: Array<{ readonly name: string; readonly undo: Undo }> = [];
  #running: Promise<void> | undefined;

  /** Registers a step; returns a function that runs it early (and only once) and unregisters it. */
  add(name: string, undo: Undo): () => Promise<void> {
    const step = { name, undo };
    this.#steps.push(step);
    return async () => {
      const index = this.#steps.indexOf(step);
      if (index === -1) return;
      this.#steps.splice(index, 1);
      await undo();
    };
  }

  /** Runs every registered step once, newest first; a failing step is reported and the rest still run. */
  runAll(): Promise<void> {
    this.#running ??= (async () => {
      const deadline = sleep(teardownTimeoutMs, undefined, { ref: false });
      const steps = async () => {
        for (let step = this.#steps.pop(); step; step = this.#steps.pop()) {
          try {
            await step.undo();
          } catch (error) {
            console.error(
              `bench cleanup: ${step.name} failed: ${error instanceof Error ? error.message : String(error)}`,
            );
          }
        }
      };
      await Promise.race([steps(), deadline]);
    })();
    return this.#running;
  }

  /** Makes Ctrl-C and SIGTERM tear everything down before the process exits. */
  exitOnSignals(): void {
    for (const [signal, number] of [
      ['SIGINT', 2],
      ['SIGTERM', 15],
      ['SIGHUP', 1],
    ] as const) {
      process.once(signal, () => {
        console.error(`\nbench: ${signal}, cleaning up`);
        void this.runAll().finally(() => process.exit(signalExitBase + number));
      });
    }
  }
}
