import type { FastifyInstance } from 'fastify';
import type { FunctionUsage } from '../capacity/usage.js';
import { type Outcome, outcomeOf } from '../errors.js';
import type { Metrics } from '../metrics.js';

/** The header in which an invocation's answer says what its function used (docs/api.md#usage). */
export const usageHeader = 'x-oyster-usage';

/** What an invocation's function used, with the bytes of the bodies it received and gave. */
export type RequestUsage = FunctionUsage & { bytesIn: number; bytesOut: number };

declare module 'fastify' {
  interface FastifyRequest {
    /** What the function's workerd used and the bytes it exchanged, once its workerd was started. */
    usage: RequestUsage | undefined;
    /** Why the invocation ended, once it has been answered; undefined on routes that invoke nothing. */
    outcome: Outcome | undefined;
  }
}

/**
 * Accounts for each answer of a route group's invocations: its usage header, and in /metrics its
 * status and code, and what its function used.
 */
export function countAnswers(app: FastifyInstance, metrics: Metrics): void {
  app.decorateRequest('usage', undefined);
  app.decorateRequest('outcome', undefined);
  app.addHook('onSend', async (request, reply) => {
    request.outcome = outcomeOf(request.failureCode);
    if (request.usage) void reply.header(usageHeader, formatUsage(request.usage, request.outcome, reply.elapsedTime));
  });
  app.addHook('onResponse', async (request, reply) => {
    const outcome = request.outcome ?? outcomeOf(request.failureCode);
    metrics.recordRequest(reply.statusCode, request.failureCode ?? 'OK', outcome, request.stages.durations);
    if (request.usage) metrics.recordUsage(outcome, request.usage);
  });
}

/**
 * The usage header's value, a structured-field dictionary (RFC 8941): the outcome (a token), then
 * cpu-ms, peak-memory (bytes), wall-ms (from taking the request to the answer), bytes-in and
 * bytes-out (the bodies the function received and gave); a figure the kernel could not give is left out.
 */
export function formatUsage(usage: RequestUsage, outcome: Outcome, wallMs: number): string {
  const fields: Array<[string, string | number | undefined]> = [
    ['outcome', outcome],
    ['cpu-ms', usage.cpuMs === undefined ? undefined : round(usage.cpuMs)],
    ['peak-memory', usage.peakMemoryBytes],
    ['wall-ms', round(wallMs)],
    ['bytes-in', usage.bytesIn],
    ['bytes-out', usage.bytesOut],
  ];
  return fields.flatMap(([name, value]) => (value === undefined ? [] : [`${name}=${value}`])).join(', ');
}

// Three decimals at most, as a structured-field decimal allows.
/** Milliseconds to the microsecond, as the usage header and the tail give them. */
export function round(ms: number): number {
  return Math.round(ms * 1000) / 1000;
}
