import pino, { type Logger } from 'pino';
import { StorageAttestation } from '../attestation/storageAttestation.js';
import { Capacity } from '../capacity/capacity.js';
import type { CgroupPool } from '../capacity/cgroupPool.js';
import { CodeCache } from '../code/codeCache.js';
import { egressDenyList } from '../code/egress.js';
import { createResponseGuard, type ResponseGuard } from '../code/responseGuard.js';
import type { WorkerCode } from '../code/workerCode.js';
import { type WorkerFiles, writeWorkerFiles } from '../code/workerdConfig.js';
import type { Config } from '../config.js';
import { IdleCollector } from '../idleCollector.js';
import type { UsageLedger } from '../ledger/usageLedger.js';
import { Metrics } from '../metrics.js';
import { type RunRequest, type RunResult, runFunction } from '../pipeline/runFunction.js';
import { codeMemoryLimit, v8HeapFlags } from '../sandbox/heapLimit.js';
import { type Sealing, sealingOff } from '../secrets/sealing.js';
import type { Signer } from '../signing.js';
import { TailHub } from '../tail/tailHub.js';
import { Accounting } from './accounting.js';
import { AdmissionGates } from './admissionGates.js';

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
  readonly signer: Signer | undefined;
  readonly metrics: Metrics;
  /** Where invocations run: the cgroups, their standbys, the spares, the code's files, the cleanups. */
  readonly capacity: Capacity;
  /** The usage ledger, when one is kept. */
  readonly ledger: UsageLedger | undefined;
  /** Whether sealed secrets can be opened here, and with which key. */
  readonly sealing: Sealing;
  /** Shutdown, draining and the ledger's state: whether new invocations are let in, and how many run. */
  readonly gates: AdmissionGates;
  /** The live tails of functions' invocations (GET /admin/tail). */
  readonly tails: TailHub;
  /** Puts a standby into every free cgroup, and starts the ledger's hourly roll-ups. */
  start(): void;
  /** Runs one invocation (src/pipeline/runFunction.ts) through the gates, its usage committed before its answer. */
  invoke(request: RunRequest): Promise<RunResult>;
  /** Lets go of everything kept between invocations: the standbys, the kept files, the timers. */
  close(): Promise<void>;
}

/** Creates the service's objects and wires them to each other; it decides nothing itself. */
export function createService(config: Config, deps: ServiceDependencies): Service {
  const log = deps.log ?? pino({ level: config.logLevel });
  const sealing = deps.sealing ?? sealingOff;
  const metrics = new Metrics();
  const guard = createResponseGuard(config.maxResponseBytes);
  // Code is evicted while a request stores new code: its files and spares go after that request's answer.
  const codeCache = new CodeCache({
    maxBytes: config.codeCacheMaxBytes,
    onEvict: (code) => setImmediate(() => capacity.forget(code)),
  });
  const writeFiles = filesWriter(config, guard, deps.pool.memoryLimitBytes);
  const tails = new TailHub();
  const capacity = new Capacity(config, {
    ...{ pool: deps.pool, codeCache, writeFiles, guard, events: metrics, log },
    tailed: (codeId) => tails.watching(codeId),
  });
  metrics.watch({ capacity, codeCache });
  const accounting = new Accounting(deps.ledger, log);
  const idle = new IdleCollector({
    idleMs: config.idleGcMs,
    collect: deps.collectGarbage,
    onCollected: (durationMs) => {
      metrics.countIdleCollection();
      log.debug({ durationMs }, 'collected garbage after a burst of invocations');
    },
  });
  const gates = new AdmissionGates({
    capacity,
    ledgerReady: () => accounting.ready(),
    onActivity: () => idle.activity(),
  });
  const attestation = new StorageAttestation({
    url: config.attestationUrl,
    timeoutMs: config.upstreamTimeoutMs,
    reuseMs: config.attestationReuseMs,
  });
  const pipeline = { config, capacity, codeCache, attestation, sealing };
  const run = (request: RunRequest) => runFunction(pipeline, request);
  return {
    ...{ config, log, signer: deps.signer, metrics, capacity, ledger: deps.ledger, sealing, gates, tails },
    start: () => {
      capacity.start();
      accounting.start();
    },
    invoke: (request) => gates.pass(request.signal, (signal) => accounting.recorded({ ...request, signal }, run)),
    close: async () => {
      accounting.close();
      idle.close();
      await capacity.close();
    },
  };
}

// Writes the files workerd reads for some code: the code, and a config with the service's defaults.
function filesWriter(
  config: Config,
  guard: ResponseGuard,
  memoryLimitBytes: number | undefined,
): (code: WorkerCode) => Promise<WorkerFiles> {
  const settings = {
    runtimePath: config.runtimePath,
    defaults: { compatibilityDate: config.compatibilityDate, compatibilityFlags: config.compatibilityFlags },
    allowPublicEgress: config.allowPublicEgress,
    deniedEgress: egressDenyList(),
    guard,
  };
  return (code) =>
    writeWorkerFiles({
      ...settings,
      code,
      v8Flags: v8HeapFlags(codeMemoryLimit(code.settings.limits?.memoryMb, memoryLimitBytes)),
    });
}
