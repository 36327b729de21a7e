import { constants } from 'node:fs';
import { access } from 'node:fs/promises';
import 'dotenv/config';
import { removeStaleWorkerFiles } from './code/workerdConfig.js';
import { type Config, parseConfig } from './config.js';
import { StartupError } from './errors.js';
import { buildAdminApp } from './http/adminApp.js';
import { buildApp, shutdown } from './http/app.js';
import { compactingCollection } from './idleCollector.js';
import { CgroupPool } from './sandbox/cgroupPool.js';
import { type Sealing, sealingOff } from './secrets/sealing.js';
import { createService } from './service.js';

// Starts the service from the environment (and .env), as supervisord runs it; exits 0 after SIGTERM.
async function main(): Promise<void> {
  const config = parseConfig(process.env);
  await checkWorkerdBinary(config.workerdPath);
  // Loaded only when asked for: the curve library is a sizeable part of the service's idle memory.
  const signer =
    config.signerKeyPath === undefined
      ? undefined
      : await (await import('./signing.js')).loadSigner(config.signerKeyPath);
  if (signer && config.attestationKeyCheck) await (await import('./keyCheck.js')).checkAttestedKey(config, signer);
  // Loaded only when asked for, like the signer: the AWS SDK is large.
  const sealing: Sealing =
    config.sealingKmsBlob === undefined
      ? sealingOff
      : await (await import('./secrets/release.js')).sealingFrom({ ...config, sealingKmsBlob: config.sealingKmsBlob });
  const pool = await CgroupPool.open({
    root: config.cgroupRoot,
    version: config.cgroupVersion,
    prefix: config.cgroupPrefix,
  });
  // Loaded only when asked for, like the signer: SQLite is native code the service otherwise need not map.
  const ledger =
    config.ledgerPath === undefined
      ? undefined
      : (await import('./ledger/usageLedger.js')).UsageLedger.open({
          file: config.ledgerPath,
          retentionDays: config.ledgerRetentionDays,
        });
  // gc() is there when the service runs with its own Node flags (src/nodeFlags.ts).
  const collectGarbage = globalThis.gc && compactingCollection(globalThis.gc);
  const service = createService(config, { pool, signer, collectGarbage, ledger, sealing });
  if (sealing.state === 'unavailable') service.log.error({ reason: sealing.reason }, 'sealed secrets cannot be opened');
  const app = buildApp(service);
  const admin = config.adminPort === undefined ? undefined : buildAdminApp(service);
  if (!collectGarbage && config.idleGcMs > 0) {
    service.log.warn(
      'gc() is not exposed, so nothing is collected after a burst (IDLE_GC_MS): start the service with --expose-gc, as npm start does',
    );
  }

  // A previous run may have been killed with workers running: clear what it left.
  const killed = await pool.recover();
  const stale = await removeStaleWorkerFiles(config.runtimePath);
  app.log.info(
    {
      cgroupVersion: pool.version,
      poolSize: pool.size,
      killedLeftovers: killed,
      removedStaleDirs: stale,
      signer: signer?.address ?? null,
      attestedKeyChecked: signer !== undefined && config.attestationKeyCheck,
      ledger: config.ledgerPath ?? null,
      sealing: sealing.state === 'on' ? { keyId: sealing.keyId } : sealing.state,
    },
    'cgroup pool ready',
  );

  // `on`, not `once`: a second signal during shutdown must find a listener, not Node's default,
  // which would end the process with its workers still running.
  let stopping = false;
  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    process.on(signal, () => {
      if (stopping) return;
      stopping = true;
      app.log.info({ signal, graceMs: config.shutdownGraceMs }, 'shutting down');
      Promise.all([shutdown(app, service, config.shutdownGraceMs), admin?.close()]).then(
        () => {
          ledger?.close();
          process.exit(0);
        },
        (error: unknown) => {
          app.log.error({ err: error }, 'shutdown failed');
          process.exit(1);
        },
      );
    });
  }
  await app.listen({ port: config.port, host: config.host });
  await admin?.listen({ port: config.adminPort, host: config.adminHost });
}

// Refuses to start when workerd cannot be run, rather than failing every request.
async function checkWorkerdBinary(workerdPath: Config['workerdPath']): Promise<void> {
  try {
    await access(workerdPath, constants.X_OK);
  } catch (cause) {
    throw new StartupError(`WORKERD_PATH=${workerdPath} is not an executable file`, { cause });
  }
}

main().catch((error: unknown) => {
  const message = error instanceof StartupError ? error.message : String((error as Error)?.stack ?? error);
  process.stderr.write(`oyster-serverless cannot start: ${message}\n`);
  process.exit(1);
});
