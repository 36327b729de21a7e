import { abortError, type ServiceError } from '../errors.js';

export interface AdmissionQueueOptions<T> {
  /** Most requests waiting at once; the next one is answered SERVER_BUSY at once. 0: none waits. */
  readonly maxLength: number;
  /** How long a request waits at most before it is answered SERVER_BUSY. */
  readonly maxWaitMs: number;
  /** Places a request now, or says undefined when nothing is free for it. */
  readonly place: (codeId: string) => Promise<T | undefined>;
  /** Gives back a placement made for a waiter that left while it was being made. */
  readonly giveBack: (placement: T) => void;
  /** The SERVER_BUSY answer: for a full queue (waitedMs 0), or for a waiter whose time is up. */
  readonly busy: (details: { queued: number; waitedMs: number }) => ServiceError;
}

interface Waiter<T> {
  readonly codeId: string;
  settle(outcome: { placement: T } | { error: unknown }): void;
}

/**
 * The requests that found no free cgroup, waiting first come first served for one to come back:
 * each freed place goes to the oldest waiter. A request waits at most maxWaitMs and leaves when its
 * client goes away; with maxLength waiting, the next is answered SERVER_BUSY at once, so an
 * overload costs the service a bounded queue and bounded time, not memory.
 */
export class AdmissionQueue<T> {
  readonly #options: AdmissionQueueOptions<T>;
  readonly #waiters: Array<Waiter<T>> = [];
  #placing = false;
  /** Set when a place may have been freed while one was being sought: look again. */
  #freedMeanwhile = false;

  constructor(options: AdmissionQueueOptions<T>) {
    this.#options = options;
  }

  /** Requests waiting now. */
  get length(): number {
    return this.#waiters.length;
  }

  /** Waits for a place for a request that found none, or fails: SERVER_BUSY, or the signal's reason. */
  wait(codeId: string, signal: AbortSignal): Promise<T> {
    const { maxLength, maxWaitMs, busy } = this.#options;
    if (signal.aborted) return Promise.reject(abortError(signal));
    if (this.#waiters.length >= maxLength) return Promise.reject(busy({ queued: this.#waiters.length, waitedMs: 0 }));
    return new Promise<T>((resolve, reject) => {
      // Out of the queue first, so that the error counts only those still waiting.
      const leave = (error: () => unknown) => {
        this.#remove(waiter);
        waiter.settle({ error: error() });
      };
      const timer = setTimeout(
        () => leave(() => busy({ queued: this.#waiters.length, waitedMs: maxWaitMs })),
        maxWaitMs,
      );
      const onAbort = () => leave(() => abortError(signal));
      signal.addEventListener('abort', onAbort, { once: true });
      let settled = false;
      const waiter: Waiter<T> = {
        codeId,
        settle: (outcome) => {
          if (settled) return;
          settled = true;
          clearTimeout(timer);
          signal.removeEventListener('abort', onAbort);
          if ('placement' in outcome) resolve(outcome.placement);
          else reject(outcome.error);
        },
      };
      this.#waiters.push(waiter);
      this.wake();
    });
  }

  /** A place may have been freed: places the waiters, oldest first, for as long as places are found. */
  wake(): void {
    this.#freedMeanwhile = true;
    if (!this.#placing) void this.#placeWaiters();
  }

  /** Answers every waiter at once with the error (draining, shutdown). */
  refuseAll(error: ServiceError): void {
    for (const waiter of this.#waiters.splice(0)) waiter.settle({ error });
  }

  async #placeWaiters(): Promise<void> {
    this.#placing = true;
    try {
      while (this.#waiters.length > 0 && this.#freedMeanwhile) {
        this.#freedMeanwhile = false;
        const oldest = this.#waiters[0]!;
        let placement: T | undefined;
        try {
          placement = await this.#options.place(oldest.codeId);
        } catch (error) {
          this.#remove(oldest);
          oldest.settle({ error });
          this.#freedMeanwhile = true;
          continue;
        }
        if (placement === undefined) continue;
        // Found: there may be more, so look again for the next waiter.
        this.#freedMeanwhile = true;
        if (this.#remove(oldest)) oldest.settle({ placement });
        else this.#options.giveBack(placement);
      }
    } finally {
      this.#placing = false;
    }
  }

  // Takes a waiter out of the queue; false when it had left already.
  #remove(waiter: Waiter<T>): boolean {
    const at = this.#waiters.indexOf(waiter);
    if (at < 0) return false;
    this.#waiters.splice(at, 1);
    return true;
  }
}
