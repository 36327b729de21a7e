import { describe, expect, test } from 'vitest';
import type { ServiceResources } from '../../../bench/results.js';
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

describe("the bench's targets", () => {
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
