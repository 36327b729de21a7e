// The targets the service is held to on this machine, and whether a run meets them.
import type { PairedRatio, ServiceResources, Target, ThroughputSide } from './results.js';
import { isBuildBefore, type SideKey } from './sides.js';

// Cold service p50 over bare workerd p50 (median of per-round ratios).
const maxColdOverLimit = 1.15;
// Same with the code cache warm.
const maxWarmOverLimit = 1.05;
// Service p50 over Miniflare p50.
const maxServiceOverMiniflare = 0.5;
// Service throughput at concurrency = pool size, as a share of bare workerd's at that concurrency.
const minColdThroughputShare = 0.85;
const minWarmThroughputShare = 0.95;
// The service process's own CPU per invocation under load at concurrency = pool size, over that
// of the lean driver that spawns bare workerd: what one process can orchestrate.
const maxColdCpuOverDriver = 1.3;
const maxWarmCpuOverDriver = 1.0;
// A warm invocation that finds a spare, p50 over bare workerd's p50 (a whole start).
const maxSparesOverLimit = 0.2;
// Throughput with spares on, as a share of the same service with them off, at each concurrency.
const minSparesThroughputShare = 0.95;
// Mixed code (more code_ids than cgroups): p50 with spares over p50 without.
const maxMixedSparesOverNone = 1.05;
// Idle RSS of the service process.
const maxIdleRssMb = 80;
// "No growth": idle RSS at the end may exceed idle RSS after warm-up by at most this much (V8's
// heap settles at a slightly larger size after bursts without that being a leak).
const maxRssGrowthMb = 10;

export interface TargetInputs {
  readonly ratios: readonly PairedRatio[];
  readonly throughput: readonly ThroughputSide[];
  readonly resources: readonly ServiceResources[];
  readonly poolSize: number;
  readonly serviceSkipped: boolean;
}

/** Evaluates every target; a target whose sides were not measured has pass undefined. */
export function evaluateTargets(inputs: TargetInputs): Target[] {
  const pair = (numerator: SideKey, denominator: SideKey) =>
    inputs.ratios.find((r) => r.numerator === numerator && r.denominator === denominator);
  const ratio = (numerator: SideKey, denominator: SideKey) => pair(numerator, denominator)?.medianOfPairs ?? Number.NaN;
  const loaded = (key: SideKey, concurrency = inputs.poolSize) =>
    inputs.throughput.find((t) => t.key === key && t.concurrency === concurrency);
  const okPerS = (key: SideKey, concurrency = inputs.poolSize) => loaded(key, concurrency)?.okPerS ?? Number.NaN;
  const cpuOverDriver = (key: SideKey) =>
    (loaded(key)?.cpuMsPerOk?.process ?? Number.NaN) / (loaded('limit')?.cpuMsPerOk?.process ?? Number.NaN);
  const targets: Target[] = [
    atMost('cold p50 / bare workerd p50 (median of pairs)', ratio('cold', 'limit'), maxColdOverLimit),
    atMost('warm p50 / bare workerd p50 (median of pairs)', ratio('warm', 'limit'), maxWarmOverLimit),
    atMost('cold p50 / Miniflare p50 (median of pairs)', ratio('cold', 'miniflare'), maxServiceOverMiniflare),
    atMost('warm p50 / Miniflare p50 (median of pairs)', ratio('warm', 'miniflare'), maxServiceOverMiniflare),
    atLeast(
      `cold throughput / bare workerd at concurrency ${inputs.poolSize}`,
      okPerS('cold') / okPerS('limit'),
      minColdThroughputShare,
    ),
    atLeast(
      `warm throughput / bare workerd at concurrency ${inputs.poolSize}`,
      okPerS('warm') / okPerS('limit'),
      minWarmThroughputShare,
    ),
    atMost(
      `cold service CPU / bare driver CPU per invocation at concurrency ${inputs.poolSize}`,
      cpuOverDriver('cold'),
      maxColdCpuOverDriver,
    ),
    atMost(
      `warm service CPU / bare driver CPU per invocation at concurrency ${inputs.poolSize}`,
      cpuOverDriver('warm'),
      maxWarmCpuOverDriver,
    ),
    atMost('warm with spares p50 / bare workerd p50 (median of pairs)', ratio('spares', 'limit'), maxSparesOverLimit),
    atMost(
      'mixed code p50, spares / no spares (ratio of the p50s)',
      pair('mixed-spares', 'mixed-warm')?.ratioOfP50s ?? Number.NaN,
      maxMixedSparesOverNone,
    ),
    ...[inputs.poolSize, inputs.poolSize * 2].map((concurrency) =>
      atLeast(
        `spares throughput / no spares at concurrency ${concurrency}`,
        okPerS('spares', concurrency) / okPerS('warm', concurrency),
        minSparesThroughputShare,
      ),
    ),
  ];
  for (const resources of inputs.resources.filter((service) => !isBuildBefore(service.key))) {
    targets.push(atMost(`${resources.key} service idle RSS at the end (MB)`, resources.rssEndMb, maxIdleRssMb));
    targets.push(
      atMost(
        `${resources.key} service RSS growth, after warm-up to end (MB)`,
        resources.rssEndMb - resources.rssAfterWarmupMb,
        maxRssGrowthMb,
      ),
    );
  }
  if (inputs.serviceSkipped)
    return targets.map((target) => ({ ...target, pass: undefined, note: 'service not measured' }));
  return targets;
}

function atMost(name: string, value: number, limit: number): Target {
  return { name, value, limit, comparison: '<=', pass: Number.isFinite(value) ? value <= limit : undefined };
}

function atLeast(name: string, value: number, limit: number): Target {
  return { name, value, limit, comparison: '>=', pass: Number.isFinite(value) ? value >= limit : undefined };
}
