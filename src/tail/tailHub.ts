import { ServiceError } from '../errors.js';

/** Most tails open at once, over every code_id. */
export const maxTails = 16;
/** Most bytes of events one tail holds while its reader does not read; past it, events are lost and counted. */
export const maxQueuedBytes = 1024 * 1024;

/** Where a tail's events go: an SSE response, say. */
export interface TailSink {
  /** Writes a chunk; false once the reader's buffer is full (more is then held until drained()). */
  write(chunk: string): boolean;
  /** Ends the stream. */
  end(): void;
}

/**
 * The live tails of functions' invocations (GET /admin/tail): one event per invocation of a
 * code_id as it ends, to every tail open on it, as Server-Sent Events. An event is serialised
 * once, whatever the number of tails; a reader that does not keep up loses events and is told how
 * many, and never holds up an invocation nor grows the service's memory past maxQueuedBytes a tail.
 */
export class TailHub {
  readonly #byCode = new Map<string, Set<Tail>>();
  #open = 0;

  /** Whether a tail is open on a code_id. */
  watching(codeId: string): boolean {
    return this.#byCode.has(codeId);
  }

  /** Tails open now. */
  get open(): number {
    return this.#open;
  }

  /** Throws TAIL_LIMIT when maxTails are open. */
  mayOpen(): void {
    if (this.#open >= maxTails) throw new ServiceError('TAIL_LIMIT', { data: { max_tails: maxTails } });
  }

  /** Opens a tail on a code_id; close() (on the reader's disconnect) takes it away. */
  openTail(codeId: string, sink: TailSink): Tail {
    this.mayOpen();
    const tail = new Tail(sink, () => {
      const tails = this.#byCode.get(codeId);
      tails?.delete(tail);
      if (tails?.size === 0) this.#byCode.delete(codeId);
      this.#open -= 1;
    });
    const tails = this.#byCode.get(codeId) ?? new Set<Tail>();
    tails.add(tail);
    this.#byCode.set(codeId, tails);
    this.#open += 1;
    return tail;
  }

  /** Sends one invocation's event to every tail on its code_id. */
  publish(codeId: string, event: object): void {
    const tails = this.#byCode.get(codeId);
    if (!tails) return;
    const chunk = `event: invocation\ndata: ${JSON.stringify(event)}\n\n`;
    for (const tail of tails) tail.offer(chunk);
  }

  /** Ends every tail (shutdown). */
  closeAll(): void {
    for (const tails of [...this.#byCode.values()]) for (const tail of [...tails]) tail.end();
  }
}

/** One reader's tail. */
export class Tail {
  readonly #sink: TailSink;
  readonly #onClose: () => void;
  #queue: string[] = [];
  #queuedBytes = 0;
  #lost = 0;
  #full = false;
  #closed = false;

  constructor(sink: TailSink, onClose: () => void) {
    this.#sink = sink;
    this.#onClose = onClose;
  }

  /** Events lost so far that the reader has not been told of. */
  get lost(): number {
    return this.#lost;
  }

  /** Bytes held for the reader now. */
  get queuedBytes(): number {
    return this.#queuedBytes;
  }

  offer(chunk: string): void {
    if (this.#closed) return;
    if (!this.#full) {
      this.#tellLost();
      this.#send(chunk);
    } else if (this.#lost > 0 || this.#queuedBytes + chunk.length > maxQueuedBytes) {
      // Once one is lost, the rest are too until the reader catches up: what it gets stays in order.
      this.#lost += 1;
    } else {
      this.#queue.push(chunk);
      this.#queuedBytes += chunk.length;
    }
  }

  /** The reader has room again: what was held goes, then how many were lost. */
  drained(): void {
    this.#full = false;
    while (!this.#full && this.#queue.length > 0) {
      const chunk = this.#queue.shift()!;
      this.#queuedBytes -= chunk.length;
      this.#send(chunk);
    }
    if (!this.#full) this.#tellLost();
  }

  /** Writes a comment, so that a reader that has gone is found out and a proxy keeps the stream open. */
  keepAlive(): void {
    if (!this.#full && !this.#closed) this.#send(': keep-alive\n\n');
  }

  /** Takes the tail away (the reader disconnected). */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#queue = [];
    this.#queuedBytes = 0;
    this.#onClose();
  }

  /** Ends the stream and takes the tail away. */
  end(): void {
    this.#sink.end();
    this.close();
  }

  #tellLost(): void {
    if (this.#lost === 0) return;
    const lost = this.#lost;
    this.#lost = 0;
    this.#send(`event: lost\ndata: ${JSON.stringify({ lost })}\n\n`);
  }

  #send(chunk: string): void {
    if (!this.#sink.write(chunk)) this.#full = true;
  }
}
