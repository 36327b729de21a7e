import 'dotenv/config';
import { parseConfig } from './config.js';
import { StartupError } from './errors.js';
import { shutdown } from './http/app.js';
import { compactingCollection } from './idleCollector.js';
import { openService } from './startup.js';

// Starts the service from the environment (and .env), as supervisord runs it; exits 0 after SIGTERM.
async function main(): Promise<void> {
  const config = parseConfig(process.env);
  // gc() is there when the service runs with its own Node flags (src/serviceNodeFlags.ts).
  const collectGarbage = globalThis.gc && compactingCollection(globalThis.gc);
  const { service, app, admin, startedWith, close } = await openService(config, { collectGarbage });
  if (!collectGarbage && config.idleGcMs > 0) {
    service.log.warn(
      'gc() is not exposed, so nothing is collected after a burst (IDLE_GC_MS): start the service with --expose-gc, as npm start does',
    );
  }
  app.log.info(startedWith, 'cgroup pool ready');

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
          close();
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

main().catch((error: unknown) => {
  const message = error instanceof StartupError ? error.message : String((error as Error)?.stack ?? error);
  process.stderr.write(`oyster-serverless cannot start: ${message}\n`);
  process.exit(1);
});
