import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { cgroupsOrSkip } from '../helpers/cgroups.js';
import { type Stack, startStack } from '../helpers/stack.js';

const cgroups = await cgroupsOrSkip();

// The value of one sample line of a Prometheus text exposition, or undefined.
function sample(text: string, line: string): number | undefined {
  const found = text.split('\n').find((candidate) => candidate.startsWith(`${line} `));
  return found === undefined ? undefined : Number(found.slice(line.length + 1));
}

describe.runIf(cgroups)('what operators and users can see', () => {
  let stack: Stack;
  beforeAll(async () => {
    stack = await startStack({ pool: { count: 2 }, env: { EXECUTION_TIMEOUT_MS: '1500' } });
  });
  afterAll(() => stack?.close());

  const metrics = async () => (await stack.app.inject({ method: 'GET', url: '/metrics' })).body;

  test('every answer has a Server-Timing header with each stage it went through', async () => {
    const response = await stack.invoke({ code_id: 'hello' });
    const timing = String(response.headers['server-timing']);
    for (const stage of ['admission', 'attestation', 'download', 'files', 'start', 'execution', 'total']) {
      expect(timing).toMatch(new RegExp(`(^|, )${stage};dur=\\d+\\.\\d{2}`));
    }
    // Cleanup happens after the answer, so only the metrics can time it.
    expect(timing).not.toContain('cleanup');
    const invalid = await stack.invoke({});
    expect(String(invalid.headers['server-timing'])).toMatch(/^total;dur=/);
  });

  test('a cached code_id skips attestation and download, and Server-Timing shows it', async () => {
    await stack.invoke({ code_id: 'primes', input: { num: 6 } });
    const again = await stack.invoke({ code_id: 'primes', input: { num: 6 } });
    expect(String(again.headers['server-timing'])).not.toMatch(/attestation|download/);
  });

  test('GET /metrics counts answers by status and code, stage times, the pool and the cache', async () => {
    const before = await metrics();
    const okBefore = sample(before, 'oyster_requests_total{status="200",code="OK",outcome="ok"}') ?? 0;
    const hitsBefore = sample(before, 'oyster_code_cache_hits_total') ?? 0;
    await stack.invoke({ code_id: 'echo', input: {} });
    await stack.invoke({ code_id: 'echo', input: {} });
    await stack.invoke({ code_id: 'no-such-code' });
    await stack.service.capacity.settled();
    const after = await metrics();
    expect(sample(after, 'oyster_requests_total{status="200",code="OK",outcome="ok"}')).toBe(okBefore + 2);
    expect(
      sample(after, 'oyster_requests_total{status="404",code="CODE_NOT_FOUND",outcome="code_unavailable"}'),
    ).toBeGreaterThanOrEqual(1);
    expect(sample(after, 'oyster_code_cache_hits_total')).toBe(hitsBefore + 1);
    expect(sample(after, 'oyster_pool_size')).toBe(2);
    expect(sample(after, 'oyster_pool_free')).toBe(2);
    for (const stage of ['admission', 'attestation', 'download', 'files', 'start', 'execution', 'cleanup']) {
      expect(sample(after, `oyster_stage_duration_seconds_count{stage="${stage}"}`), stage).toBeGreaterThan(0);
    }
    expect(sample(after, 'oyster_process_resident_memory_bytes')).toBeGreaterThan(0);
  });

  test('time-outs and out-of-memory kills are counted, and a time-out shows what the function printed', async () => {
    const before = await metrics();
    const timedOut = await stack.invoke({ code_id: 'log-then-loop' });
    expect(timedOut.statusCode).toBe(408);
    expect(timedOut.body.data).toContain('about to spin forever');
    const oom = await stack.invoke({ code_id: 'oom' });
    expect(oom.statusCode).toBe(500);
    const after = await metrics();
    expect(sample(after, 'oyster_timeouts_total')).toBe((sample(before, 'oyster_timeouts_total') ?? 0) + 1);
    expect(sample(after, 'oyster_out_of_memory_total')).toBe((sample(before, 'oyster_out_of_memory_total') ?? 0) + 1);
  });
});
