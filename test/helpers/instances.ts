import getPort from 'get-port';
import type { RunningServer } from '../../src/dev/listen.js';
import { makeTempDir, removeTempDir } from '../../src/dev/tempDir.js';
import { createTestPool, type TestPool } from './cgroups.js';
import { invoke } from './http.js';
import { exitedWithin, signal } from './processes.js';
import { type ServiceProcess, serviceEnv, startService } from './service.js';
import { processesMentioning } from './stack.js';

// Longer than the service's default SHUTDOWN_GRACE_MS.
const stopTimeoutMs = 20_000;

// One instance of the service, as a process with its own pool and runtime directory.
export interface Instance {
  readonly pool: TestPool;
  readonly runtimePath: string;
  readonly service: ServiceProcess;
  /** host:port, as nginx names it. */
  readonly address: string;
  /** Where its operator endpoints listen (ADMIN_PORT). */
  readonly adminUrl: string;
}

// Starts the built service with a pool of its own, using the given development servers.
export async function startInstance(
  attestation: RunningServer,
  storage: RunningServer,
  poolSize: number,
): Promise<Instance> {
  const pool = await createTestPool({ count: poolSize });
  const runtimePath = await makeTempDir('oyster-runtime-');
  const adminPort = await getPort({ host: '127.0.0.1' });
  const service = await startService({
    ...serviceEnv({ pool, runtimePath, attestation, storage }),
    ADMIN_PORT: String(adminPort),
    // Behind nginx, as docs/deploying.md has it: a full instance answers 503 at once, which nginx
    // resends to the next one, rather than holding the request while another has room.
    ADMISSION_QUEUE_MAX: '0',
  });
  return { pool, runtimePath, service, address: new URL(service.url).host, adminUrl: `http://127.0.0.1:${adminPort}` };
}

// Stops an instance (SIGTERM, then SIGKILL if it is slow) and removes everything it made.
export async function stopInstance(instance: Instance): Promise<void> {
  if (instance.service.child.exitCode === null && instance.service.child.signalCode === null) {
    instance.service.child.kill('SIGTERM');
    if (!(await exitedWithin(instance.service.exited, stopTimeoutMs))) instance.service.child.kill('SIGKILL');
    await instance.service.exited;
  }
  for (const pid of await processesMentioning(instance.runtimePath)) signal(pid, 'SIGKILL');
  await instance.pool.remove();
  await removeTempDir(instance.runtimePath);
}

// Sends count requests at once and answers how many got each status.
export async function burst(baseUrl: string, count: number, payload: unknown): Promise<Record<number, number>> {
  const answers = await Promise.all(Array.from({ length: count }, () => invoke(baseUrl, payload)));
  const tally: Record<number, number> = {};
  for (const { statusCode } of answers) tally[statusCode] = (tally[statusCode] ?? 0) + 1;
  return tally;
}
