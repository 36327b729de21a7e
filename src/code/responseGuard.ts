import { randomBytes } from 'node:crypto';

/**
 * The header in which the guard worker says that the function's answer is not one to pass on:
 * "<secret> <reason>". Without the secret, the same header is simply part of the function's answer.
 */
export const guardHeader = 'oyster-guard';

/** Why the guard refused an answer. */
export type GuardReason = 'threw' | 'incomplete' | 'too-large';

/** The guard of one service process: the secret its answers carry, and the limit it reads up to. */
export interface ResponseGuard {
  readonly secret: string;
  readonly maxResponseBytes: number;
}

/** The guard's own compatibility date, whatever the function's: the guard is the service's code. */
export const guardCompatibilityDate = '2025-01-01';

/** A guard with a fresh secret; the function's code, in another isolate, can never learn it. */
export function createResponseGuard(maxResponseBytes: number): ResponseGuard {
  return { secret: randomBytes(16).toString('hex'), maxResponseBytes };
}

/**
 * The guard worker's source: it stands between the socket and the function, and passes the
 * function's answer on only once the whole body has been read. workerd ends a response whose body
 * stream failed half-way like a complete one (the failure is only in its log, and only after the
 * last chunk has gone), so without the guard a truncated answer would look like a success.
 */
export function guardWorkerSource(guard: ResponseGuard): string {
  return `const refuse = (reason) => new Response(null, { status: 500, headers: { ${JSON.stringify(guardHeader)}: ${JSON.stringify(guard.secret)} + ' ' + reason } });
// Statuses whose response can have no body.
const bodiless = new Set([101, 204, 205, 304]);
export default {
  async fetch(request, env) {
    let response;
    try {
      response = await env.user.fetch(request);
    } catch {
      return refuse('threw');
    }
    const chunks = [];
    let size = 0;
    if (response.body) {
      const reader = response.body.getReader();
      try {
        for (let read = await reader.read(); !read.done; read = await reader.read()) {
          size += read.value.byteLength;
          if (size > ${guard.maxResponseBytes}) {
            await reader.cancel().catch(() => {});
            return refuse('too-large');
          }
          chunks.push(read.value);
        }
      } catch {
        return refuse('incomplete');
      }
    }
    const body = new Uint8Array(size);
    let at = 0;
    for (const chunk of chunks) {
      body.set(chunk, at);
      at += chunk.byteLength;
    }
    return new Response(bodiless.has(response.status) ? null : body, response);
  },
};
`;
}

/** The guard's reason when a response carries this process's secret, else undefined. */
export function guardVerdict(
  guard: ResponseGuard,
  headerValue: string | string[] | undefined,
): GuardReason | undefined {
  if (typeof headerValue !== 'string') return undefined;
  const [secret, reason] = headerValue.split(' ');
  if (secret !== guard.secret) return undefined;
  return reason as GuardReason;
}
