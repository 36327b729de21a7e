// The services under test (cold, warm, with spares, on the HTTP route): starting them, and reading their own CPU.
import { readFile } from 'node:fs/promises';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import getPort from 'get-port';
import type { Cleanup } from './cleanup.js';
import { type BenchPool, createBenchPool } from './pool.js';
import { readMemory } from './procStats.js';
import { startServiceProcess } from './serviceProcess.js';
import { type BenchSettings, baselineScript } from './settings.js';
import { benchCodeId, type ServiceSide, type Side, serviceSide } from './sides.js';
import { type BenchTail, openBenchTail } from './tailReader.js';
import type { Upstreams } from './upstreamProcess.js';

// Requests sent to the warm service alone to see whether it still calls the upstream servers.
const cacheProbeRequests = 3;
// Back-to-back invocations per service whose CPU is read as the sequential cost of one; with no
// pause between them the idle background adds little.
const sequentialCpuInvocations = 50;
// How long the services' CPU is read while they are idle, for their background rate (metrics
// collection, timers), which is then not counted as the invocations' own. /proc counts 10 ms ticks.
const idleCpuWindowMs = 5_000;

/** A service process under test and what the bench has read of it so far. */
export interface ServiceUnderTest {
  readonly side: ServiceSide;
  /** The cgroups its workerd run in. */
  readonly pool: BenchPool;
  rssFreshMb: number;
  rssAfterWarmupMb: number;
  rssAfterLatencyMb: number;
  /** CPU it uses per second while idle. */
  idleCpuMsPerS: number;
  cpuMsPerInvocation: number;
  /** The live tail read through the whole bench, on the side that has one. */
  readonly tail?: BenchTail;
}

// One service under test: which settings it runs with, on which route, and which build.
interface ServiceVariant {
  readonly key: ServiceSide['key'] &
    ('cold' | 'warm' | 'spares' | 'http' | 'no-queue' | 'tailed' | 'cold-before' | 'warm-before');
  readonly label: string;
  readonly env: Readonly<Record<string, string>>;
  readonly route: 'json' | 'http';
  readonly script?: string;
}

/**
 * Makes a pool per service (two services sharing one would kill each other's workers) and
 * starts the cold and the warm service, the one with spares, the one called on its HTTP route,
 * the one without an admission queue and the one with a live tail open, each primed with one request.
 */
export async function startServices(
  settings: BenchSettings,
  upstreams: Upstreams,
  cleanup: Cleanup,
): Promise<ServiceUnderTest[]> {
  const cold = { CODE_CACHE_MAX_BYTES: '0' };
  const warm = { SPARES_MAX: '0' };
  const variants: ServiceVariant[] = [
    { key: 'cold', label: 'service, cold (no code cache)', env: cold, route: 'json' },
    { key: 'warm', label: 'service, warm code cache, no spares', env: warm, route: 'json' },
    // As deployed: the code cache and spares at their defaults.
    { key: 'spares', label: 'service, warm, spares', env: {}, route: 'json' },
    // The warm service's invocation through the HTTP route, the function's answer as it is. A process
    // of its own: one that served two sides' slices would be busier, and cheaper per invocation, than the others.
    { key: 'http', label: 'service, warm, HTTP route (/fn/…)', env: warm, route: 'http' },
    // The warm service refusing at once what finds no free cgroup, as before the admission queue.
    {
      key: 'no-queue',
      label: 'service, warm, no admission queue',
      env: { ...warm, ADMISSION_QUEUE_MAX: '0' },
      route: 'json',
    },
    // The warm service with a reader of its live tail open on the bench's code_id the whole time.
    {
      key: 'tailed',
      label: 'service, warm, a live tail open',
      env: { ...warm, ADMIN_PORT: String(await getPort({ host: '127.0.0.1' })) },
      route: 'json',
    },
  ];
  if (settings.baseline) {
    const script = baselineScript(settings.baseline);
    variants.push(
      { key: 'cold-before', label: 'build before, cold', env: cold, route: 'json', script },
      { key: 'warm-before', label: 'build before, warm, no spares', env: warm, route: 'json', script },
    );
  }
  const services: ServiceUnderTest[] = [];
  for (const variant of variants) {
    // Made before the service, so teardown stops the service first and then removes its pool.
    const pool = await createBenchPool(settings.poolSize, cleanup);
    const { key: name, env, script } = variant;
    const running = await startServiceProcess({ name, pool, upstreams, env, cleanup, ...(script ? { script } : {}) });
    const rssFreshMb = (await running.memory()).rssMb;
    const tail = env.ADMIN_PORT
      ? await openBenchTail(`http://127.0.0.1:${env.ADMIN_PORT}`, benchCodeId, cleanup)
      : undefined;
    const client = serviceSide(variant.key, variant.label, running, variant.route);
    const close = cleanup.add(`close the ${variant.key} client`, () => client.close());
    const side: ServiceSide = { ...client, close };
    // The priming request: for the warm side it fills the code cache.
    await side.invoke();
    services.push({
      side,
      pool,
      rssFreshMb,
      rssAfterWarmupMb: Number.NaN,
      rssAfterLatencyMb: Number.NaN,
      idleCpuMsPerS: 0,
      cpuMsPerInvocation: Number.NaN,
      ...(tail && { tail }),
    });
  }
  return services;
}

/**
 * What the processes in a service's pool hold now (its spares' workerd and the standby shells):
 * how many, and their RSS together.
 */
export async function poolMemory(service: ServiceUnderTest): Promise<{ processes: number; rssMb: number }> {
  const pids = new Set<number>();
  for (const files of service.pool.procsFiles) {
    const text = await readFile(files[0]!, 'utf8').catch(() => '');
    for (const line of text.split('\n')) if (line.trim() !== '') pids.add(Number(line));
  }
  let rssMb = 0;
  for (const pid of pids)
    rssMb += await readMemory(pid).then(
      (memory) => memory.rssMb,
      () => 0,
    );
  return { processes: pids.size, rssMb };
}

/** Reads what the idle services spend on their own per second, all in the same window. */
export async function measureIdleCpu(services: ServiceUnderTest[]): Promise<void> {
  const before = await Promise.all(services.map((service) => service.side.service.cpuMs()));
  const started = performance.now();
  await sleep(idleCpuWindowMs);
  const seconds = (performance.now() - started) / 1000;
  const after = await Promise.all(services.map((service) => service.side.service.cpuMs()));
  for (const [i, service] of services.entries()) service.idleCpuMsPerS = (after[i]! - before[i]!) / seconds;
}

/** The CPU one invocation costs the service, from a run of back-to-back invocations, less the idle background. */
export async function measureSequentialCpu(service: ServiceUnderTest): Promise<number> {
  const before = await service.side.service.cpuMs();
  const started = performance.now();
  for (let i = 0; i < sequentialCpuInvocations; i += 1) await service.side.invoke();
  const seconds = (performance.now() - started) / 1000;
  const used = (await service.side.service.cpuMs()) - before;
  return (used - service.idleCpuMsPerS * seconds) / sequentialCpuInvocations;
}

/** CPU a service side used during its load, less its idle background over that time. */
export function netCpuMs(usedMs: number, elapsedMs: number, side: Side, services: readonly ServiceUnderTest[]): number {
  const idle = services.find((service) => service.side.key === side.key)?.idleCpuMsPerS ?? 0;
  return usedMs - (idle * elapsedMs) / 1000;
}

/** Sends a few requests to the warm service alone and says whether they reached the upstream servers. */
export async function probeCodeCache(services: readonly ServiceUnderTest[], upstreams: Upstreams): Promise<string> {
  const warm = services.find((service) => service.side.key === 'warm');
  if (!warm) return 'code cache: not probed';
  const before = await upstreams.counts();
  for (let i = 0; i < cacheProbeRequests; i += 1) await warm.side.invoke();
  const after = await upstreams.counts();
  const storage = after.storage - before.storage;
  const attestation = after.attestation - before.attestation;
  const verdict =
    storage === 0 ? 'the code cache is active' : 'the service has no working code cache: warm behaves like cold';
  return `code cache probe: ${cacheProbeRequests} warm requests made ${attestation} attestation and ${storage} storage calls, so ${verdict}`;
}
