import { describe, expect, test } from 'vitest';
import type { ServiceResources, ThroughputSide } from '../../../bench/results.js';
import type { SideKey } from '../../../bench/sides.js';
import { evaluateTargets } from '../../../bench/targets.js';

// A service that ended the run idle at rssEndMb, 5 MB above its reading after the warm-up.
const resources = (key: SideKey, rssEndMb: number): ServiceResources => ({
  key,
  label: key,
  rssFreshMb: 70,
  rssAfterWarmupMb: rssEndMb - 5,
  rssAfterLatencyMb: rssEndMb,
  rssEndMb,
  peakRssMb: 95,
  cpuMsPerInvocation: 3,
  idleCpuMsPerS: 0,
});

// One side's load at concurrency 4, its own process using processMs of CPU per invocation.
const loaded = (key: SideKey, processMs: number): ThroughputSide => ({
  key,
  label: key,
  concurrency: 4,
  okPerS: 20,
  ok: 100,
  errors: {},
  p50Ms: 100,
  p99Ms: 200,
  elapsedS: 5,
  cpuMsPerOk: { workerd: 12, process: processMs, upstreams: 0, client: 1, total: 13 + processMs },
});

describe("the bench's targets", () => {
  test("hold the service's own CPU per invocation to the bare driver's: warm at most 1.0 times, cold 1.3", () => {
    const targets = evaluateTargets({
      ratios: [],
      throughput: [loaded('limit', 2), loaded('warm', 2.1), loaded('cold', 2.5)],
      resources: [],
      poolSize: 4,
      serviceSkipped: false,
    });
    const cpu = targets.filter((target) => target.name.includes('CPU'));
    expect(cpu.map((target) => [target.name, target.value, target.pass])).toEqual([
      ['cold service CPU / bare driver CPU per invocation at concurrency 4', 1.25, true],
      ['warm service CPU / bare driver CPU per invocation at concurrency 4', 1.05, false],
    ]);
  });

  test("hold this build's services to the memory targets, and not the build before's", () => {
    const targets = evaluateTargets({
      ratios: [],
      throughput: [],
      resources: [resources('cold', 79), resources('warm-before', 120)],
      poolSize: 4,
      serviceSkipped: false,
    });
    const memory = targets.filter((target) => target.name.includes('RSS'));
    expect(memory.map((target) => [target.name, target.pass])).toEqual([
      ['cold service idle RSS at the end (MB)', true],
      ['cold service RSS growth, after warm-up to end (MB)', true],
    ]);
  });
});
