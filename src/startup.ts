import { constants } from 'node:fs';
import { access } from 'node:fs/promises';
import type { FastifyInstance } from 'fastify';
import { CgroupPool } from './capacity/cgroupPool.js';
import { removeStaleWorkerFiles } from './code/workerdConfig.js';
import type { Config } from './config.js';
import { StartupError } from './errors.js';
import { buildAdminApp } from './http/adminApp.js';
import { buildApp } from './http/app.js';
import type { UsageLedger } from './ledger/usageLedger.js';
import { type Sealing, sealingOff } from './secrets/sealing.js';
import { createService, type Service, type ServiceDependencies } from './service/service.js';
import type { Signer } from './signing.js';

/** The service made from its settings, with its listeners (not listening yet). */
export interface OpenedService {
  readonly service: Service;
  /** The public API. */
  readonly app: FastifyInstance;
  /** The operator endpoints, when ADMIN_PORT is set. */
  readonly admin: FastifyInstance | undefined;
  readonly pool: CgroupPool;
  /** What start-up found and cleared, for its log line. */
  readonly startedWith: Record<string, unknown>;
  /** Closes what was opened beside the service: the usage ledger. */
  close(): void;
}

/**
 * Makes the service from its settings, as main.ts runs it and the tests do in-process: checks the
 * workerd binary, loads the signer (and checks that the attestation server attests its key), the
 * sealing key, the cgroup pool and the ledger, wires the service, and clears what a previous run
 * left in the pool and the runtime directory. Throws a StartupError that names the setting at fault.
 */
export async function openService(
  config: Config,
  options: Pick<ServiceDependencies, 'collectGarbage' | 'log'> = {},
): Promise<OpenedService> {
  await checkWorkerdBinary(config.workerdPath);
  const signer = await loadSigner(config);
  const sealing = await loadSealing(config);
  const pool = await CgroupPool.open({
    root: config.cgroupRoot,
    version: config.cgroupVersion,
    prefix: config.cgroupPrefix,
  });
  const ledger = await openLedger(config);
  const service = createService(config, { ...options, pool, signer, ledger, sealing });
  if (sealing.state === 'unavailable') service.log.error({ reason: sealing.reason }, 'sealed secrets cannot be opened');
  // A previous run may have been killed with workers running: clear what it left.
  const killedLeftovers = await pool.recover();
  const removedStaleDirs = await removeStaleWorkerFiles(config.runtimePath);
  const startedWith = {
    cgroupVersion: pool.version,
    poolSize: pool.size,
    killedLeftovers,
    removedStaleDirs,
    signer: signer?.address ?? null,
    attestedKeyChecked: signer !== undefined && config.attestationKeyCheck,
    ledger: config.ledgerPath ?? null,
    sealing: sealing.state === 'on' ? { keyId: sealing.keyId } : sealing.state,
  };
  const app = buildApp(service);
  const admin = config.adminPort === undefined ? undefined : buildAdminApp(service);
  return { service, app, admin, pool, startedWith, close: () => ledger?.close() };
}

// Refuses to start when workerd cannot be run, rather than failing every request.
async function checkWorkerdBinary(workerdPath: Config['workerdPath']): Promise<void> {
  try {
    await access(workerdPath, constants.X_OK);
  } catch (cause) {
    throw new StartupError(`WORKERD_PATH=${workerdPath} is not an executable file`, { cause });
  }
}

// The optional parts below are loaded only when their settings ask for them: the curve library,
// the AWS SDK and SQLite are each a sizeable part of the idle memory of a service that does not use them.

async function loadSigner(config: Config): Promise<Signer | undefined> {
  if (config.signerKeyPath === undefined) return undefined;
  const signer = await (await import('./signing.js')).loadSigner(config.signerKeyPath);
  if (config.attestationKeyCheck) await (await import('./keyCheck.js')).checkAttestedKey(config, signer);
  return signer;
}

async function loadSealing(config: Config): Promise<Sealing> {
  if (config.sealingKmsBlob === undefined) return sealingOff;
  const { sealingFrom } = await import('./secrets/release.js');
  return sealingFrom({ ...config, sealingKmsBlob: config.sealingKmsBlob });
}

async function openLedger(config: Config): Promise<UsageLedger | undefined> {
  if (config.ledgerPath === undefined) return undefined;
  const { UsageLedger } = await import('./ledger/usageLedger.js');
  return UsageLedger.open({ file: config.ledgerPath, retentionDays: config.ledgerRetentionDays });
}
