import { performance } from 'node:perf_hooks';
import type { CachedCode, CodeCache } from '../code/codeCache.js';
import { parseWorkerCode } from '../code/codeFormat.js';
import type { ResponseGuard } from '../code/responseGuard.js';
import { openSealedSecrets } from '../code/sealedSecrets.js';
import type { FilesLease, WorkerFileStore } from '../code/workerFileStore.js';
import type { Config } from '../config.js';
import { abortError, isServiceError, ServiceError, toServiceError } from '../errors.js';
import type { CgroupPool, Lease } from '../sandbox/cgroupPool.js';
import { watchOom } from '../sandbox/cgroups.js';
import type { WorkerdProcess } from '../sandbox/standby.js';
import type { Sealing } from '../secrets/sealing.js';
import { fetchAttestation } from './attestation.js';
import type { BackgroundWork } from './backgroundWork.js';
import { downloadCode } from './codeDownload.js';
import { type FunctionRequest, type Invocation, invokeWorker } from './invokeWorker.js';
import { type SettleOutcome, settleWork } from './settleWork.js';
import type { SpareCode, Spares, TakenSpare } from './spares.js';
import type { StageTimer } from './stages.js';
import { type Deadline, startDeadline } from './upstream.js';
import { type FunctionUsage, startUsageMeter, type UsageMeter } from './usage.js';

// How long a lost connection to workerd waits for workerd's exit before calling it a crash.
const exitWaitMs = 200;

/** What every run needs and outlives it. */
export interface PipelineDependencies {
  readonly config: Config;
  /** The cgroups workers run in. */
  readonly pool: CgroupPool;
  readonly codeCache: CodeCache;
  /** The code and config files workerd reads, kept for cached code. */
  readonly workerFiles: WorkerFileStore;
  /** Workers started ahead for cached code, and the admission that may kill one for its cgroup. */
  readonly spares: Spares;
  /** What tells a complete answer of the function's from one it did not finish. */
  readonly guard: ResponseGuard;
  /** The key sealed secrets are opened with, where this instance has one. */
  readonly sealing: Sealing;
  /** Where each invocation's cleanup runs once its answer is on its way. */
  readonly background: BackgroundWork;
  /** Fires when shutdown stops waiting for work the functions handed to waitUntil. */
  readonly shutdown: AbortSignal;
  /** Told how long each cleanup took. */
  readonly onCleanup?: (durationMs: number) => void;
  /** Told how each invocation's waitUntil work ended, for those that had some. */
  readonly onWaitUntil?: (outcome: SettleOutcome) => void;
}

/** One client request to run a function. */
export interface RunRequest {
  readonly codeId: string;
  /** The HTTP request the function receives. */
  readonly request: FunctionRequest;
  /** Fires when the client goes away or shutdown gives up on the request. */
  readonly signal: AbortSignal;
  /** Records the stages, for logs, Server-Timing and metrics. */
  readonly stages: StageTimer;
  /** Where a failed cleanup is reported, with the request's id. */
  readonly log: { error(details: object, message: string): void };
  /** Told what the function's workerd used, once it has answered or failed, if it was started. */
  readonly onUsage?: (usage: FunctionUsage) => void;
}

/** What the function answered, whatever its status, with what a signature over it needs. */
export interface RunResult {
  /** The function's answer: status, headers, body exactly as it answered. */
  readonly answer: Invocation;
  /** sha256 of the code that ran, as the storage server served it. */
  readonly codeSha256: Buffer;
  /** Its row in the usage ledger, when one is kept. */
  readonly invocationId?: number;
}

/**
 * Runs a stored function once, start to finish: the request flow of the service. Every failure is
 * a ServiceError, and on every path nothing is left behind.
 */
export async function runFunction(deps: PipelineDependencies, request: RunRequest): Promise<RunResult> {
  const { config, codeCache, workerFiles, spares } = deps;
  const { codeId, signal, stages } = request;
  let lease: Lease | undefined;
  let files: FilesLease | undefined;
  let worker: WorkerdProcess | undefined;
  let deadline: Deadline | undefined;
  let limitEndsAt = 0;
  let waitUntilPending = false;
  let userCodeStarted = false;
  let ran: SpareCode | undefined;
  let listened = false;
  let usage: UsageMeter | undefined;
  // What the function used, told once: while its workerd still runs, or just after it failed.
  const measure = () => {
    if (usage) request.onUsage?.(usage.read(worker?.exited === false ? worker.pid : undefined));
    usage = undefined;
  };
  try {
    // 1. A spare (a workerd already started for the code the cache holds for this code_id), or
    //    else a free cgroup: a busy server answers 503 without bothering the upstreams. The lease
    //    holds the cgroup and the standby waiting in it, the process that starts workerd there.
    //    A request abandoned already takes neither.
    if (signal.aborted) throw abortError(signal);
    const taken = takeSpare(spares, codeCache, codeId);
    const spare = taken?.spare;
    lease = spare?.lease ?? (await stages.run('admission', () => spares.admit(codeCache.peek(codeId) !== undefined)));
    if (!lease) throw new ServiceError('SERVER_BUSY', { data: { pool_size: deps.pool.size } });
    const { cgroup, standby } = lease;
    // The cgroup's OOM count before this invocation (before its spare's start, for a spare).
    const oomKilled = spare?.oomKilled ?? watchOom(cgroup);

    // 2–3. The code: from the cache, or from the storage server on presenting a fresh attestation document.
    const { code: stored, sha256: codeSha256 } =
      taken?.cached ??
      (await codeCache.get(codeId, async () => {
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
      }));

    // 4. The code (one script, or a bundle of modules) and its workerd config, in a private
    //    directory with a random name: written once while the code is cached, else for this run.
    //    A spare has both already.
    //    Sealed secrets are opened here, inside the enclave; their plaintext is only in that config.
    const code =
      spare?.code.code ?? openSealedSecrets(await parseWorkerCode(stored.bytes, stored.contentType), deps.sealing);
    ran = { codeId, stored, sha256: codeSha256, code };
    files =
      spare?.files ??
      (await stages.run('files', () => workerFiles.acquire(stored, code, codeCache.holds(codeId, stored))));
    const configPath = files.configPath;

    // 5. workerd, started by the standby inside the cgroup, until it listens (a spare's may listen
    //    already). The time limit runs from here to the answer. A request abandoned before this
    //    point (shutdown, the client gone) never starts it.
    if (signal.aborted) throw abortError(signal);
    userCodeStarted = true;
    deadline = startDeadline(signal, config.executionTimeoutMs);
    limitEndsAt = performance.now() + config.executionTimeoutMs;
    const limit = deadline.signal;
    usage = spare?.usage ?? startUsageMeter(cgroup);
    worker = await stages
      .run('start', () => (spare ? spare.started(limit) : standby.start(configPath, limit)))
      .catch((error: unknown) => {
        // A start cut short by the client or shutdown says nothing of the code.
        if (!signal.aborted) spares.started(stored, false);
        measure();
        return explainFailure(error, undefined, oomKilled);
      });
    listened = true;
    spares.started(stored, true);
    const port = worker.port;

    // 6. The request, to the function; its whole answer back.
    const { answer, waitUntilPending: pending } = await stages
      .run('execution', () =>
        invokeWorker({
          port,
          request: request.request,
          maxResponseBytes: config.maxResponseBytes,
          guard: deps.guard,
          signal: limit,
        }),
      )
      .catch((error: unknown) => {
        measure();
        return explainFailure(error, worker, oomKilled);
      });
    measure();
    waitUntilPending = pending;
    return { answer, codeSha256 };
  } catch (error) {
    throw interruptedOrNot(toServiceError(error), userCodeStarted);
  } finally {
    // 7. Nothing left behind, on every path: the process, its files, its cgroup. The answer does
    //    not wait for it: workerd gets its SIGKILL here and now, and the cgroup is handed out again
    //    only once the process is gone (its files, outside the cgroup, are let go of meanwhile).
    //    Work the function handed to waitUntil first gets what is left of its time limit.
    deadline?.clear();
    const started = performance.now();
    const running = worker;
    const settled =
      running && waitUntilPending
        ? settleWork({
            port: running.port,
            guard: deps.guard,
            timeoutMs: limitEndsAt - started,
            shutdown: deps.shutdown,
          }).then((outcome) => deps.onWaitUntil?.(outcome))
        : undefined;
    // The standby goes back with the cgroup: it starts the next invocation's workerd.
    const stopped = settled ? settled.then(() => running?.stop()) : running?.stop();
    const released = lease?.release(Promise.resolve(stopped));
    const used = files;
    deps.background.run(async () => {
      // The answer is written in this turn of the event loop; its files go in the next one.
      const removed = used && new Promise((resolve) => setImmediate(resolve)).then(() => used.release());
      // Each part finishes (or fails) on its own, and each failure is told.
      const outcomes = await Promise.allSettled([stopped, removed, released]);
      for (const outcome of outcomes) {
        if (outcome.status === 'rejected')
          request.log.error({ stage: 'cleanup', err: outcome.reason }, 'cleanup failed');
      }
      deps.onCleanup?.(performance.now() - started);
      // Code that started cleanly gets a spare for its next invocation, once this one is gone.
      if (ran && listened) spares.offer(ran);
    });
  }
}

// A spare of the code the cache holds for a code_id, once the cache's copy has passed its check; a
// copy found corrupt lets the spare go, and the invocation fetches the code anew.
function takeSpare(
  spares: Spares,
  codeCache: CodeCache,
  codeId: string,
): { spare: TakenSpare; cached: CachedCode } | undefined {
  const held = codeCache.peek(codeId);
  const spare = held && spares.take(held);
  if (!spare) return undefined;
  const cached = codeCache.lookup(codeId);
  if (cached?.code === spare.code.stored) return { spare, cached };
  spare.abandon();
  return undefined;
}

// Says why an invocation failed, once its workerd is gone: the cgroup's memory limit, a crash, the
// time limit or the function's own error, each with the end of what the function printed.
async function explainFailure(
  error: unknown,
  worker: WorkerdProcess | undefined,
  oomKilled: () => boolean,
): Promise<never> {
  // A dropped connection is usually workerd dying; its exit may reach us a moment after the socket error.
  const connectionLost = isServiceError(error, 'INVOCATION_FAILED');
  const exitedByItself = connectionLost && worker !== undefined && (await worker.exitsWithin(exitWaitMs));
  await worker?.stop();
  const output = worker?.output();
  if (oomKilled())
    throw new ServiceError('OUT_OF_MEMORY', {
      data: output ?? (isServiceError(error) ? error.data : null),
      cause: error,
    });
  if (exitedByItself) throw new ServiceError('WORKERD_CRASHED', { data: output, cause: error });
  if (isServiceError(error, 'USER_CODE_FAILED') || isServiceError(error, 'EXECUTION_TIMEOUT')) {
    throw new ServiceError(error.code, { data: output ?? null, cause: error.cause });
  }
  throw error;
}

// A 503 promises that no user code ran, so it is safe to retry anywhere; once workerd has started,
// a shutdown that cuts the request short answers 500 instead.
function interruptedOrNot(failure: ServiceError, userCodeStarted: boolean): ServiceError {
  if (failure.code !== 'SHUTTING_DOWN' || !userCodeStarted) return failure;
  return new ServiceError('SHUTDOWN_INTERRUPTED', { cause: failure });
}
