import Fastify, { type FastifyError, type FastifyInstance, type FastifyReply, type FastifyRequest, LogController } from 'fastify';
import { serializerCompiler, validatorCompiler, type ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { BackgroundWork } from '../pipeline/backgroundWork.js';
import type { CgroupPool } from '../sandbox/cgroupPool.js';
import { CodeCache } from '../code/codeCache.js';
import type { Config } from '../config.js';
import { egressDenyList } from '../code/egress.js';
import { type ErrorCode, ServiceError, toServiceError } from '../errors.js';
import { IdleCollector } from '../idleCollector.js';
import { Metrics } from '../metrics.js';
import { runFunction } from '../pipeline/runFunction.js';
import { createResponseGuard, guardWorkerSource } from '../code/responseGuard.js';
import type { Signer } from '../signing.js';
import { type StageName, StageTimer } from '../pipeline/stages.js';
import { writeWorkerFiles } from '../code/workerdConfig.js';
import { WorkerFileStore } from '../code/workerFileStore.js';
import { prepareWorkerd } from '../sandbox/standby.js';

// Seconds a client (or load balancer) is asked to wait before retrying a busy server.
const retryAfterSeconds = 1;
const maxCodeIdLength = 256;
// Deepest nesting of objects and arrays accepted in `input`: the function receives it as JSON,
// and a deeper value would overflow JSON.stringify only after a workerd had been started for it.
export const maxInputDepth = 64;
// How often Node looks for connections past their request or headers time-out.
const connectionsCheckMs = 500;
// The route that runs functions; the only one whose requests are invocations.
const invokeRoute = '/api/serverless';

// The request body of POST /api/serverless.
const payloadSchema = z.object({
  code_id: z
    .string()
    .min(1)
    .max(maxCodeIdLength)
    // eslint-disable-next-line no-control-regex
    .regex(/^[^\u0000-\u001f\u007f]*$/, 'must not contain control characters')
    // A lone surrogate has no UTF-8 form: two such code_ids would be the same bytes to a signature.
    .refine((codeId) => Buffer.from(codeId, 'utf8').toString('utf8') === codeId, 'must be well-formed Unicode'),
  input: z
    .record(z.string(), z.unknown())
    .refine((input) => depthWithin(input, maxInputDepth), `must not nest objects and arrays more than ${maxInputDepth} deep`)
    .optional(),
});

export interface AppDependencies {
  /** The cgroups workers run in. */
  readonly pool: CgroupPool;
  /** Signs every successful answer when set (SIGNER_KEY_PATH). */
  readonly signer?: Signer;
  /** A full garbage collection (Node's gc() under --expose-gc), run once the service is idle after a burst. */
  readonly collectGarbage?: () => void;
}

declare module 'fastify' {
  interface FastifyRequest {
    /** The stages this request has been through, with their durations. */
    stages: StageTimer;
    /** The error code it was answered with, if it failed. */
    failureCode: ErrorCode | undefined;
  }
}

// Fastify's own logging, less its two lines for every request: the onResponse hook writes one
// instead (logging is a measurable part of what a request costs the service). Its lines for
// failures that never reach a handler, such as a broken response stream, stay.
class OneLinePerRequest extends LogController {
  override incomingRequest(): void {}

  override requestCompleted(error: Error | null | undefined, ...rest: [FastifyRequest, FastifyReply]): void {
    if (error) super.requestCompleted(error, ...rest);
  }
}

// The service's HTTP API, ready for inject() or listen(); it never listens by itself.
export interface App extends FastifyInstance {
  /** Stops taking requests, lets in-flight ones finish for up to graceMs, then kills what is left. */
  shutdown(graceMs: number): Promise<void>;
  /** Resolves once every answered invocation has been cleaned up (process, files, cgroup). */
  settled(): Promise<void>;
  /** The directories whose files are kept for code the cache holds. */
  keptCodeDirs(): string[];
}

// Builds the HTTP API around a cgroup pool.
export function buildApp(config: Config, deps: AppDependencies): App {
  const { pool, signer } = deps;
  const codeCache = new CodeCache({ maxBytes: config.codeCacheMaxBytes, onEvict: (code) => workerFiles.retire(code) });
  const metrics = new Metrics({ pool, codeCache });
  const background = new BackgroundWork();
  const { runtimePath, compatibilityDate, allowPublicEgress } = config;
  const deniedEgress = egressDenyList();
  const guard = createResponseGuard(config.maxResponseBytes);
  const guardSource = guardWorkerSource(guard);
  const workerFiles = new WorkerFileStore({
    write: (code) => writeWorkerFiles({ runtimePath, code, compatibilityDate, allowPublicEgress, deniedEgress, guardSource }),
    isCached: (codeId, stored) => codeCache.holds(codeId, stored),
    onRemoveFailed: (error) => app.log.error({ stage: 'cleanup', err: error }, 'removing the files of evicted code failed'),
  });
  const pipeline = { config, pool, codeCache, workerFiles, guard, background, onCleanup: (ms: number) => metrics.observeStage('cleanup', ms) };
  const idleCollector = new IdleCollector({
    idleMs: config.idleGcMs,
    collect: deps.collectGarbage,
    onCollected: (durationMs) => {
      metrics.countIdleCollection();
      app.log.debug({ durationMs }, 'collected garbage after a burst of invocations');
    },
  });
  const app = Fastify({
    logger: { level: config.logLevel },
    bodyLimit: config.maxBodyBytes,
    // A client that sends its request slowly, or not at all, holds a connection and a file
    // descriptor: it gets a 408 once the time is up. Node checks its connections' timers only
    // every connectionsCheckingInterval, 30 s unless told otherwise.
    requestTimeout: config.requestTimeoutMs,
    keepAliveTimeout: config.keepAliveTimeoutMs,
    http: { headersTimeout: config.requestTimeoutMs, connectionsCheckingInterval: connectionsCheckMs },
    // Answers during shutdown come from our own hook, in the usual envelope.
    return503OnClosing: false,
    logController: new OneLinePerRequest(),
  }).withTypeProvider<ZodTypeProvider>();
  app.server.maxConnections = config.maxConnections;
  // JSON only: Fastify's default text/plain parser would turn other bodies into a 400, not a 415.
  app.removeContentTypeParser('text/plain');
  app.setValidatorCompiler(validatorCompiler);
  app.setSerializerCompiler(serializerCompiler);

  // Every request in flight with a promise of its end, so shutdown can wait for them, then abandon
  // the rest; aborting kills their workerd.
  const inFlight = new Map<AbortController, Promise<void>>();
  let shuttingDown = false;

  // Each cgroup holds the standby that starts its invocations' workerd, from the start (after
  // main has cleared what a previous run left) until the end.
  app.addHook('onReady', async () => pool.keepStandbys((cgroup) => prepareWorkerd({ workerdPath: config.workerdPath, cgroup })));
  app.addHook('onClose', async () => {
    idleCollector.close();
    workerFiles.retireAll();
    await pool.discardStandbys();
  });

  app.decorateRequest('stages', null as unknown as StageTimer);
  app.decorateRequest('failureCode', undefined);
  app.addHook('onRequest', async (request) => {
    request.stages = new StageTimer();
    if (request.routeOptions.url === invokeRoute) idleCollector.activity();
    if (shuttingDown) throw new ServiceError('SHUTTING_DOWN');
  });
  app.addHook('onSend', async (request, reply) => {
    void reply.header('server-timing', serverTiming(request.stages.durations, reply.elapsedTime));
    // A kept-alive connection would hold the closing server open after its last answer.
    if (shuttingDown) void reply.header('connection', 'close');
  });
  app.addHook('onResponse', async (request, reply) => {
    const { method, url } = request;
    const { statusCode, elapsedTime } = reply;
    request.log.info({ method, url, statusCode, responseTimeMs: elapsedTime, code: request.failureCode }, 'request completed');
    // Health checks and metric scrapes grow nothing worth a collection.
    if (request.routeOptions.url !== invokeRoute) return;
    idleCollector.activity();
    metrics.recordRequest(reply.statusCode, request.failureCode ?? 'OK', request.stages.durations);
  });

  app.get('/health', async (_request, reply) => {
    const healthy = !shuttingDown && pool.usable > 0;
    return reply.code(healthy ? 200 : 503).send({
      status: healthy ? 'success' : 'error',
      message: shuttingDown ? 'Shutting down' : healthy ? 'Serving' : 'No usable cgroup in the pool',
      data: { pool_size: pool.size, free: pool.free, usable: pool.usable },
    });
  });

  app.get('/metrics', async (_request, reply) => {
    return reply.type(metrics.registry.contentType).send(await metrics.registry.metrics());
  });

  app.post(invokeRoute, { schema: { body: payloadSchema } }, async (request, reply) => {
    const abandon = abandonOnClose(reply);
    let finished!: () => void;
    inFlight.set(abandon, new Promise((resolve) => (finished = resolve)));
    try {
      const { code_id: codeId, input } = request.body;
      const result = await runFunction(pipeline, { codeId, input, signal: abandon.signal, stages: request.stages, log: request.log });
      const data = result.output.toString('utf8');
      if (signer) {
        // What is signed is the data string the client receives, so a client can rebuild it even
        // when the function's body was not valid UTF-8.
        const output = Buffer.from(data, 'utf8');
        void reply.headers(signer.headers({ codeId, codeSha256: result.codeSha256, input: result.input, output }));
      }
      return { status: 'success', message: 'Response successfully generated', data };
    } catch (error) {
      const failure = toServiceError(error);
      // A busy or closing server is no fault of the request or the service: the request's own line
      // (with its code) says it, and under overload one line per refusal is all the log can afford.
      if (failure.status !== 503) {
        const log = failure.status >= 500 ? request.log.error.bind(request.log) : request.log.info.bind(request.log);
        log({ stage: request.stages.current, code: failure.code, err: failure.cause ?? failure }, failure.message);
      }
      throw failure;
    } finally {
      inFlight.delete(abandon);
      finished();
    }
  });

  app.setNotFoundHandler(() => {
    throw new ServiceError('ROUTE_NOT_FOUND');
  });

  app.setErrorHandler((error: FastifyError | ServiceError, request, reply) => {
    const failure = fromFramework(error);
    if (failure.code !== error.code) request.log.info({ code: failure.code, err: error }, failure.message);
    request.failureCode = failure.code;
    if (failure.code === 'SERVER_BUSY') void reply.header('retry-after', String(retryAfterSeconds));
    return reply.code(failure.status).send({ status: 'error', message: failure.message, data: failure.data });
  });

  const shutdown = async (graceMs: number) => {
    shuttingDown = true;
    const closed = app.close();
    const graceOver = new Promise((resolve) => setTimeout(resolve, graceMs).unref());
    await Promise.race([Promise.all(inFlight.values()), graceOver]);
    for (const controller of inFlight.keys()) controller.abort(new ServiceError('SHUTTING_DOWN'));
    await closed;
    await background.settled();
  };
  return Object.assign(app, { shutdown, settled: () => background.settled(), keptCodeDirs: () => workerFiles.sharedDirs }) as unknown as App;
}

// Whether a parsed JSON value nests no deeper than maxDepth; iterative, so any depth is safe to check.
function depthWithin(value: unknown, maxDepth: number): boolean {
  const pending: Array<readonly [unknown, number]> = [[value, 1]];
  for (let next = pending.pop(); next; next = pending.pop()) {
    const [current, depth] = next;
    if (typeof current !== 'object' || current === null) continue;
    if (depth > maxDepth) return false;
    for (const child of Object.values(current)) pending.push([child, depth + 1]);
  }
  return true;
}

// A controller that aborts when the client goes away before its answer is sent; shutdown aborts it too.
function abandonOnClose(reply: FastifyReply): AbortController {
  const controller = new AbortController();
  reply.raw.once('close', () => {
    if (!reply.raw.writableFinished) controller.abort(new ServiceError('CLIENT_CLOSED'));
  });
  return controller;
}

// The Server-Timing header: each stage the request went through, then the total, in milliseconds.
function serverTiming(stages: ReadonlyArray<readonly [StageName, number]>, totalMs: number): string {
  return [...stages, ['total', totalMs] as const].map(([name, ms]) => `${name};dur=${ms.toFixed(2)}`).join(', ');
}

// Maps Fastify's own errors (body parsing, validation) to ours.
function fromFramework(error: FastifyError | ServiceError): ServiceError {
  if (error instanceof ServiceError) return error;
  if (error.validation) return new ServiceError('INVALID_PAYLOAD', { data: error.validation, cause: error });
  switch (error.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return new ServiceError('PAYLOAD_TOO_LARGE', { cause: error });
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return new ServiceError('UNSUPPORTED_MEDIA_TYPE', { cause: error });
  }
  const status = error.statusCode ?? 500;
  if (status >= 400 && status < 500) return new ServiceError('INVALID_PAYLOAD', { data: error.message, cause: error });
  return toServiceError(error);
}
