import pino, { type Logger } from 'pino';
import { CodeCache } from './code/codeCache.js';
import { egressDenyList } from './code/egress.js';
import { createResponseGuard } from './code/responseGuard.js';
import { writeWorkerFiles } from './code/workerdConfig.js';
import { WorkerFileStore } from './code/workerFileStore.js';
import type { Config } from './config.js';
import { ServiceError, toServiceError } from './errors.js';
import { IdleCollector } from './idleCollector.js';
import type { UsageLedger } from './ledger/usageLedger.js';
import { Metrics } from './metrics.js';
import { BackgroundWork } from './pipeline/backgroundWork.js';
import { type RunRequest, type RunResult, runFunction } from './pipeline/runFunction.js';
import type { SettleOutcome } from './pipeline/settleWork.js';
import { Spares } from './pipeline/spares.js';
import type { FunctionUsage } from './pipeline/usage.js';
import type { CgroupPool } from './sandbox/cgroupPool.js';
import { prepareWorkerd } from './sandbox/standby.js';
import { type Sealing, sealingOff } from './secrets/sealing.js';
import type { Signer } from './signing.js';

// How often ledger rows past their retention are folded into hourly totals.
const rollUpEveryMs = 60 * 60 * 1000;

/** What the service is built from that is made outside it: the pool on disk, the key, gc(), the ledger. */
export interface ServiceDependencies {
  /** The cgroups workers run in. */
  readonly pool: CgroupPool;
  /** Signs every successful answer when set (SIGNER_KEY_PATH). */
  readonly signer?: Signer;
  /** A full garbage collection (Node's gc() under --expose-gc), run once the service is idle after a burst. */
  readonly collectGarbage?: () => void;
  /** Where the service's own lines go; the HTTP layer writes to the same logger. */
  readonly log?: Logger;
  /** Where each invocation's usage is committed before its answer (LEDGER_PATH); none when unset. */
  readonly ledger?: UsageLedger;
  /** The sealing key KMS released (SEALING_KMS_BLOB); off when unset. */
  readonly sealing?: Sealing;
}

/** The service without its HTTP layer: every object a request needs, made and wired once. */
export interface Service {
  readonly config: Config;
  readonly log: Logger;
  readonly pool: CgroupPool;
  readonly signer: Signer | undefined;
  readonly metrics: Metrics;
  /** The files of code the cache holds, kept between its invocations. */
  readonly workerFiles: WorkerFileStore;
  /** Every invocation's cleanup, which goes on after its answer. */
  readonly background: BackgroundWork;
  /** Workers started ahead for cached code. */
  readonly spares: Spares;
  /** The usage ledger, when one is kept. */
  readonly ledger: UsageLedger | undefined;
  /** Whether sealed secrets can be opened here, and with which key. */
  readonly sealing: Sealing;
  /** Whether drain() has begun (shutdown): new invocations are refused with SHUTTING_DOWN. */
  readonly shuttingDown: boolean;
  /** Whether an operator has taken the instance out of rotation: new invocations are refused with DRAINING. */
  readonly draining: boolean;
  /** Invocations running now. */
  readonly inFlight: number;
  /** Puts a standby into every free cgroup; from then on each cgroup gets one back with it. */
  start(): void;
  /** Runs one invocation (src/pipeline/runFunction.ts); refused while shutting down or draining. */
  invoke(request: RunRequest): Promise<RunResult>;
  /** Takes the instance out of rotation (true), so that those in flight finish and no new ones start, or back in (false). */
  setDraining(on: boolean): void;
  /** Refuses new invocations, lets those in flight finish for up to graceMs, aborts the rest, and waits for every cleanup. */
  drain(graceMs: number): Promise<void>;
  /** Lets go of everything kept between invocations: the standbys, the kept files, the idle timer. */
  close(): Promise<void>;
}

/** Creates the service's objects and wires them to each other. */
export function createService(config: Config, deps: ServiceDependencies): Service {
  const { pool, signer } = deps;
  const sealing = deps.sealing ?? sealingOff;
  const log = deps.log ?? pino({ level: config.logLevel });
  const background = new BackgroundWork();
  const guard = createResponseGuard(config.maxResponseBytes);
  const fileSettings = {
    runtimePath: config.runtimePath,
    defaults: { compatibilityDate: config.compatibilityDate, compatibilityFlags: config.compatibilityFlags },
    allowPublicEgress: config.allowPublicEgress,
    deniedEgress: egressDenyList(),
    guard,
  };
  const workerFiles = new WorkerFileStore({
    write: (code) => writeWorkerFiles({ ...fileSettings, code }),
    onRemoveFailed: (error) => log.error({ stage: 'cleanup', err: error }, 'removing the files of evicted code failed'),
  });
  // Code is evicted while a request stores new code: its files and spares go after that request's answer.
  const codeCache = new CodeCache({
    maxBytes: config.codeCacheMaxBytes,
    onEvict: (code) =>
      setImmediate(() => {
        spares.discard(code);
        workerFiles.retire(code);
      }),
  });
  const spares: Spares = new Spares({
    pool,
    codeCache,
    workerFiles,
    max: config.sparesMax,
    perCode: config.sparesPerCode,
    idleMs: config.spareIdleMs,
    startTimeoutMs: config.executionTimeoutMs,
    onReady: () => metrics.countSpareReady(),
    onKilled: (reason) => metrics.countSpareKilled(reason),
    onCleanupFailed: (error) => log.error({ stage: 'cleanup', err: error }, 'cleanup after a spare failed'),
  });
  const metrics = new Metrics({ pool, codeCache, spares });
  const idleCollector = new IdleCollector({
    idleMs: config.idleGcMs,
    collect: deps.collectGarbage,
    onCollected: (durationMs) => {
      metrics.countIdleCollection();
      log.debug({ durationMs }, 'collected garbage after a burst of invocations');
    },
  });
  // Aborted when shutdown stops waiting: waitUntil work still running is cut short.
  const shutdown = new AbortController();
  const pipeline = {
    config,
    pool,
    codeCache,
    workerFiles,
    spares,
    guard,
    sealing,
    background,
    shutdown: shutdown.signal,
    onCleanup: (ms: number) => metrics.observeStage('cleanup', ms),
    onWaitUntil: (outcome: SettleOutcome) => metrics.countWaitUntil(outcome),
  };

  // Every invocation in flight with a promise of its end, so drain() can wait for them, then abort
  // the rest; aborting kills their workerd.
  const inFlight = new Map<AbortController, Promise<void>>();
  let shuttingDown = false;
  let draining = false;

  // After a failed write, no work runs until the ledger takes writes again.
  let ledgerFailing = false;
  // Rows past their retention are folded into hourly totals at start and every hour.
  let rollUps: NodeJS.Timeout | undefined;
  // Commits what an invocation used, before its answer; an invocation whose workerd never started used nothing.
  const account = async (
    request: RunRequest,
    startedMs: number,
    usage: FunctionUsage | undefined,
    outcome: string,
    bytesOut: number,
  ) => {
    if (!deps.ledger || !usage) return undefined;
    const ledger = deps.ledger;
    try {
      return await request.stages.run('ledger', async () =>
        ledger.record({
          atMs: Date.now(),
          codeId: request.codeId,
          outcome,
          cpuUs: usage.cpuMs === undefined ? undefined : usage.cpuMs * 1000,
          peakMemoryBytes: usage.peakMemoryBytes,
          wallUs: (performance.now() - startedMs) * 1000,
          bytesIn: request.request.body.length,
          bytesOut,
        }),
      );
    } catch (error) {
      ledgerFailing = true;
      throw error;
    }
  };

  const invoke = async (request: RunRequest): Promise<RunResult> => {
    if (shuttingDown) throw new ServiceError('SHUTTING_DOWN');
    if (draining) throw new ServiceError('DRAINING');
    if (ledgerFailing) {
      if (!deps.ledger?.writable()) throw new ServiceError('LEDGER_UNAVAILABLE');
      ledgerFailing = false;
    }
    const startedMs = performance.now();
    const controller = new AbortController();
    const forward = () => controller.abort(request.signal.reason);
    if (request.signal.aborted) forward();
    else request.signal.addEventListener('abort', forward, { once: true });
    idleCollector.activity();
    let usage: FunctionUsage | undefined;
    const running = runFunction(pipeline, {
      ...request,
      signal: controller.signal,
      onUsage: (used) => {
        usage = used;
        request.onUsage?.(used);
      },
    }).then(
      async (result) => ({
        ...result,
        invocationId: await account(request, startedMs, usage, 'OK', result.answer.body.length),
      }),
      async (error: unknown) => {
        await account(request, startedMs, usage, toServiceError(error).code, 0);
        throw error;
      },
    );
    inFlight.set(
      controller,
      running.then(
        () => undefined,
        () => undefined,
      ),
    );
    try {
      return await running;
    } finally {
      inFlight.delete(controller);
      request.signal.removeEventListener('abort', forward);
      idleCollector.activity();
    }
  };

  // Waits (up to graceMs) for the invocations in flight and the waitUntil work of those answered,
  // then cuts the rest short and waits for their cleanup.
  const drain = async (graceMs: number): Promise<void> => {
    shuttingDown = true;
    spares.pause('shutdown');
    let timer: NodeJS.Timeout | undefined;
    const graceOver = new Promise((resolve) => (timer = setTimeout(resolve, graceMs)));
    await Promise.race([Promise.all(inFlight.values()).then(() => background.settled()), graceOver]);
    clearTimeout(timer);
    for (const controller of inFlight.keys()) controller.abort(new ServiceError('SHUTTING_DOWN'));
    shutdown.abort(new ServiceError('SHUTTING_DOWN'));
    await Promise.all(inFlight.values());
    await background.settled();
  };

  return {
    config,
    log,
    pool,
    signer,
    metrics,
    workerFiles,
    background,
    spares,
    ledger: deps.ledger,
    sealing,
    get shuttingDown() {
      return shuttingDown;
    },
    get draining() {
      return draining;
    },
    get inFlight() {
      return inFlight.size;
    },
    start: () => {
      pool.keepStandbys((cgroup) => prepareWorkerd({ workerdPath: config.workerdPath, cgroup }));
      if (deps.ledger) {
        const ledger = deps.ledger;
        // A roll-up that fails (a full disk, say) is retried at the next; new work waits for the ledger meanwhile.
        const rollUp = () => {
          try {
            ledger.rollUp(Date.now());
          } catch (error) {
            ledgerFailing = true;
            log.error({ err: error }, 'folding old ledger rows into hourly totals failed');
          }
        };
        rollUp();
        rollUps = setInterval(rollUp, rollUpEveryMs).unref();
      }
    },
    invoke,
    setDraining: (on) => {
      draining = on;
      // A drained instance is about to go: its spares would only hold memory.
      if (on) spares.pause('drain');
      else spares.resume();
    },
    drain,
    close: async () => {
      clearInterval(rollUps);
      idleCollector.close();
      await spares.close();
      workerFiles.retireAll();
      await pool.discardStandbys();
    },
  };
}
