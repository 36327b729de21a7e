import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { FunctionRequest } from '../capacity/invokeWorker.js';
import type { FunctionUsage } from '../capacity/usage.js';
import { ServiceError, toServiceError } from '../errors.js';
import type { Metrics } from '../metrics.js';
import type { RunResult } from '../pipeline/runFunction.js';
import type { Service } from '../service/service.js';

/** The header in which an invocation's answer says what its function used (docs/api.md#usage). */
export const usageHeader = 'x-oyster-usage';
/** The header that names an answered invocation's row in the usage ledger. */
export const invocationHeader = 'x-oyster-invocation';

declare module 'fastify' {
  interface FastifyRequest {
    /** What the function's workerd used and the bytes it exchanged, once its workerd was started. */
    usage: (FunctionUsage & { bytesIn: number; bytesOut: number }) | undefined;
  }
}

/**
 * Runs one invocation for a request of either route: the client going away aborts it, its stages
 * are the request's, and a failure is logged with the request's id before it is answered.
 */
export async function invokeFor(
  service: Service,
  request: FastifyRequest,
  reply: FastifyReply,
  codeId: string,
  asked: FunctionRequest,
): Promise<RunResult> {
  try {
    const result = await service.invoke({
      codeId,
      request: asked,
      signal: abandonOnClose(reply),
      stages: request.stages,
      log: request.log,
      onUsage: (usage) => {
        request.usage = { ...usage, bytesIn: asked.body.length, bytesOut: 0 };
      },
    });
    if (request.usage) request.usage.bytesOut = result.answer.body.length;
    if (result.invocationId !== undefined) void reply.header(invocationHeader, String(result.invocationId));
    return result;
  } catch (error) {
    throw reportFailure(request, error);
  }
}

/**
 * Accounts for each answer of a route group's invocations: its usage header, and in /metrics its
 * status and code, and what its function used.
 */
export function countAnswers(app: FastifyInstance, metrics: Metrics): void {
  app.decorateRequest('usage', undefined);
  app.addHook('onSend', async (request, reply) => {
    if (request.usage) void reply.header(usageHeader, formatUsage(request.usage, reply.elapsedTime));
  });
  app.addHook('onResponse', async (request, reply) => {
    const outcome = request.failureCode ?? 'OK';
    metrics.recordRequest(reply.statusCode, outcome, request.stages.durations);
    if (request.usage) metrics.recordUsage(outcome, request.usage);
  });
}

/**
 * The usage header's value, a structured-field dictionary (RFC 8941): cpu-ms, peak-memory (bytes),
 * wall-ms (from taking the request to the answer), bytes-in and bytes-out (the bodies the function
 * received and gave); a figure the kernel could not give is left out.
 */
export function formatUsage(usage: FunctionUsage & { bytesIn: number; bytesOut: number }, wallMs: number): string {
  const fields: Array<[string, number | undefined]> = [
    ['cpu-ms', usage.cpuMs === undefined ? undefined : round(usage.cpuMs)],
    ['peak-memory', usage.peakMemoryBytes],
    ['wall-ms', round(wallMs)],
    ['bytes-in', usage.bytesIn],
    ['bytes-out', usage.bytesOut],
  ];
  return fields.flatMap(([name, value]) => (value === undefined ? [] : [`${name}=${value}`])).join(', ');
}

// Three decimals at most, as a structured-field decimal allows.
function round(ms: number): number {
  return Math.round(ms * 1000) / 1000;
}

/**
 * Logs why an invocation failed, with the request's id and stage, and returns the failure to
 * answer with. A busy or closing server is no fault of the request or the service: the request's
 * own line (with its code) says it, and under overload one line per refusal is all the log can
 * afford. The function's own error status is the function's business, not the service's.
 */
function reportFailure(request: FastifyRequest, error: unknown): ServiceError {
  const failure = toServiceError(error);
  if (failure.status === 503) return failure;
  const serviceFault = failure.status >= 500 && failure.code !== 'FUNCTION_ERROR_STATUS';
  const details = { stage: request.stages.current, code: failure.code, err: failure.cause ?? failure };
  if (serviceFault) request.log.error(details, failure.message);
  else request.log.info(details, failure.message);
  return failure;
}

/** A signal that fires when the client goes away before its answer is sent. */
export function abandonOnClose(reply: FastifyReply): AbortSignal {
  const controller = new AbortController();
  reply.raw.once('close', () => {
    if (!reply.raw.writableFinished) controller.abort(new ServiceError('CLIENT_CLOSED'));
  });
  return controller.signal;
}
