import Fastify, { type FastifyError, type FastifyInstance, type FastifyReply } from 'fastify';
import { serializerCompiler, validatorCompiler, type ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { fetchAttestation } from './attestation.js';
import { type Cgroup, type CgroupPool, watchOom } from './cgroupPool.js';
import { CodeCache } from './codeCache.js';
import { downloadCode } from './codeDownload.js';
import { parseWorkerCode } from './codeFormat.js';
import type { Config } from './config.js';
import { ServiceError, toServiceError } from './errors.js';
import { type Deadline, startDeadline } from './http.js';
import { invokeWorker } from './invocation.js';
import { StageTimer } from './stages.js';
import { removeWorkerFiles, type WorkerFiles, writeWorkerFiles } from './workerdConfig.js';
import { startWorkerd, type WorkerdProcess } from './workerdProcess.js';

// Seconds a client (or load balancer) is asked to wait before retrying a busy server.
const retryAfterSeconds = 1;
const maxCodeIdLength = 256;
// How long a lost connection to workerd waits for workerd's exit before calling it a crash.
const exitWaitMs = 200;

// The request body of POST /api/serverless.
const payloadSchema = z.object({
  code_id: z
    .string()
    .min(1)
    .max(maxCodeIdLength)
    // eslint-disable-next-line no-control-regex
    .regex(/^[^\u0000-\u001f\u007f]*$/, 'must not contain control characters'),
  input: z.record(z.string(), z.unknown()).optional(),
});

export interface AppDependencies {
  /** The cgroups workers run in. */
  readonly pool: CgroupPool;
}

// The service's HTTP API, ready for inject() or listen(); it never listens by itself.
export interface App extends FastifyInstance {
  /** Stops taking requests, lets in-flight ones finish for up to graceMs, then kills what is left. */
  shutdown(graceMs: number): Promise<void>;
}

// Builds the HTTP API around a cgroup pool.
export function buildApp(config: Config, deps: AppDependencies): App {
  const { pool } = deps;
  const codeCache = new CodeCache({ maxBytes: config.codeCacheMaxBytes });
  const app = Fastify({
    logger: { level: config.logLevel },
    bodyLimit: config.maxBodyBytes,
    // Answers during shutdown come from our own hook, in the usual envelope.
    return503OnClosing: false,
  }).withTypeProvider<ZodTypeProvider>();
  // JSON only: Fastify's default text/plain parser would turn other bodies into a 400, not a 415.
  app.removeContentTypeParser('text/plain');
  app.setValidatorCompiler(validatorCompiler);
  app.setSerializerCompiler(serializerCompiler);

  // Every request in flight with a promise of its end, so shutdown can wait for them, then abandon
  // the rest; aborting kills their workerd.
  const inFlight = new Map<AbortController, Promise<void>>();
  let shuttingDown = false;

  app.addHook('onRequest', async () => {
    if (shuttingDown) throw new ServiceError('SHUTTING_DOWN');
  });
  // A kept-alive connection would hold the closing server open after its last answer.
  app.addHook('onSend', async (_request, reply) => {
    if (shuttingDown) void reply.header('connection', 'close');
  });

  app.get('/health', async (_request, reply) => {
    const healthy = !shuttingDown && pool.usable > 0;
    return reply.code(healthy ? 200 : 503).send({
      status: healthy ? 'success' : 'error',
      message: shuttingDown ? 'Shutting down' : healthy ? 'Serving' : 'No usable cgroup in the pool',
      data: { pool_size: pool.size, free: pool.free, usable: pool.usable },
    });
  });

  app.post('/api/serverless', { schema: { body: payloadSchema } }, async (request, reply) => {
    const { code_id: codeId, input } = request.body;
    const abandon = abandonOnClose(reply);
    let finished!: () => void;
    inFlight.set(abandon, new Promise((resolve) => (finished = resolve)));
    const signal = abandon.signal;
    const stages = new StageTimer();
    let cgroup: Cgroup | undefined;
    let files: WorkerFiles | undefined;
    let worker: WorkerdProcess | undefined;
    let deadline: Deadline | undefined;
    let userCodeStarted = false;
    try {
      // 1. A free cgroup first: a busy server answers 503 without bothering the upstreams.
      cgroup = await stages.run('admission', () => pool.reserve());
      if (!cgroup) {
        void reply.header('retry-after', String(retryAfterSeconds));
        throw new ServiceError('SERVER_BUSY', { data: { pool_size: pool.size } });
      }
      const reserved = cgroup;
      // 2–3. The code: from the cache, or from the storage server on presenting a fresh attestation document.
      const { code: stored } = await codeCache.get(codeId, async () => {
        const attestation = await stages.run('attestation', () =>
          fetchAttestation({ url: config.attestationUrl, timeoutMs: config.upstreamTimeoutMs, signal }),
        );
        return stages.run('download', () =>
          downloadCode({
            url: config.storageUrl,
            codeId,
            attestation,
            maxBytes: config.maxCodeBytes,
            timeoutMs: config.upstreamTimeoutMs,
            signal,
          }),
        );
      });
      // 4. The code and its workerd config, in a private directory with a random name. The code is
      //    one script (service worker or ES module) or a multipart bundle of modules.
      const code = await parseWorkerCode(stored.bytes, stored.contentType);
      files = await stages.run('files', () =>
        writeWorkerFiles({
          runtimePath: config.runtimePath,
          code,
          compatibilityDate: config.compatibilityDate,
          allowPublicEgress: config.allowPublicEgress,
        }),
      );
      const configPath = files.configPath;
      // 5. workerd, inside the cgroup, until it listens. The time limit runs from here to the answer.
      userCodeStarted = true;
      deadline = startDeadline(signal, config.executionTimeoutMs);
      const limit = deadline.signal;
      const oomKilled = await watchOom(reserved);
      worker = await stages
        .run('start', () => startWorkerd({ workerdPath: config.workerdPath, configPath, cgroup: reserved, signal: limit }))
        .catch((error: unknown) => explainFailure(error, undefined, oomKilled));
      const port = worker.port;
      // 6. The input, to the function.
      const result = await stages
        .run('execution', () =>
          invokeWorker({ port, body: JSON.stringify(input ?? {}), maxResponseBytes: config.maxResponseBytes, signal: limit }),
        )
        .catch((error: unknown) => explainFailure(error, worker, oomKilled));
      if (result.statusCode !== 200) {
        await explainFailure(new ServiceError('USER_CODE_FAILED'), worker, oomKilled);
      }
      // 7. The answer.
      return { status: 'success', message: 'Response successfully generated', data: result.body.toString('utf8') };
    } catch (error) {
      const failure = interruptedOrNot(toServiceError(error), userCodeStarted);
      const log = failure.status >= 500 ? request.log.error.bind(request.log) : request.log.info.bind(request.log);
      log({ stage: stages.current, code: failure.code, err: failure.cause ?? failure }, failure.message);
      throw failure;
    } finally {
      // 8. Nothing left behind, on every path: the process, its files, its cgroup.
      await stages.run('cleanup', async () => {
        deadline?.clear();
        await worker?.stop();
        if (files) await removeWorkerFiles(files);
        if (cgroup) await pool.release(cgroup);
      });
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
    return reply.code(failure.status).send({ status: 'error', message: failure.message, data: failure.data });
  });

  const shutdown = async (graceMs: number) => {
    shuttingDown = true;
    const closed = app.close();
    const graceOver = new Promise((resolve) => setTimeout(resolve, graceMs).unref());
    await Promise.race([Promise.all(inFlight.values()), graceOver]);
    for (const controller of inFlight.keys()) controller.abort(new ServiceError('SHUTTING_DOWN'));
    await closed;
  };
  return Object.assign(app, { shutdown }) as unknown as App;
}

// A controller that aborts when the client goes away before its answer is sent; shutdown aborts it too.
function abandonOnClose(reply: FastifyReply): AbortController {
  const controller = new AbortController();
  reply.raw.once('close', () => {
    if (!reply.raw.writableFinished) controller.abort(new ServiceError('CLIENT_CLOSED'));
  });
  return controller;
}

// Says why an invocation failed, once its workerd is gone: the cgroup's memory limit, a crash,
// or the function's own error, each with what workerd printed.
async function explainFailure(error: unknown, worker: WorkerdProcess | undefined, oomKilled: () => Promise<boolean>): Promise<never> {
  // A dropped connection is usually workerd dying; its exit may reach us a moment after the socket error.
  const connectionLost = error instanceof ServiceError && error.code === 'INVOCATION_FAILED';
  const exitedByItself = connectionLost && worker !== undefined && (await worker.exitsWithin(exitWaitMs));
  await worker?.stop();
  const output = worker?.output();
  if (await oomKilled()) throw new ServiceError('OUT_OF_MEMORY', { data: output ?? dataOf(error), cause: error });
  if (exitedByItself) {
    throw new ServiceError('WORKERD_CRASHED', { data: output, cause: error });
  }
  if (error instanceof ServiceError && error.code === 'USER_CODE_FAILED') {
    throw new ServiceError('USER_CODE_FAILED', { data: output });
  }
  throw error;
}

function dataOf(error: unknown): unknown {
  return error instanceof ServiceError ? error.data : null;
}

// A 503 promises that no user code ran, so it is safe to retry anywhere; once workerd has started,
// a shutdown that cuts the request short answers 500 instead.
function interruptedOrNot(failure: ServiceError, userCodeStarted: boolean): ServiceError {
  if (failure.code !== 'SHUTTING_DOWN' || !userCodeStarted) return failure;
  return new ServiceError('SHUTDOWN_INTERRUPTED', { cause: failure });
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
