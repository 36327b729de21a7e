import { performance } from 'node:perf_hooks';
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { FunctionRequest } from '../capacity/invokeWorker.js';
import { outcomeOf, ServiceError, toServiceError } from '../errors.js';
import type { RunResult } from '../pipeline/runFunction.js';
import type { FunctionTrace } from '../sandbox/traceLines.js';
import type { Service } from '../service/service.js';
import { round } from './answerAccounting.js';

/** The header that names an answered invocation's row in the usage ledger. */
export const invocationHeader = 'x-oyster-invocation';

/** Which route an invocation came by: `POST /api/serverless` or `ANY /fn/<code_id>/…`. */
export type InvocationRoute = 'serverless' | 'fn';

/**
 * Runs one invocation for a request of either route: the client going away aborts it, its stages
 * are the request's, and a failure is logged with the request's id before it is answered.
 */
export async function invokeFor(
  service: Service,
  request: FastifyRequest,
  reply: FastifyReply,
  route: InvocationRoute,
  codeId: string,
  asked: FunctionRequest,
): Promise<RunResult> {
  const startedMs = performance.now();
  let trace: Promise<FunctionTrace> | undefined;
  const tailed = (result: RunResult | undefined, failure: ServiceError | undefined) => {
    if (service.tails.watching(codeId)) {
      const wallMs = performance.now() - startedMs;
      publishTail(service, { request, route, codeId, asked, result, failure, trace, wallMs }).catch((error: unknown) =>
        request.log.error({ err: error }, 'the tail event could not be sent'),
      );
    }
  };
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
      onTrace: (traced) => {
        trace = traced;
      },
    });
    if (request.usage) request.usage.bytesOut = result.answer.body.length;
    if (result.invocationId !== undefined) void reply.header(invocationHeader, String(result.invocationId));
    tailed(result, undefined);
    return result;
  } catch (error) {
    const failure = reportFailure(request, error);
    tailed(undefined, failure);
    throw failure;
  }
}

interface Ended {
  readonly request: FastifyRequest;
  readonly route: InvocationRoute;
  readonly codeId: string;
  readonly asked: FunctionRequest;
  readonly result: RunResult | undefined;
  readonly failure: ServiceError | undefined;
  /** workerd's trace, to come, when one was started. */
  readonly trace: Promise<FunctionTrace> | undefined;
  readonly wallMs: number;
}

/**
 * The tail's event of an invocation that has ended (docs/api.md#live-tail), sent once workerd's
 * trace is in: after the answer, which never waits for it.
 */
async function publishTail(service: Service, ended: Ended): Promise<void> {
  const { request, route, codeId, asked, result, failure } = ended;
  const printed = typeof failure?.data === 'string' ? failure.data : '';
  const trace = (await ended.trace) ?? { traced: false, output: printed };
  const usage = request.usage;
  service.tails.publish(codeId, {
    at_ms: Date.now(),
    request_id: request.id,
    ...(result?.invocationId !== undefined && { ledger_id: result.invocationId }),
    code_id: codeId,
    route,
    method: asked.method,
    path: asked.target.split('?')[0],
    ...(service.config.tailRequestHeaders && { headers: request.headers }),
    outcome: outcomeOf(failure?.code),
    ...(failure && { error_code: failure.code }),
    ...(result && { status: result.answer.statusCode }),
    cpu_ms: usage?.cpuMs === undefined ? undefined : round(usage.cpuMs),
    wall_ms: round(ended.wallMs),
    ...(trace.traced
      ? {
          logs: trace.logs.map((log) => ({ level: log.level, at_ms: log.atMs, message: log.message })),
          exceptions: trace.exceptions,
        }
      : { logs: [], exceptions: [], output: trace.output }),
  });
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
