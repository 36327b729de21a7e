import { performance } from 'node:perf_hooks';
import { Agent, request } from 'undici';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import type { RunningServer } from '../../src/dev/listen.js';
import { makeTempDir, removeTempDir } from '../../src/dev/tempDir.js';
import { cgroupsOrSkip, createTestPool, type TestPool } from '../helpers/cgroups.js';
import { serviceEnv, startService } from '../helpers/service.js';
import { examplesDir, fixturesDir } from '../helpers/stack.js';
import { startUpstreams } from '../helpers/upstreams.js';

const cgroups = await cgroupsOrSkip();
const poolSize = 2;
// The service's default: the p99 of a loop at twice the pool's concurrency stays within it.
const waitLimitMs = 1000;

interface Outcome {
  readonly status: number;
  readonly ms: number;
  readonly queueMs: number | undefined;
}

function percentile(sorted: readonly number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

// A service of its own on a pool of its own, with the given settings.
async function startOwnService(upstreams: { attestation: RunningServer; storage: RunningServer }, env = {}) {
  const pool = await createTestPool({ count: poolSize });
  const runtimePath = await makeTempDir('oyster-runtime-');
  const service = await startService({ ...serviceEnv({ pool, runtimePath, ...upstreams }), LOG_LEVEL: 'warn', ...env });
  const agent = new Agent({ connections: 64 });
  const invoke = async (payload: object): Promise<Outcome> => {
    const started = performance.now();
    const response = await request(`${service.url}/api/serverless`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(payload),
      dispatcher: agent,
    });
    await response.body.dump();
    const queue = /\bqueue;dur=([\d.]+)/.exec(String(response.headers['server-timing']));
    return {
      status: response.statusCode,
      ms: performance.now() - started,
      queueMs: queue ? Number(queue[1]) : undefined,
    };
  };
  const close = async () => {
    service.child.kill('SIGTERM');
    await service.exited;
    await agent.close();
    await pool.remove();
    await removeTempDir(runtimePath);
  };
  return { service, pool: pool as TestPool, invoke, close };
}

// `clients` clients, each sending its next request as soon as the last is answered, for durationMs.
async function closedLoop(invoke: () => Promise<Outcome>, clients: number, durationMs: number): Promise<Outcome[]> {
  const outcomes: Outcome[] = [];
  const end = performance.now() + durationMs;
  const client = async () => {
    while (performance.now() < end) outcomes.push(await invoke());
  };
  await Promise.all(Array.from({ length: clients }, client));
  return outcomes;
}

const count = (outcomes: readonly Outcome[], status: number) => outcomes.filter((o) => o.status === status).length;

describe.runIf(cgroups)(`admission on a pool of ${poolSize}`, () => {
  let upstreams: { attestation: RunningServer; storage: RunningServer };
  beforeAll(async () => {
    upstreams = await startUpstreams([examplesDir, fixturesDir]);
  });
  afterAll(async () => {
    await Promise.all([upstreams?.attestation.close(), upstreams?.storage.close()]);
  });

  test(`a closed loop at twice the pool's concurrency for 10 s gets no 503, with a p99 within ${waitLimitMs} ms`, async () => {
    const own = await startOwnService(upstreams);
    try {
      const outcomes = await closedLoop(() => own.invoke({ code_id: 'hello' }), 2 * poolSize, 10_000);
      const latencies = outcomes.map((outcome) => outcome.ms).sort((a, b) => a - b);
      console.log(
        `admission: ${outcomes.length} requests, p50 ${percentile(latencies, 50).toFixed(1)} ms, p99 ${percentile(latencies, 99).toFixed(1)} ms`,
      );
      expect(count(outcomes, 200)).toBe(outcomes.length);
      expect(percentile(latencies, 99)).toBeLessThan(waitLimitMs);
      // They did wait: the loop asks for more cgroups than the pool has.
      expect(outcomes.filter((outcome) => (outcome.queueMs ?? 0) > 1).length).toBeGreaterThan(outcomes.length / 4);
    } finally {
      await own.close();
    }
  });

  test('the same loop with no queue (ADMISSION_QUEUE_MAX=0) is refused most of the time', async () => {
    const own = await startOwnService(upstreams, { ADMISSION_QUEUE_MAX: '0' });
    try {
      const outcomes = await closedLoop(() => own.invoke({ code_id: 'hello' }), 2 * poolSize, 3_000);
      expect(count(outcomes, 200) + count(outcomes, 503)).toBe(outcomes.length);
      expect(count(outcomes, 503)).toBeGreaterThan(0);
    } finally {
      await own.close();
    }
  });

  test('a burst larger than pool and queue: what neither holds is answered 503 at once, the rest 200', async () => {
    const queueMax = 2;
    const own = await startOwnService(upstreams, { ADMISSION_QUEUE_MAX: String(queueMax) });
    try {
      const burst = 8;
      const slow = { code_id: 'slow', input: { ms: 600 } };
      const outcomes = await Promise.all(Array.from({ length: burst }, () => own.invoke(slow)));
      const refused = outcomes.filter((outcome) => outcome.status === 503);
      expect(refused).toHaveLength(burst - poolSize - queueMax);
      for (const outcome of refused) expect(outcome.ms).toBeLessThan(300);
      expect(count(outcomes, 200)).toBe(poolSize + queueMax);
    } finally {
      await own.close();
    }
  });
});
