// `npm run bench`: bare workerd, Miniflare and the service (cold and with a warm code cache) side
// by side in one run: latency, throughput, the service's own CPU and memory, and the targets.
import { spawnSync } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { request } from 'undici';
import { parseConfig } from '../src/config.js';
import { projectRoot } from '../src/dev/projectRoot.js';
import { serviceNodeFlags } from '../src/serviceNodeFlags.js';
import { Cleanup } from './cleanup.js';
import { type Driver, startDriver } from './driverProcess.js';
import { type LatencySamples, measureLatency } from './latency.js';
import { busyBackoffMs, type LoadCpu, type LoadResult, runLoad, type SteadyCpu, warmUp } from './load.js';
import { describeMachine } from './machine.js';
import { type MixedCode, mixedCodeIds, writeMixedCode, zipfSequence } from './mixedCode.js';
import { cgroupUnavailableReason, createBenchPool } from './pool.js';
import { readCpuMs } from './procStats.js';
import type {
  BenchResults,
  CpuPerOk,
  PairedRatio,
  ServiceResources,
  SideLatency,
  StageRow,
  ThroughputSide,
} from './results.js';
import {
  measureIdleCpu,
  measureSequentialCpu,
  netCpuMs,
  poolMemory,
  probeCodeCache,
  type ServiceUnderTest,
  startServices,
} from './servicesUnderTest.js';
import { type BenchSettings, readSettings } from './settings.js';
import { cgroupSide, limitSide, miniflareSide, type Side, type SideKey, serviceSide } from './sides.js';
import { median, pairedRatioMedian, pairedRatios, percentile, summarize } from './stats.js';
import { formatResults } from './table.js';
import { evaluateTargets } from './targets.js';
import { startUpstreams, type Upstreams } from './upstreamProcess.js';

const resultsDir = path.join(projectRoot, 'bench-results');
const helloPath = path.join(projectRoot, 'examples', 'hello.js');
// Before an "idle" memory reading, let the service finish what the last request left to do.
const idleSettleMs = 1_000;
const ratioPairs: ReadonlyArray<readonly [SideKey, SideKey]> = [
  ['cold', 'limit'],
  ['warm', 'limit'],
  ['cold', 'miniflare'],
  ['warm', 'miniflare'],
  ['cgroup', 'limit'],
  ['cold', 'cgroup'],
  ['warm', 'cgroup'],
  ['miniflare', 'limit'],
  ['http', 'limit'],
  ['http', 'warm'],
  ['spares', 'limit'],
  ['spares', 'warm'],
  ['mixed-spares', 'mixed-warm'],
  ['cold', 'cold-before'],
  ['warm', 'warm-before'],
  ['tailed', 'warm'],
];

// Runs every section and returns the results; the caller prints and saves them.
async function runBench(settings: BenchSettings, cleanup: Cleanup): Promise<BenchResults> {
  const started = performance.now();
  const machine = await describeMachine();
  const base = parseConfig({});
  const notes: string[] = [
    'limit: bare workerd spawned directly (no cgroup, no shell wrapper, no files per invocation) from a lean Node process; same binary, config shape and --control-fd readiness as the service',
    'cgroup: the same, but joined to a cgroup of its own (100M, 100% of a core) per invocation by a shell wrapper (in the service a standby shell joins its cgroup once and forks each workerd inside it)',
    `memory: "after warm-up" and "end (idle)" are read after ${settings.idleS} s without requests, long enough for the service's collection after a burst (IDLE_GC_MS, 10 s by default); "after latency" 1 s after the last request`,
    `Miniflare and both bare sides run in Node processes of their own, driven over IPC; the service runs as \`npm start\` runs it, \`node ${serviceNodeFlags.join(' ')} dist/src/main.js\` (LOG_LEVEL info, as deployed) with its own cgroup pool; the dev upstream servers run in another process`,
    'cold: the service with CODE_CACHE_MAX_BYTES=0 (every request downloads its code from the storage server, presenting an attestation document asked for at most once in ATTESTATION_REUSE_MS); warm: the cache on, after one priming request, SPARES_MAX=0; spares: the cache and spares at their defaults, so that an invocation finds a workerd already listening when the one before it has left one',
    `latency: each invocation starts after ${settings.gapMs} ms idle, as in a lightly loaded service; back to back, kernel state (the RCU grace period a cgroup join waits for) stays warm and hides a cost sparse traffic pays`,
    `throughput: Miniflare is not loaded; a "503 Server busy" is retried after ${busyBackoffMs} ms`,
    `warm-up: before anything is measured, every side but Miniflare runs ${settings.warmupInvocations} invocations at concurrency ${settings.poolSize} (BENCH_WARMUP_LOAD), so that each process is measured as it runs once V8 has optimised its JavaScript`,
  ];

  const driverOptions = {
    workerdPath: base.workerdPath,
    compatibilityDate: base.compatibilityDate,
    compatibilityFlags: base.compatibilityFlags,
    codePath: helloPath,
    cleanup,
  };
  const drivers: Driver[] = [];
  const bare = await startDriver({ kind: 'bare', ...driverOptions });
  const miniflare = await startDriver({ kind: 'miniflare', ...driverOptions });
  drivers.push(bare, miniflare);
  const sides: Side[] = [limitSide(bare)];

  const serviceSkipped = await cgroupUnavailableReason();
  let services: ServiceUnderTest[] = [];
  let mixed: MixedCode | undefined;
  let upstreams: Upstreams | undefined;
  if (serviceSkipped) {
    console.error(`bench: skipping every side that needs cgroups: ${serviceSkipped}`);
    sides.push(miniflareSide(miniflare));
  } else {
    // One cgroup per concurrent invocation, up to the highest concurrency of the throughput section.
    const pool = await createBenchPool(settings.poolSize * 2, cleanup);
    const inCgroup = await startDriver({ kind: 'bare-cgroup', ...driverOptions, cgroups: pool.procsFiles });
    drivers.push(inCgroup);
    sides.push(cgroupSide(inCgroup), miniflareSide(miniflare));
    mixed = await writeMixedCode(helloPath, cleanup);
    upstreams = await startUpstreams(cleanup, [mixed.dir]);
    services = await startServices(settings, upstreams, cleanup);
    sides.push(...services.map((service) => service.side));
    notes.push(await probeCodeCache(services, upstreams));
  }

  /** Warm-up: every side that is loaded later runs a burst first, so that V8 has optimised its code. */
  const steady = await warmUp(
    sides.filter((side) => side.key !== 'miniflare'),
    {
      concurrency: settings.poolSize,
      invocations: settings.warmupInvocations,
      onSide: (side) => progress(`warm-up: ${settings.warmupInvocations} invocations of ${side.label}`),
    },
  );

  if (steady.length > 0) notes.push(steadyNote(steady, settings.poolSize));

  /** Latency. */
  progress('latency: warm-up');
  const latencySamples = await measureLatency(sides, {
    rounds: settings.samples,
    warmupRounds: settings.warmupRounds,
    gapMs: settings.gapMs,
    afterWarmup: async () => {
      await sleep(settings.idleS * 1000);
      for (const service of services) service.rssAfterWarmupMb = (await service.side.service.memory()).rssMb;
      for (const side of sides) side.stages.clear();
    },
    onRound: (round) => progress(`latency: round ${round}/${settings.samples}`),
  });
  const stages = sides.flatMap(stageRows);

  /** Mixed code: sequential invocations of many code_ids in a Zipf order, with spares and without. */
  const mixedSamples = mixed
    ? await measureMixedCode(settings, services, mixed, notes)
    : new Map<SideKey, LatencySamples>();
  const allSamples = new Map([...latencySamples, ...mixedSamples]);
  await sleep(idleSettleMs);
  for (const service of services) service.rssAfterLatencyMb = (await service.side.service.memory()).rssMb;

  /** The services' own CPU: idle, then per sequential invocation. */
  progress('service CPU');
  // Past IDLE_GC_MS since each one's last request, so that no service's collection after the burst
  // falls in the idle window: it would count as background, and be taken from its load's CPU.
  await sleep(settings.idleS * 1000);
  await measureIdleCpu(services);
  for (const service of services) service.cpuMsPerInvocation = await measureSequentialCpu(service);
  const latency: SideLatency[] = [...sides, ...mixedSides(services)].map((side) => {
    const samples = allSamples.get(side.key)!;
    return {
      key: side.key,
      label: side.label,
      summary: summarize(samples.samplesMs),
      failures: samples.failures,
      errors: samples.errors,
      samplesMs: samples.samplesMs.map((value) => value ?? null),
    };
  });
  const ratios = pairRatios(allSamples);
  notes.push(
    `the bare driver process spawning workerd had ${(await bare.rssMb()).toFixed(0)} MB RSS after the latency section (fork() cost grows with the parent's RSS)`,
  );

  // Throughput.
  const loaded = sides.filter((side) => side.key !== 'miniflare');
  const withSpares = services.find((service) => service.side.key === 'spares')?.side.service;
  const throughput: ThroughputSide[] = [];
  for (const concurrency of [settings.poolSize, settings.poolSize * 2]) {
    const sparesBefore = withSpares && (await spareActivity(withSpares.url));
    for (const side of loaded) side.stages.clear();
    const results = await runLoad(loaded, {
      concurrency,
      durationS: settings.durationS,
      sliceS: settings.sliceS,
      onSlice: (done, total) => progress(`throughput at concurrency ${concurrency}: slice ${done}/${total}`),
      ...(upstreams ? { upstreamsCpuMs: () => readCpuMs(upstreams.pid) } : {}),
    });
    if (withSpares && sparesBefore) {
      const after = await spareActivity(withSpares.url);
      const ok = results.get('spares')?.ok ?? 0;
      notes.push(
        `spares at concurrency ${concurrency}: ${after.ready - sparesBefore.ready} spares listened, ${after.hits - sparesBefore.hits} of ${ok} invocations took one, ${after.killed - sparesBefore.killed} were killed unused`,
      );
    }
    notes.push(...admissionNotes(loaded, results, concurrency));
    for (const side of loaded) {
      const result = results.get(side.key)!;
      throughput.push({
        key: side.key,
        label: side.label,
        concurrency,
        okPerS: result.ok / (result.elapsedMs / 1000),
        ok: result.ok,
        errors: result.errors,
        p50Ms: percentile(result.latenciesMs, 50),
        p99Ms: percentile(result.latenciesMs, 99),
        elapsedS: result.elapsedMs / 1000,
        ...(result.cpu && side.service
          ? { serviceCpuMsPerOk: netCpuMs(result.cpu.process, result.elapsedMs, side, services) / result.ok }
          : {}),
        ...(result.cpu ? { cpuMsPerOk: perOk(result.cpu, result.ok) } : {}),
      });
    }
  }

  if (settings.baseline) notes.push(...againstBaseline(settings.baseline, throughput));

  // Memory at the end, idle.
  await sleep(settings.idleS * 1000);
  // By now the tail has had every invocation's event.
  notes.push(...(await tailNotes(services, throughput)));
  const resources: ServiceResources[] = [];
  for (const service of services) {
    const held = await poolMemory(service);
    notes.push(
      `${service.side.key}: at the end, idle, its pool held ${held.processes} processes (standby shells and spares) with ${held.rssMb.toFixed(1)} MB RSS together`,
    );
    const memory = await service.side.service.memory();
    resources.push({
      key: service.side.key,
      label: service.side.label,
      rssFreshMb: service.rssFreshMb,
      rssAfterWarmupMb: service.rssAfterWarmupMb,
      rssAfterLatencyMb: service.rssAfterLatencyMb,
      rssEndMb: memory.rssMb,
      peakRssMb: memory.peakRssMb,
      cpuMsPerInvocation: service.cpuMsPerInvocation,
      idleCpuMsPerS: service.idleCpuMsPerS,
    });
  }
  for (const service of services) {
    await service.side.close();
    await service.side.service.stop();
  }
  await Promise.all(drivers.map((driver) => driver.stop()));

  const targets = evaluateTargets({
    ratios,
    throughput,
    resources,
    poolSize: settings.poolSize,
    serviceSkipped: serviceSkipped !== undefined,
  });
  return {
    machine,
    settings,
    command: commandLine(),
    notes,
    ...(serviceSkipped ? { serviceSkipped } : {}),
    latency,
    ratios,
    throughput,
    resources,
    stages,
    targets,
    durationS: (performance.now() - started) / 1000,
  };
}

// The build compared with this one, and at each concurrency this build's throughput and its
// service's own CPU per invocation as shares of the build before's.
function againstBaseline(root: string, throughput: readonly ThroughputSide[]): string[] {
  const commit = spawnSync('git', ['-C', root, 'log', '-1', '--format=%h %s'], { encoding: 'utf8' }).stdout.trim();
  const lines = [`build before: ${root}${commit ? ` (${commit})` : ''}, run with this build's Node flags`];
  for (const concurrency of new Set(throughput.map((row) => row.concurrency))) {
    const at = (key: SideKey) => throughput.find((row) => row.key === key && row.concurrency === concurrency);
    const shares = (['cold', 'warm'] as const).map((key) => {
      const now = at(key);
      const before = at(`${key}-before`);
      const ok = (now?.okPerS ?? Number.NaN) / (before?.okPerS ?? Number.NaN);
      const cpu = (now?.serviceCpuMsPerOk ?? Number.NaN) / (before?.serviceCpuMsPerOk ?? Number.NaN);
      return `${key} throughput ${ok.toFixed(3)}, service CPU per invocation ${cpu.toFixed(3)}`;
    });
    lines.push(`this build / build before at concurrency ${concurrency}: ${shares.join('; ')}`);
  }
  return lines;
}

// Each side's own CPU per invocation under steady load, and the services' as shares of the bare driver's.
function steadyNote(steady: readonly SteadyCpu[], concurrency: number): string {
  const driver = steady.find((side) => side.key === 'limit')?.processMsPerInvocation;
  const figures = steady.map(({ key, processMsPerInvocation: ms }) => {
    const share = driver === undefined || key === 'limit' ? '' : ` (${(ms / driver).toFixed(2)} of the driver's)`;
    return `${key} ${ms.toFixed(2)}${share}`;
  });
  const timed = steady[0]?.invocations ?? 0;
  return `steady load: each side alone at concurrency ${concurrency}, over the last ${timed} invocations of its warm-up, its own process's gross CPU per invocation (ms): ${figures.join(', ')}`;
}

// A side's CPU by process, per successful invocation.
function perOk(cpu: LoadCpu, ok: number): CpuPerOk {
  const workerd = cpu.workerd === undefined ? undefined : cpu.workerd / ok;
  const known = (cpu.process + cpu.upstreams + cpu.client) / ok;
  return {
    workerd,
    process: cpu.process / ok,
    upstreams: cpu.upstreams / ok,
    client: cpu.client / ok,
    total: workerd === undefined ? undefined : workerd + known,
  };
}

// The labels of the mixed section's sides, for the latency table.
function mixedSides(services: readonly ServiceUnderTest[]): Array<Pick<Side, 'key' | 'label'>> {
  if (services.length === 0) return [];
  return [
    { key: 'mixed-spares', label: `mixed code (${mixedCodeIds} code_ids), spares` },
    { key: 'mixed-warm', label: `mixed code (${mixedCodeIds} code_ids), no spares` },
  ];
}

// Runs the mixed section against the services with and without spares, both taking the same
// code_ids in the same order; notes the share of invocations that found a spare.
async function measureMixedCode(
  settings: BenchSettings,
  services: readonly ServiceUnderTest[],
  mixed: MixedCode,
  notes: string[],
): Promise<Map<SideKey, LatencySamples>> {
  const order = zipfSequence(mixed.codeIds, settings.warmupRounds + settings.samples);
  const service = (key: SideKey) => services.find((candidate) => candidate.side.key === key)!.side.service;
  const side = (key: 'mixed-spares' | 'mixed-warm', of: SideKey) => {
    let next = 0;
    const label = mixedSides(services).find((candidate) => candidate.key === key)!.label;
    return serviceSide(key, label, service(of), 'json', () => order[next++ % order.length]!);
  };
  const sides = [side('mixed-spares', 'spares'), side('mixed-warm', 'warm')];
  const hits = async () => metricOf(service('spares').url, 'oyster_spare_hits_total');
  let hitsBefore = 0;
  try {
    const samples = await measureLatency(sides, {
      rounds: settings.samples,
      warmupRounds: settings.warmupRounds,
      gapMs: settings.gapMs,
      afterWarmup: async () => {
        hitsBefore = await hits();
      },
      onRound: (round) => progress(`mixed code: round ${round}/${settings.samples}`),
    });
    const hitRate = ((await hits()) - hitsBefore) / settings.samples;
    notes.push(
      `mixed code: ${settings.samples} invocations over ${mixedCodeIds} code_ids (Zipf, s = 1), ${(hitRate * 100).toFixed(0)} % of them found a spare`,
    );
    return samples;
  } finally {
    await Promise.all(sides.map((mixedSide) => mixedSide.close()));
  }
}

// What the live tail cost the warm service it was open on, and whether it got every invocation.
async function tailNotes(
  services: readonly ServiceUnderTest[],
  throughput: readonly ThroughputSide[],
): Promise<string[]> {
  const tailed = services.find((service) => service.tail);
  if (!tailed?.tail) return [];
  const answered = await metricOf(tailed.side.service.url, 'oyster_requests_total');
  const { invocations, lost } = tailed.tail.counts();
  const notes = [
    `tailed: its tail read ${invocations} invocation events and was told of ${lost} lost, for ${answered} answers`,
  ];
  for (const side of throughput.filter((entry) => entry.key === 'tailed')) {
    const warm = throughput.find((entry) => entry.key === 'warm' && entry.concurrency === side.concurrency);
    if (!warm) continue;
    const share = (side.okPerS / warm.okPerS).toFixed(3);
    const cpu = (side.serviceCpuMsPerOk ?? Number.NaN).toFixed(2);
    const warmCpu = (warm.serviceCpuMsPerOk ?? Number.NaN).toFixed(2);
    notes.push(
      `tailed at concurrency ${side.concurrency}: throughput ${share} of warm's, service CPU ${cpu} ms per invocation (warm ${warmCpu})`,
    );
  }
  return notes;
}

// A counter of a service's /metrics, its labelled series added up.
async function metricOf(url: string, name: string): Promise<number> {
  const response = await request(`${url}/metrics`);
  const text = await response.body.text();
  let total = 0;
  for (const match of text.matchAll(new RegExp(`^${name}(?:\\{[^}]*\\})? (\\d+)$`, 'gm'))) total += Number(match[1]);
  return total;
}

// What the service with spares did with them over the throughput section: how many started and
// listened, how many invocations took one, how many were killed unused.
async function spareActivity(url: string): Promise<{ ready: number; hits: number; killed: number }> {
  const [ready, hits, killed] = await Promise.all(
    ['oyster_spares_ready_total', 'oyster_spare_hits_total', 'oyster_spares_killed_total'].map((name) =>
      metricOf(url, name),
    ),
  );
  return { ready: ready!, hits: hits!, killed: killed! };
}

// The per-round ratio medians of every pair whose two sides were measured.
function pairRatios(
  samples: ReadonlyMap<SideKey, { readonly samplesMs: ReadonlyArray<number | undefined> }>,
): PairedRatio[] {
  const p50 = (values: ReadonlyArray<number | undefined>) =>
    median(values.filter((value): value is number => value !== undefined));
  return ratioPairs
    .filter(([a, b]) => samples.has(a) && samples.has(b))
    .map(([numerator, denominator]) => {
      const a = samples.get(numerator)!.samplesMs;
      const b = samples.get(denominator)!.samplesMs;
      return {
        numerator,
        denominator,
        medianOfPairs: pairedRatioMedian(a, b),
        ratioOfP50s: p50(a) / p50(b),
        pairs: pairedRatios(a, b).length,
      };
    });
}

// A side's stage durations over the latency section, where it reports them.
function stageRows(side: Side): StageRow[] {
  return [...side.stages].map(([name, values]) => {
    const summary = summarize(values);
    return { side: side.key, name, p50Ms: summary.p50, meanMs: summary.mean, p99Ms: summary.p99 };
  });
}

// The command as typed, with the BENCH_* settings that changed it.
function commandLine(): string {
  const overrides = Object.entries(process.env)
    .filter(([name, value]) => name.startsWith('BENCH_') && value)
    .map(([name, value]) => `${name}=${value}`);
  return [...overrides, 'npm run bench'].join(' ');
}

function progress(message: string): void {
  if (process.stderr.isTTY) process.stderr.write(`\r\x1b[K${message}`);
}

async function main(): Promise<void> {
  const settings = readSettings(process.env);
  const cleanup = new Cleanup();
  cleanup.exitOnSignals();
  try {
    const results = await runBench(settings, cleanup);
    if (process.stderr.isTTY) process.stderr.write('\r\x1b[K');
    console.log(formatResults(results));
    await mkdir(resultsDir, { recursive: true });
    const file = path.join(resultsDir, `${results.machine.date.replace(/[:.]/g, '-')}.json`);
    await writeFile(file, `${JSON.stringify(results, null, 2)}\n`);
    console.log(`results written to ${path.relative(process.cwd(), file)}`);
  } finally {
    await cleanup.runAll();
  }
}

main().catch((error: unknown) => {
  console.error(`\nbench failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`);
  process.exit(1);
});

/**
 * How the warm service with its admission queue and the one without it took a load: how many
 * invocations waited for a cgroup and how long (the queue stage of their Server-Timing), and how
 * many were answered 503.
 */
function admissionNotes(sides: readonly Side[], results: Map<SideKey, LoadResult>, concurrency: number): string[] {
  return sides.flatMap((side) => {
    if (side.key !== 'warm' && side.key !== 'no-queue') return [];
    const result = results.get(side.key)!;
    const waits = side.stages.get('queue') ?? [];
    const waited =
      waits.length === 0
        ? 'none waited for a cgroup'
        : `${waits.length} waited for a cgroup (queue p50 ${percentile(waits, 50).toFixed(1)} ms, p99 ${percentile(waits, 99).toFixed(1)} ms)`;
    const busy = result.errors['HTTP 503'] ?? 0;
    return [
      `admission at concurrency ${concurrency}, ${side.label}: ${result.ok} ok, ${waited}, ${busy} answered 503 (each retried after ${busyBackoffMs} ms)`,
    ];
  });
}
