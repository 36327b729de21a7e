import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import type { FastifyInstance } from 'fastify';
import type { CgroupPool } from '../../src/capacity/cgroupPool.js';
import { type Config, parseConfig } from '../../src/config.js';
import { rawDocumentPath } from '../../src/dev/attestationServer.js';
import type { RunningServer } from '../../src/dev/listen.js';
import { makeTempDir, removeTempDir } from '../../src/dev/tempDir.js';
import type { ServiceError } from '../../src/errors.js';
import { discoverCgroups, readPids } from '../../src/sandbox/cgroups.js';
import { standbyName } from '../../src/sandbox/standbyProtocol.js';
import type { Service } from '../../src/service/service.js';
import { StageTimer } from '../../src/stages.js';
import { openService } from '../../src/startup.js';
import { cgroupRoot, createTestPool, type TestPool, type TestPoolOptions } from './cgroups.js';
import { childPids, commandLine } from './processes.js';
import { type StorageChecks, startUpstreams } from './upstreams.js';

export const examplesDir = path.resolve(import.meta.dirname, '../../examples');
export const fixturesDir = path.resolve(import.meta.dirname, '../fixtures');
/** What wrangler uploaded for the projects under test/fixtures/wrangler/, served by their names. */
export const wranglerFixturesDir = path.join(fixturesDir, 'wrangler');

export interface StackOptions {
  /** Size and limits of the real cgroup pool made for this stack. */
  readonly pool?: TestPoolOptions;
  /** Settings on top of the stack's own (pool prefix, runtime path, dev server URLs). */
  readonly env?: Readonly<Record<string, string>>;
  /** How the storage server checks documents, where not against the development root at any age. */
  readonly storage?: StorageChecks;
}

// What a request left behind; all empty when cleanup worked.
export interface Leftovers {
  readonly files: string[];
  /** Processes in the pool's cgroups other than the standbys waiting in free ones. */
  readonly processesInPool: number[];
  readonly workerdProcesses: number[];
  /** This stack's standby shells that are not waiting in a free cgroup (e.g. never stopped). */
  readonly strayStandbys: number[];
  readonly reservedCgroups: number;
}

// The whole service in-process, with the dev attestation and storage servers on loopback and a
// real cgroup pool of its own.
export interface Stack {
  readonly app: FastifyInstance;
  readonly service: Service;
  readonly config: Config;
  readonly pool: CgroupPool;
  readonly attestation: RunningServer;
  readonly storage: RunningServer;
  /** POSTs a payload to /api/serverless through inject(). */
  invoke(payload: unknown): Promise<{ statusCode: number; headers: Record<string, unknown>; body: Envelope }>;
  leftovers(): Promise<Leftovers>;
  close(): Promise<void>;
}

export interface Envelope {
  readonly status: 'success' | 'error';
  readonly message: string;
  readonly data: unknown;
}

// Starts a stack; close() removes everything it made.
export async function startStack(options: StackOptions = {}): Promise<Stack> {
  const testPool: TestPool = await createTestPool(options.pool);
  const runtimePath = await makeTempDir('oyster-runtime-');
  // The usage ledger of its own, outside the runtime directory whose leftovers the tests count.
  const ledgerDir = await makeTempDir('oyster-ledger-');
  const { attestation, storage } = await startUpstreams(
    [examplesDir, fixturesDir, wranglerFixturesDir],
    {},
    options.storage,
  );
  const config = parseConfig({
    CGROUP_ROOT: cgroupRoot,
    CGROUP_PREFIX: testPool.prefix,
    RUNTIME_PATH: runtimePath,
    ATTESTATION_URL: `${attestation.url}${rawDocumentPath}`,
    STORAGE_URL: `${storage.url}/load`,
    LEDGER_PATH: path.join(ledgerDir, 'usage.sqlite'),
    LOG_LEVEL: 'silent',
    // A spare is a workerd that outlives its request on purpose; the tests of spares turn them on.
    SPARES_MAX: '0',
    ...options.env,
  });
  const opened = await openService(config);
  const { app, service, pool } = opened;
  await app.ready();

  return {
    app,
    service,
    config,
    pool,
    attestation,
    storage,
    invoke: async (payload) => {
      const response = await app.inject({ method: 'POST', url: '/api/serverless', payload: payload as object });
      return { statusCode: response.statusCode, headers: response.headers, body: response.json<Envelope>() };
    },
    leftovers: async () => {
      await service.capacity.settled();
      return leftovers(config, pool, service.capacity.keptDirs);
    },
    close: async () => {
      await app.close();
      await Promise.all([attestation.close(), storage.close()]);
      await testPool.remove();
      opened.close();
      await removeTempDir(runtimePath);
      await removeTempDir(ledgerDir);
    },
  };
}

async function leftovers(config: Config, pool: CgroupPool, keptCodeDirs: readonly string[]): Promise<Leftovers> {
  const cgroups = await discoverCgroups(config.cgroupRoot, pool.version, config.cgroupPrefix);
  // The standbys waiting in free cgroups belong there.
  const standbys = new Set(pool.standbyPids);
  const processesInPool = (await Promise.all(cgroups.map(readPids))).flat().filter((pid) => !standbys.has(pid));
  return {
    // The files of code the cache holds stay until it lets go of the code.
    files: (await readdir(config.runtimePath)).filter(
      (name) => !keptCodeDirs.includes(path.join(config.runtimePath, name)),
    ),
    processesInPool,
    workerdProcesses: await processesMentioning(config.runtimePath),
    strayStandbys: await strayStandbys(config, standbys),
    reservedCgroups: pool.size - pool.free,
  };
}

export const noLeftovers: Leftovers = {
  files: [],
  processesInPool: [],
  workerdProcesses: [],
  strayStandbys: [],
  reservedCgroups: 0,
};

/**
 * Invokes the service directly with a request that was abandoned before it arrived (the client
 * gone, or shutdown giving up on it), as `reason` says; resolves with what the invocation threw.
 */
export function invokeAbandoned(service: Service, codeId: string, reason: ServiceError): Promise<unknown> {
  const abandoned = new AbortController();
  abandoned.abort(reason);
  return service
    .invoke({
      codeId,
      request: { method: 'POST', target: '/', headers: {}, body: Buffer.from('{}') },
      signal: abandoned.signal,
      stages: new StageTimer(),
      log: { error: () => undefined },
    })
    .then(
      () => undefined,
      (error: unknown) => error,
    );
}

// Children of this process that are standby shells for this stack's pool (their command line
// names its cgroups), other than the standbys the pool keeps.
async function strayStandbys(config: Config, waiting: ReadonlySet<number>): Promise<number[]> {
  const stray: number[] = [];
  for (const pid of await childPids(process.pid)) {
    const command = await commandLine(pid);
    if (command.includes(standbyName) && command.includes(config.cgroupPrefix) && !waiting.has(pid)) stray.push(pid);
  }
  return stray;
}

// Pids whose command line names a path, e.g. a workerd serving a config from this stack's runtime dir.
export async function processesMentioning(text: string): Promise<number[]> {
  const pids: number[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const cmdline = await readFile(`/proc/${entry}/cmdline`, 'utf8').catch(() => '');
    if (cmdline.includes(text)) pids.push(Number(entry));
  }
  return pids;
}
