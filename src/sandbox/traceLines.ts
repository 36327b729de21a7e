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

/**
 * Finds the line on which the guard hands over workerd's trace (src/code/isolateGuard.ts) in a
 * run's output, chunk by chunk. Only a line that may still hold the marker is kept while it is
 * incomplete, up to maxTraceLineBytes; every other byte is looked at once and let go.
 */
export class TraceLineScanner {
  readonly #marker: string;
  readonly #onLine: (payload: string) => void;
  #partial: Buffer[] = [];
  #partialBytes = 0;
  #skipping = false;
  #found = false;

  /** marker: the secret and the trace word, as the line begins (or a service worker's argument does). */
  constructor(marker: string, onLine: (payload: string) => void) {
    this.#marker = marker;
    this.#onLine = onLine;
  }

  push(chunk: Buffer): void {
    if (this.#found) return;
    let start = 0;
    for (let end = chunk.indexOf(0x0a); end !== -1; end = chunk.indexOf(0x0a, start)) {
      this.#take(chunk.subarray(start, end));
      this.#endLine();
      if (this.#found) return;
      start = end + 1;
    }
    if (start < chunk.length) this.#take(chunk.subarray(start));
  }

  #take(piece: Buffer): void {
    if (this.#skipping) return;
    this.#partialBytes += piece.length;
    if (this.#partialBytes > maxTraceLineBytes) {
      this.#skipping = true;
      this.#partial = [];
      return;
    }
    this.#partial.push(piece);
  }

  #endLine(): void {
    const line = this.#skipping ? '' : Buffer.concat(this.#partial, this.#partialBytes).toString('utf8');
    this.#partial = [];
    this.#partialBytes = 0;
    this.#skipping = false;
    const payload = tracePayload(line, this.#marker);
    if (payload === undefined) return;
    this.#found = true;
    this.#onLine(payload);
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

/** Output without the trace line, for what users see of it. */
export function withoutTraceLine(output: string, marker: string): string {
  if (!output.includes(marker)) return output;
  return output
    .split('\n')
    .filter((line) => !line.includes(marker))
    .join('\n');
}
