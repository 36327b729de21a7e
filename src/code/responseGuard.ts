import { randomBytes } from 'node:crypto';
import {
  createBodyReader,
  createIsolateGuard,
  type GuardSettings,
  type GuardVerdict,
  guardedHandler,
  guardFetchListeners,
} from './isolateGuard.js';

/**
 * The header in which the guard says that the function's answer is not one to pass on:
 * "<secret> <reason>". Without the secret, the same header is simply part of the function's answer.
 */
export const guardHeader = 'oyster-guard';

/** The name of the module that wraps a module worker's main module; no upload may use it. */
export const guardModuleName = '__oyster_guard__.js';

// A frame of a stack in the guard's module, as V8 prints it.
const guardFrame = new RegExp(`^\\s+at .*${guardModuleName.replaceAll('.', '\\.')}:\\d+:\\d+\\)?$`);

/** A stack (or any lines holding one) without the guard's frames: the function's developer did not write them. */
export function withoutGuardFrames(text: string): string {
  return text
    .split('\n')
    .filter((line) => !guardFrame.test(line))
    .join('\n');
}

/** The guard's verdicts, as the guard in the isolate gives them. */
export type { GuardRefusal, GuardVerdict } from './isolateGuard.js';

/** The guard answers a request carrying this verdict once the function's waitUntil work has settled. */
export const settleRequest = 'settle';

/** The word after the secret on the line of the function's output that holds workerd's trace of it. */
export const traceWord = 'trace';

// How often the guard looks whether waitUntil work has settled (see createIsolateGuard).
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

// The globals createIsolateGuard takes (IsolateGlobals).
const guardGlobals =
  '{ Response, setTimeout, logError: console.error.bind(console), Bytes: Uint8Array, ByteBuffer: ArrayBuffer, NotBytes: TypeError, log: console.log.bind(console), stringify: JSON.stringify }';

// The guard as one statement that defines `guard` (isolateGuard.ts says what it does), with the
// globals it needs taken as the code runs: before any of the function's.
function guardDefinition(guard: ResponseGuard): string {
  const settings: GuardSettings = {
    header: guardHeader,
    secret: guard.secret,
    maxBytes: guard.maxResponseBytes,
    settleRequest,
    settlePollMs,
    traceWord,
  };
  // The body reader is handed in, not referenced: each function is compiled into the isolate from its own source.
  return `const guard = (${createIsolateGuard})(${guardGlobals}, ${JSON.stringify(settings)}, ${createBodyReader});`;
}

/**
 * The module that stands in for a module worker's main module: it re-exports the main module's
 * named exports and wraps its default export (see guardedHandler) in the guard.
 */
export function guardModuleSource(guard: ResponseGuard, mainModule: string): string {
  const main = JSON.stringify(`./${mainModule}`);
  return [
    `import * as main from ${main};`,
    `export * from ${main};`,
    guardDefinition(guard),
    `export default (${guardedHandler})(guard, main.default);`,
  ].join('\n');
}

// Whether a script begins (after comments) with the "use strict" directive.
const useStrict = /^\s*(?:(?:\/\/[^\n]*\n|\/\*[\s\S]*?\*\/)\s*)*(['"])use strict\1/;
// How far into a script the directive is looked for.
const useStrictSearchBytes = 4096;

/**
 * Code on one line. Joining the lines of isolateGuard.ts's functions changes nothing, by the rules its
 * opening comment sets them; test/unit/isolateGuard.test.ts compiles the result.
 */
function oneLine(code: string): string {
  return code.replace(/\s*\n\s*/g, ' ');
}

/**
 * A service worker's script with the guard before it, on the script's first line, so that every
 * line number of the function's code stays what it was; the guard wraps its fetch listeners (see
 * guardFetchListeners). A script that begins with the "use strict" directive keeps it: the guard
 * begins with it too.
 */
export function guardedScript(guard: ResponseGuard, script: Buffer): Buffer {
  const strict = useStrict.test(script.subarray(0, useStrictSearchBytes).toString('utf8'));
  const directive = strict ? `'use strict'; ` : '';
  const prelude = oneLine(
    `${directive}(() => { ${guardDefinition(guard)} (${guardFetchListeners})(guard, globalThis); })();`,
  );
  return Buffer.concat([Buffer.from(prelude), script]);
}

/** How the line with workerd's trace of an invocation begins in its output: the secret, then the trace word. */
export function traceMarker(guard: ResponseGuard): string {
  return `${guard.secret} ${traceWord} `;
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
