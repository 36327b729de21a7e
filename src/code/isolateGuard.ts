// The guard as it runs in the function's own isolate, in workerd (a second isolate per workerd
// costs a start measurably). responseGuard.ts embeds these functions by their source text
// (fn.toString()) with their settings as literals, so they import nothing, reach nothing outside
// their parameters and take the globals they need before any of the function's code runs.
// The service-worker prelude is these functions on one line: nothing in their bodies may be a
// line comment nor a template literal that spans lines, and every statement ends with its
// semicolon (see oneLine in responseGuard.ts).

/** Why the guard refused an answer: the function threw, its body stream failed, or the body was too large. */
export type GuardRefusal = 'threw' | 'incomplete' | 'too-large';

/**
 * What the guard says of an answer in its header: a refusal, or "pending" on an answer it passes
 * on while work the function handed to waitUntil is still running.
 */
export type GuardVerdict = GuardRefusal | 'pending';

/** What the guard is told by the service, embedded as a JSON literal. */
export interface GuardSettings {
  /** The header of the guard's verdicts: "<secret> <verdict>". */
  readonly header: string;
  /** What no code the function can reach holds: a verdict without it is the function's own header. */
  readonly secret: string;
  /** The most bytes of body passed on. */
  readonly maxBytes: number;
  /** The verdict word of the service's request to wait for waitUntil work. */
  readonly settleRequest: string;
  /** How often settle() looks whether waitUntil work has settled. */
  readonly settlePollMs: number;
  /** The word after the secret on the line that hands workerd's trace of the invocation to the service. */
  readonly traceWord: string;
}

/** What the guard uses of workerd's Request. */
export interface IsolateRequest {
  readonly headers: { get(name: string): string | null };
}

/** What the guard uses of a body stream's reader. */
export interface IsolateBodyReader {
  read(): Promise<{ done: boolean; value?: unknown }>;
  cancel(): Promise<void>;
}

/** What the guard uses of workerd's Response. */
export interface IsolateResponse {
  readonly body: { getReader(): IsolateBodyReader; cancel(): Promise<void> } | null;
  readonly headers: { get(name: string): string | null; set(name: string, value: string): void };
}

/** workerd's Response constructor, as the guard calls it (a Response as init copies its status and headers). */
export type IsolateResponseClass = new (
  body: Uint8Array | null,
  init: IsolateResponse | { status: number; headers?: Record<string, string> },
) => IsolateResponse;

/** The isolate's globals the guard uses, taken before any of the function's code runs. */
export interface IsolateGlobals {
  readonly Response: IsolateResponseClass;
  readonly setTimeout: (callback: () => void, ms: number) => unknown;
  /** Logs as workerd logs an uncaught error, so that it is in the function's output. */
  readonly logError: (label: string, error: unknown) => void;
  /** Uint8Array. */
  readonly Bytes: Uint8ArrayConstructor;
  /** ArrayBuffer. */
  readonly ByteBuffer: ArrayBufferConstructor;
  /** TypeError, as workerd fails a body whose chunk is not bytes. */
  readonly NotBytes: TypeErrorConstructor;
  /** Writes a line to workerd's output, which the service reads. */
  readonly log: (line: string) => void;
  /** JSON.stringify. */
  readonly stringify: (value: unknown) => string;
}

/** A function's answer: a Response or a promise of one. */
export type Answer = IsolateResponse | Promise<IsolateResponse>;

/** Hands work to workerd to finish after the answer. */
export type WaitUntil = (work: unknown) => void;

/** What the guard gives the code that wraps a function's handler. */
export interface IsolateGuard {
  /** Waits for the answer and passes it on only once the whole body has been read; refuses it otherwise. */
  guarded(answer: () => Answer): Promise<IsolateResponse>;
  /** waitUntil, counting the work handed to it. */
  track(waitUntil: WaitUntil): WaitUntil;
  /** Whether a request is the service's settle request. */
  settles(request: IsolateRequest): boolean;
  /** Answers 204 once the work handed to waitUntil has settled. */
  settle(): Promise<IsolateResponse>;
  /** Hands workerd's trace events of the invocation (a tail handler's) to the service, with what the guard caught. */
  traced(events: unknown): void;
}

/** An exception the guard caught from the function, as it hands it on with the trace. */
export interface CaughtException {
  readonly name: string;
  readonly message: string;
  readonly stack: string;
}

/**
 * The guard. `guarded` passes on an answer only once its whole body has been read: workerd ends a
 * response whose body stream failed half-way like a complete one (the failure is only in its log,
 * and only after the last chunk has gone), so without the guard a truncated answer would look like
 * a success. A throw, a failed stream or a body past the limit becomes a bodiless 500 with the
 * reason and the secret in the header, so that the service tells it from the function's own 500;
 * the error is logged as workerd logs an uncaught one, so that it is in the function's output. The
 * body is read chunk by chunk and the read is cancelled as soon as it passes the limit, so that an
 * endless or huge body costs the isolate at most the limit's bytes and ends when it passes it; a
 * declared Content-Length past the limit is refused before reading. A chunk that is not bytes (an
 * ArrayBuffer or a view of one) fails the body as workerd fails it, with workerd's message.
 * An answer passed on while work handed to `track`'s waitUntil runs says "pending", and the
 * service then sends the settle request before it kills workerd. settle() looks every settlePollMs
 * rather than awaiting the work: workerd cancels a request that waits only on another request's
 * promises as hung.
 * workerd's trace of the invocation (its console lines and exceptions, for the tail) comes to
 * `traced` once the invocation is over: the guard writes it on one line of the output, after the
 * secret, with the exceptions it caught, which workerd's trace does not see (the guard answered).
 * An exception is logged by its stack's text: a service worker's console line shows an Error
 * object as its message alone.
 */
export function createIsolateGuard(
  globals: IsolateGlobals,
  settings: GuardSettings,
  bodyReader: typeof createBodyReader,
): IsolateGuard {
  const { Response, setTimeout, logError, log, stringify } = globals;
  const { header, secret, maxBytes } = settings;
  const pending: GuardVerdict = 'pending';
  const refuse = (reason: GuardRefusal) =>
    new Response(null, { status: 500, headers: { [header]: `${secret} ${reason}` } });
  let running = 0;
  const finished = () => {
    running -= 1;
  };
  const track = (waitUntil: WaitUntil) => (work: unknown) => {
    running += 1;
    Promise.resolve(work).then(finished, finished);
    return waitUntil(work);
  };
  const pass = (response: IsolateResponse, body?: Uint8Array) => {
    if (running === 0 && body === undefined) return response;
    const passed = new Response(body ?? null, response);
    if (running > 0) passed.headers.set(header, `${secret} ${pending}`);
    return passed;
  };
  const readUpTo = bodyReader(globals, maxBytes);
  const caught: CaughtException[] = [];
  const uncaught = (error: unknown) => {
    let exception: CaughtException;
    try {
      const { name = 'Error', message = error, stack = '' } = error instanceof Object ? (error as Partial<Error>) : {};
      exception = { name: String(name), message: String(message), stack: String(stack) };
    } catch {
      exception = { name: 'Error', message: 'an exception that cannot be described', stack: '' };
    }
    caught.push(exception);
    logError('Uncaught', exception.stack === '' ? error : exception.stack);
  };
  const guarded = async (answer: () => Answer) => {
    let response: IsolateResponse;
    try {
      response = await answer();
    } catch (error) {
      uncaught(error);
      return refuse('threw');
    }
    if (response.body === null) return pass(response);
    if (Number(response.headers.get('content-length')) > maxBytes) {
      response.body.cancel().catch(() => {});
      return refuse('too-large');
    }
    let body: Uint8Array | undefined;
    try {
      body = await readUpTo(response.body.getReader());
    } catch (error) {
      uncaught(error);
      return refuse('incomplete');
    }
    return body === undefined ? refuse('too-large') : pass(response, body);
  };
  const settles = (request: IsolateRequest) => request.headers.get(header) === `${secret} ${settings.settleRequest}`;
  const settle = async () => {
    while (running > 0) await new Promise<void>((resolve) => setTimeout(resolve, settings.settlePollMs));
    return new Response(null, { status: 204 });
  };
  const traced = (events: unknown) => {
    try {
      log(`${secret} ${settings.traceWord} ${stringify({ events, caught })}`);
    } catch {
      log(`${secret} ${settings.traceWord} ${stringify({ events: [], caught })}`);
    }
  };
  return { guarded, track, settles, settle, traced };
}

/**
 * Reads a body chunk by chunk, up to maxBytes: the bytes, or undefined (the read cancelled) once
 * it passes them. A chunk that is not bytes fails the read as workerd fails such a body.
 */
export function createBodyReader(
  globals: IsolateGlobals,
  maxBytes: number,
): (reader: IsolateBodyReader) => Promise<Uint8Array | undefined> {
  const { Bytes, ByteBuffer, NotBytes } = globals;
  const bytesOf = (chunk: unknown) => {
    if (chunk instanceof ByteBuffer) return new Bytes(chunk);
    if (ByteBuffer.isView(chunk)) return new Bytes(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    throw new NotBytes('This ReadableStream did not return bytes.');
  };
  return async (reader) => {
    const chunks: Uint8Array[] = [];
    let length = 0;
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      const chunk = bytesOf(value);
      length += chunk.byteLength;
      if (length > maxBytes) {
        reader.cancel().catch(() => {});
        return undefined;
      }
      chunks.push(chunk);
    }
    if (chunks.length === 1) return chunks[0];
    const body = new Bytes(length);
    let offset = 0;
    for (const chunk of chunks) {
      body.set(chunk, offset);
      offset += chunk.byteLength;
    }
    return body;
  };
}

/** workerd's ExecutionContext, as far as the guard uses it. */
export interface IsolateContext {
  waitUntil: WaitUntil;
}

/** A module worker's fetch handler object. */
export interface HandlerObject {
  fetch(request: IsolateRequest, env: unknown, ctx: IsolateContext): Answer;
}

/** A module worker's WorkerEntrypoint class. */
export type EntrypointClass = new (
  ctx: IsolateContext,
  env: unknown,
) => {
  fetch(request: IsolateRequest): Answer;
};

/**
 * What stands in for a module worker's default export: its fetch handler (of a handler object or
 * a WorkerEntrypoint class) wrapped in the guard, its waitUntil counted, and the service's settle
 * request answered by the guard, never by the function. Its tail handler is the guard's: workerd
 * is told to send the worker's own trace to it.
 */
export function guardedHandler(guard: IsolateGuard, handler: HandlerObject | EntrypointClass | undefined): object {
  const tracked = (ctx: IsolateContext) => {
    ctx.waitUntil = guard.track(ctx.waitUntil.bind(ctx));
    return ctx;
  };
  if (typeof handler === 'function') {
    return class extends handler {
      constructor(ctx: IsolateContext, env: unknown) {
        super(tracked(ctx), env);
      }
      override fetch(request: IsolateRequest) {
        return guard.settles(request) ? guard.settle() : guard.guarded(() => super.fetch(request));
      }
      tail(events: unknown) {
        guard.traced(events);
      }
    };
  }
  return Object.create(handler ?? null, {
    fetch: {
      value: (request: IsolateRequest, env: unknown, ctx: IsolateContext) =>
        guard.settles(request) ? guard.settle() : guard.guarded(() => handler!.fetch(request, env, tracked(ctx))),
    },
    tail: { value: (events: unknown) => guard.traced(events) },
  });
}

/** A service worker's FetchEvent, as far as the guard uses it. */
export interface IsolateFetchEvent {
  readonly type: string;
  readonly request: IsolateRequest;
  respondWith(answer: Answer): void;
  waitUntil(work: unknown): void;
  passThroughOnException(): void;
}

/** A listener as addEventListener takes it: a function or an object with handleEvent. */
export type Listener =
  | ((this: unknown, event: IsolateFetchEvent) => unknown)
  | { handleEvent(event: IsolateFetchEvent): unknown }
  | null
  | undefined;

/** The global scope of a service worker, as far as the guard uses it. */
export interface ServiceWorkerScope {
  addEventListener(this: unknown, type: string, listener: Listener, options?: unknown): void;
}

/**
 * Wraps each fetch listener as the script adds it, and hands the listener an event whose
 * respondWith passes the answer through the guard and whose waitUntil is counted; a listener that
 * throws before it responds has its throw answered as the guard answers one. The service's settle
 * request reaches no listener: the first wrapper answers it. A tail listener of the guard's takes
 * the worker's own trace; the script's own tail listeners are not added, as on workerd, where no
 * worker's trace ever reaches them (a module worker's tail handler is shadowed by the guard's alike).
 */
export function guardFetchListeners(guard: IsolateGuard, scope: ServiceWorkerScope): void {
  const add = scope.addEventListener;
  const settling = new WeakSet<IsolateFetchEvent>();
  add.call(scope, 'tail', ((event: { events: unknown }) => guard.traced(event.events)) as unknown as Listener);
  scope.addEventListener = function addEventListener(type, listener, options) {
    if (type === 'tail') return undefined;
    if (type !== 'fetch' || listener === null || listener === undefined) return add.call(this, type, listener, options);
    return add.call(
      this,
      type,
      function (this: unknown, event: IsolateFetchEvent) {
        if (guard.settles(event.request)) {
          if (!settling.has(event)) {
            settling.add(event);
            event.respondWith(guard.settle());
          }
          return;
        }
        let responded = false;
        const seen = Object.create(Object.getPrototypeOf(event), {
          type: { get: () => event.type },
          request: { get: () => event.request },
          respondWith: {
            value: (answer: Answer) => {
              responded = true;
              event.respondWith(guard.guarded(() => answer));
            },
          },
          waitUntil: { value: guard.track((work) => event.waitUntil(work)) },
          passThroughOnException: { value: () => event.passThroughOnException() },
        });
        try {
          return typeof listener === 'function' ? listener.call(this, seen) : listener.handleEvent(seen);
        } catch (error) {
          if (responded) throw error;
          event.respondWith(
            guard.guarded(() => {
              throw error;
            }),
          );
          return undefined;
        }
      },
      options,
    );
  };
}
