import { randomBytes } from 'node:crypto';

/**
 * The header in which the guard says that the function's answer is not one to pass on:
 * "<secret> <reason>". Without the secret, the same header is simply part of the function's answer.
 */
export const guardHeader = 'oyster-guard';

/** The name of the module that wraps a module worker's main module; no upload may use it. */
export const guardModuleName = '__oyster_guard__.js';

/** Why the guard refused an answer: the function threw, its body stream failed, or the body was too large. */
export type GuardRefusal = 'threw' | 'incomplete' | 'too-large';

/**
 * What the guard says of an answer in guardHeader: a refusal, or "pending" on an answer it passes
 * on while work the function handed to waitUntil is still running.
 */
export type GuardVerdict = GuardRefusal | 'pending';

/** The guard answers a request carrying this verdict once the function's waitUntil work has settled. */
export const settleRequest = 'settle';

/** How often the guard looks whether waitUntil work has settled (see settle in guardFunction). */
const settlePollMs = 2;

/** The guard of one service process: the secret its refusals carry, and the limit it reads up to. */
export interface ResponseGuard {
  readonly secret: string;
  readonly maxResponseBytes: number;
}

/** A guard with a fresh secret, which no code the function can reach holds. */
export function createResponseGuard(maxResponseBytes: number): ResponseGuard {
  return { secret: randomBytes(16).toString('hex'), maxResponseBytes };
}

/**
 * The guard, as JavaScript that defines `guard`, with:
 * - `guarded(answer)`, answer a function that gives the function's answer (a Response or a promise
 *   of one): it waits for that answer and passes it on only once the whole body has been read.
 *   workerd ends a response whose body stream failed half-way like a complete one (the failure is
 *   only in its log, and only after the last chunk has gone), so without the guard a truncated
 *   answer would look like a success. A throw, a failed stream or a body past the limit becomes a
 *   bodiless 500 with the reason and the secret in guardHeader, so that the service tells it from
 *   the function's own 500; the error is logged as workerd logs an uncaught one, so that it is in
 *   the function's output. The body is read whole by workerd itself (arrayBuffer()), which costs
 *   the isolate less than a loop of reads in JavaScript; a declared Content-Length past the limit
 *   is refused before reading, and a body that never ends meets the time or memory limit.
 * - `track(waitUntil)`: waitUntil, counting the work handed to it. An answer passed on while some
 *   of it runs says "pending" in guardHeader, and the service then asks `settle()` (a request whose
 *   guardHeader says settleRequest) before it kills workerd. settle() looks every settlePollMs
 *   rather than awaiting the work: workerd cancels a request that waits only on another request's
 *   promises as hung.
 * It runs in the function's own isolate (a second isolate per workerd costs a start measurably),
 * with the globals it needs taken before any of the function's code runs, where it can.
 */
function guardFunction(guard: ResponseGuard): string {
  const verdict = (word: string) => `secret + ' ${word}'`;
  return [
    `const guard = ((Response, setTimeout, logError, header, secret, maxBytes) => {`,
    `const refuse = (reason) => new Response(null, { status: 500, headers: { [header]: secret + ' ' + reason } });`,
    `let running = 0; const finished = () => { running -= 1; };`,
    `const track = (waitUntil) => (work) => { running += 1; Promise.resolve(work).then(finished, finished); return waitUntil(work); };`,
    `const pass = (response, body) => { if (running === 0 && body === undefined) return response;`,
    `const passed = new Response(body ?? null, response); if (running > 0) passed.headers.set(header, ${verdict('pending')}); return passed; };`,
    `const guarded = async (answer) => {`,
    `let response; try { response = await answer(); } catch (error) { logError('Uncaught', error); return refuse('threw'); }`,
    `if (response.body === null) return pass(response);`,
    `if (Number(response.headers.get('content-length')) > maxBytes) { response.body.cancel().catch(() => {}); return refuse('too-large'); }`,
    `let body; try { body = await response.arrayBuffer(); } catch (error) { logError('Uncaught', error); return refuse('incomplete'); }`,
    `return body.byteLength > maxBytes ? refuse('too-large') : pass(response, body); };`,
    `const settles = (request) => request.headers.get(header) === ${verdict(settleRequest)};`,
    `const settle = async () => { while (running > 0) await new Promise((resolve) => setTimeout(resolve, ${settlePollMs}));`,
    `return new Response(null, { status: 204 }); };`,
    `return { guarded, track, settles, settle };`,
    `})(Response, setTimeout, console.error.bind(console), ${JSON.stringify(guardHeader)}, ${JSON.stringify(guard.secret)}, ${guard.maxResponseBytes});`,
  ].join(' ');
}

/**
 * The module that stands in for a module worker's main module: it re-exports the main module's
 * named exports and wraps its default export's fetch handler (a handler object or a
 * WorkerEntrypoint class) in the guard.
 */
export function guardModuleSource(guard: ResponseGuard, mainModule: string): string {
  const main = JSON.stringify(`./${mainModule}`);
  return [
    `import * as main from ${main};`,
    `export * from ${main};`,
    guardFunction(guard),
    `const handler = main.default;`,
    `const tracked = (ctx) => { ctx.waitUntil = guard.track(ctx.waitUntil.bind(ctx)); return ctx; };`,
    `export default typeof handler === 'function'`,
    `? class extends handler { constructor(ctx, env) { super(tracked(ctx), env); }`,
    `fetch(request) { return guard.settles(request) ? guard.settle() : guard.guarded(() => super.fetch(request)); } }`,
    `: Object.create(handler ?? null, { fetch: { value: (request, env, ctx) => guard.settles(request) ? guard.settle()`,
    `: guard.guarded(() => handler.fetch(request, env, tracked(ctx))) } });`,
  ].join('\n');
}

/**
 * A service worker's script with the guard before it, on the script's first line, so that every
 * line number of the function's code stays what it was. The guard wraps each fetch listener as it
 * is added, and hands the listener an event whose respondWith passes the answer through the guard
 * and whose waitUntil is counted; a listener that throws before it responds has its throw answered
 * as the guard answers one. The service's settle request reaches no listener: the first wrapper
 * answers it.
 * A script that begins with the "use strict" directive keeps it: the guard begins with it too.
 */
export function guardedScript(guard: ResponseGuard, script: Buffer): Buffer {
  const strict = /^\s*(?:(?:\/\/[^\n]*\n|\/\*[\s\S]*?\*\/)\s*)*(['"])use strict\1/.test(
    script.subarray(0, 4096).toString('utf8'),
  );
  const prelude = [
    strict ? `'use strict';` : '',
    `(() => { ${guardFunction(guard)}`,
    `const add = globalThis.addEventListener; const settling = new WeakSet();`,
    `globalThis.addEventListener = function addEventListener(type, listener, options) {`,
    `if (type !== 'fetch' || listener === null || listener === undefined) return add.call(this, type, listener, options);`,
    `return add.call(this, type, function (event) {`,
    `if (guard.settles(event.request)) { if (!settling.has(event)) { settling.add(event); event.respondWith(guard.settle()); } return; }`,
    `let responded = false;`,
    `const seen = Object.create(Object.getPrototypeOf(event), {`,
    `type: { get: () => event.type }, request: { get: () => event.request },`,
    `respondWith: { value: (answer) => { responded = true; event.respondWith(guard.guarded(() => answer)); } },`,
    `waitUntil: { value: guard.track((work) => event.waitUntil(work)) },`,
    `passThroughOnException: { value: () => event.passThroughOnException() } });`,
    `try { return typeof listener === 'function' ? listener.call(this, seen) : listener.handleEvent(seen); }`,
    `catch (error) { if (responded) throw error; event.respondWith(guard.guarded(() => { throw error; })); } }, options); }; })();`,
  ]
    .filter((part) => part !== '')
    .join(' ');
  return Buffer.concat([Buffer.from(prelude), script]);
}

/** The guard's verdict when a response carries this process's secret, else undefined. */
export function guardVerdict(
  guard: ResponseGuard,
  headerValue: string | string[] | undefined,
): GuardVerdict | undefined {
  if (typeof headerValue !== 'string') return undefined;
  const [secret, verdict] = headerValue.split(' ');
  if (secret !== guard.secret) return undefined;
  return verdict as GuardVerdict;
}
