import type { Capacity } from '../capacity/capacity.js';
import { ServiceError } from '../errors.js';

export interface AdmissionGatesOptions {
  /** Where the invocations run: paused while draining, cut short at shutdown. */
  readonly capacity: Capacity;
  /** Whether the usage ledger takes writes: no work runs unrecorded. */
  readonly ledgerReady: () => boolean;
  /** Told when an invocation begins or ends (the garbage collection after a burst waits for quiet). */
  readonly onActivity: () => void;
}

/**
 * The gates in front of every invocation, and the count of those that went through: shutdown
 * (SHUTTING_DOWN), an operator's drain (DRAINING), and a usage ledger that cannot be written
 * (LEDGER_UNAVAILABLE) each refuse new work before it costs anything. Shutdown lets the work in
 * flight finish for a grace period, then cuts it short.
 */
export class AdmissionGates {
  readonly #options: AdmissionGatesOptions;
  /** Every invocation in flight with a promise of its end; aborting its controller kills its workerd. */
  readonly #inFlight = new Map<AbortController, Promise<void>>();
  #shuttingDown = false;
  #draining = false;

  constructor(options: AdmissionGatesOptions) {
    this.#options = options;
  }

  /** Whether drain() has begun (shutdown). */
  get shuttingDown(): boolean {
    return this.#shuttingDown;
  }

  /** Whether an operator has taken the instance out of rotation. */
  get draining(): boolean {
    return this.#draining;
  }

  /** Invocations running now. */
  get inFlight(): number {
    return this.#inFlight.size;
  }

  /**
   * Runs one invocation if every gate is open, counted until it ends; `work` gets a signal that
   * fires when the client's does, or when shutdown gives up on it.
   */
  async pass<T>(signal: AbortSignal, work: (signal: AbortSignal) => Promise<T>): Promise<T> {
    if (this.#shuttingDown) throw new ServiceError('SHUTTING_DOWN');
    if (this.#draining) throw new ServiceError('DRAINING');
    if (!this.#options.ledgerReady()) throw new ServiceError('LEDGER_UNAVAILABLE');
    const controller = new AbortController();
    const forward = () => controller.abort(signal.reason);
    if (signal.aborted) forward();
    else signal.addEventListener('abort', forward, { once: true });
    this.#options.onActivity();
    const running = work(controller.signal);
    this.#inFlight.set(
      controller,
      running.then(
        () => undefined,
        () => undefined,
      ),
    );
    try {
      return await running;
    } finally {
      this.#inFlight.delete(controller);
      signal.removeEventListener('abort', forward);
      this.#options.onActivity();
    }
  }

  /** Takes the instance out of rotation (true): those in flight finish, no new ones start; or back in (false). */
  setDraining(on: boolean): void {
    this.#draining = on;
    // A drained instance is about to go: its spares would only hold memory.
    if (on) this.#options.capacity.pause('drain');
    else this.#options.capacity.resume();
  }

  /**
   * Shutdown: refuses new invocations, waits (up to graceMs) for those in flight and the waitUntil
   * work of those answered, then cuts the rest short and waits for every cleanup.
   */
  async drain(graceMs: number): Promise<void> {
    const { capacity } = this.#options;
    this.#shuttingDown = true;
    capacity.pause('shutdown');
    let timer: NodeJS.Timeout | undefined;
    const graceOver = new Promise((resolve) => (timer = setTimeout(resolve, graceMs)));
    await Promise.race([Promise.all(this.#inFlight.values()).then(() => capacity.settled()), graceOver]);
    clearTimeout(timer);
    for (const controller of this.#inFlight.keys()) controller.abort(new ServiceError('SHUTTING_DOWN'));
    capacity.stopWaiting();
    await Promise.all(this.#inFlight.values());
    await capacity.settled();
  }
}
