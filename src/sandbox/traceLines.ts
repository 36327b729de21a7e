import { withoutGuardFrames } from '../code/responseGuard.js';

/** The longest trace line read; a longer one is dropped, as if workerd had sent none. */
export const maxTraceLineBytes = 256 * 1024;

/** One console call of the function's, as workerd's trace records it. */
export interface TraceLog {
  readonly level: string;
  /** When it was made, in ms since the epoch (workerd's clock, which stands still while code runs). */
  readonly atMs: number;
  /** Its arguments, as workerd serialised them. */
  readonly message: unknown;
}

/** An exception of the function's: one workerd's trace saw, or one the guard caught and answered. */
export interface TraceException {
  readonly name: string;
  readonly message: string;
  readonly stack: string;
}

/**
 * What the function did, for the tail: workerd's trace of the invocation (its console lines and
 * exceptions) when workerd finished it, or else what it printed (workerd was ended first, at a
 * limit, say, and sent no trace).
 */
export type FunctionTrace =
  | { readonly traced: true; readonly logs: readonly TraceLog[]; readonly exceptions: readonly TraceException[] }
  | { readonly traced: false; readonly output: string };

// workerd prints a service worker's console line as its arguments in JSON after this.
const serviceWorkerLine = /message\(\) = (\[.*\])$/;

// How far into a line the marker may begin: a module worker's trace line begins with it, a service
// worker's after workerd's prefix for a console call ("workerd/io/worker.c++:…: info: console.log(); message() = [").
const markerWindowBytes = 256;

/**
 * Takes the lines on which the guard hands over workerd's trace (src/code/isolateGuard.ts) out of
 * a run's output, chunk by chunk: the first one's JSON goes to onLine, and every other byte goes on
 * to `pass`, for what users see of the output. A line is held back only until its first bytes say
 * whether it carries the marker (or it ends); a trace line is kept whole up to maxTraceLineBytes,
 * and a longer one is dropped, as if workerd had sent none.
 */
export class TraceLineFilter {
  readonly #marker: string;
  readonly #onLine: (payload: string) => void;
  readonly #pass: (bytes: Buffer) => void;
  readonly #decideBytes: number;
  /** What the line so far is: still undecided, output, a trace line, or a trace line too long to keep. */
  #line: 'undecided' | 'output' | 'trace' | 'overlong' = 'undecided';
  #held: Buffer[] = [];
  #heldBytes = 0;
  #found = false;

  /** marker: the secret and the trace word, as the line begins (or a service worker's argument does). */
  constructor(marker: string, onLine: (payload: string) => void, pass: (bytes: Buffer) => void) {
    this.#marker = marker;
    this.#onLine = onLine;
    this.#pass = pass;
    this.#decideBytes = markerWindowBytes + Buffer.byteLength(marker);
  }

  push(chunk: Buffer): void {
    let start = 0;
    // The line begun in an earlier chunk first: the marker may straddle the boundary.
    if (this.#line !== 'undecided' || this.#heldBytes > 0) {
      const end = chunk.indexOf(0x0a);
      if (end === -1) {
        this.#take(chunk);
        return;
      }
      this.#take(chunk.subarray(0, end + 1));
      this.#endLine();
      start = end + 1;
    }
    const whole = chunk.subarray(start, chunk.lastIndexOf(0x0a) + 1);
    // Whole lines without the marker, nearly all of them, go on as one piece.
    if (whole.length > 0 && !whole.includes(this.#marker)) this.#pass(whole);
    else this.#lineByLine(whole);
    start += whole.length;
    if (start < chunk.length) this.#take(chunk.subarray(start));
  }

  #lineByLine(lines: Buffer): void {
    for (let start = 0, end = lines.indexOf(0x0a); end !== -1; start = end + 1, end = lines.indexOf(0x0a, start)) {
      this.#take(lines.subarray(start, end + 1));
      this.#endLine();
    }
  }

  /** Passes on a line the run's output ended in, as it is, unless it began a trace line. */
  flush(): void {
    const line = this.#line === 'undecided' && this.#heldBytes > 0 ? this.#decide() : this.#line;
    if (line === 'output') this.#release();
    this.#reset();
  }

  #take(piece: Buffer): void {
    if (this.#line === 'output') {
      this.#pass(piece);
      return;
    }
    if (this.#line === 'overlong') return;
    this.#held.push(piece);
    this.#heldBytes += piece.length;
    const line = this.#line === 'undecided' && this.#heldBytes >= this.#decideBytes ? this.#decide() : this.#line;
    if (line === 'output') this.#release();
    else if (line === 'trace' && this.#heldBytes > maxTraceLineBytes) {
      this.#line = 'overlong';
      this.#held = [];
      this.#heldBytes = 0;
    }
  }

  #decide(): 'output' | 'trace' {
    const head = Buffer.concat(this.#held, this.#heldBytes).subarray(0, this.#decideBytes);
    this.#line = head.includes(this.#marker) ? 'trace' : 'output';
    return this.#line;
  }

  #endLine(): void {
    const line = this.#line === 'undecided' ? this.#decide() : this.#line;
    if (line === 'output') this.#release();
    else if (line === 'trace') {
      const text = Buffer.concat(this.#held, this.#heldBytes).toString('utf8').replace(/\n$/, '');
      const payload = tracePayload(text, this.#marker);
      if (payload === undefined) this.#release();
      else if (!this.#found) {
        this.#found = true;
        this.#onLine(payload);
      }
    }
    this.#reset();
  }

  #release(): void {
    for (const piece of this.#held) this.#pass(piece);
    this.#held = [];
    this.#heldBytes = 0;
  }

  #reset(): void {
    this.#line = 'undecided';
    this.#held = [];
    this.#heldBytes = 0;
  }
}

// The JSON after the marker: the line's rest, or, for a service worker, its one argument's.
function tracePayload(line: string, marker: string): string | undefined {
  const at = line.indexOf(marker);
  if (at === -1) return undefined;
  if (at === 0) return line.slice(marker.length);
  const printed = serviceWorkerLine.exec(line);
  if (!printed) return undefined;
  try {
    const [argument] = JSON.parse(printed[1]!) as unknown[];
    return typeof argument === 'string' && argument.startsWith(marker) ? argument.slice(marker.length) : undefined;
  } catch {
    return undefined;
  }
}

interface RawTraceItem {
  readonly logs?: ReadonlyArray<{ readonly level?: unknown; readonly timestamp?: unknown; readonly message?: unknown }>;
  readonly exceptions?: ReadonlyArray<{
    readonly name?: unknown;
    readonly message?: unknown;
    readonly stack?: unknown;
  }>;
}

/** The trace in a trace line's JSON ({events, caught}); empty where the JSON is not what the guard writes. */
export function parseTrace(payload: string): FunctionTrace {
  let parsed: { events?: unknown; caught?: unknown };
  try {
    parsed = JSON.parse(payload) as typeof parsed;
  } catch {
    return { traced: true, logs: [], exceptions: [] };
  }
  const items = Array.isArray(parsed.events) ? (parsed.events as RawTraceItem[]) : [];
  const caught = Array.isArray(parsed.caught) ? (parsed.caught as RawTraceItem['exceptions'] & object) : [];
  const logs = items.flatMap((item) =>
    (Array.isArray(item.logs) ? item.logs : []).map((log) => ({
      level: String(log.level),
      atMs: Number(log.timestamp),
      message: log.message,
    })),
  );
  const exceptions = [
    ...items.flatMap((item) => (Array.isArray(item.exceptions) ? item.exceptions : [])),
    ...caught,
  ].map((exception) => ({
    name: String(exception.name ?? 'Error'),
    message: String(exception.message ?? ''),
    stack: withoutGuardFrames(String(exception.stack ?? '')),
  }));
  return { traced: true, logs, exceptions };
}
