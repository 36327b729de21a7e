import v8 from 'node:v8';

// Gives back to the system, once the service is idle, the memory a burst of invocations made V8
// grow. V8 sizes its heap for the load it sees and keeps that size after the load is gone: its memory
// reducer starts again only once the heap has grown by more than 10 MB since it last ran, so a
// service that grew by a little less keeps it for good. One full garbage collection after the
// burst, compacting the heap, frees the pages the burst's garbage held. It runs when nothing has
// come or gone for a while, and once per idle spell.

export interface IdleCollectorOptions {
  /** Quiet time after the last invocation began or ended before collecting; 0 turns collecting off. */
  readonly idleMs: number;
  /** A full garbage collection (see compactingCollection); without it nothing is collected. */
  readonly collect: (() => void) | undefined;
  /** Told of every collection, with how long it took. */
  readonly onCollected?: (durationMs: number) => void;
}

/** Collects garbage once after each burst of invocations, when the service has gone quiet. */
export class IdleCollector {
  readonly #options: IdleCollectorOptions;
  readonly #timer: NodeJS.Timeout | undefined;
  /** Whether an invocation came since the last collection: an idle service has nothing new to give back. */
  #active = false;

  constructor(options: IdleCollectorOptions) {
    if (!Number.isInteger(options.idleMs) || options.idleMs < 0) {
      throw new TypeError(`idleMs must be a whole number of milliseconds, 0 or more: ${options.idleMs}`);
    }
    this.#options = options;
    if (options.idleMs === 0 || !options.collect) return;
    // One timer, pushed back by every invocation: refresh() is far cheaper than a new timer each time.
    this.#timer = setTimeout(() => this.#collect(), options.idleMs).unref();
  }

  /** Notes that an invocation began or ended, which moves the next collection to idleMs from now. */
  activity(): void {
    if (!this.#timer) return;
    this.#active = true;
    this.#timer.refresh();
  }

  /** Stops collecting, e.g. at shutdown. */
  close(): void {
    clearTimeout(this.#timer);
  }

  #collect(): void {
    if (!this.#active) return;
    this.#active = false;
    const started = performance.now();
    this.#options.collect?.();
    this.#options.onCollected?.(performance.now() - started);
  }
}

/**
 * Makes Node's gc() (there under --expose-gc) into a full collection that also compacts the heap,
 * which V8 otherwise does only where its heuristics see fragmentation: without it, the pages that
 * held the burst's garbage stay. Compacting every full GC would cost CPU and peak memory under
 * load, so the flag is on for this collection only; V8 reads it at each collection.
 */
export function compactingCollection(gc: () => void): () => void {
  return () => {
    v8.setFlagsFromString('--compact-on-every-full-gc');
    try {
      gc();
    } finally {
      v8.setFlagsFromString('--no-compact-on-every-full-gc');
    }
  };
}
