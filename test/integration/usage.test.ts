import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { cgroupsOrSkip } from '../helpers/cgroups.js';
import { headerFields } from '../helpers/http.js';
import { type Stack, startStack } from '../helpers/stack.js';

const cgroups = await cgroupsOrSkip();

const mib = 1024 * 1024;
// About a third of a second of arithmetic on this machine.
const loops = 60_000_000;
const heldMb = 40;

async function invoke(stack: Stack, codeId: string, input: object) {
  const response = await stack.app.inject({
    method: 'POST',
    url: '/api/serverless',
    payload: { code_id: codeId, input },
  });
  return {
    statusCode: response.statusCode,
    usage: headerFields(response.headers['x-oyster-usage'], '='),
    stages: headerFields(String(response.headers['server-timing'] ?? '').replaceAll(';dur', ''), '='),
  };
}

// What each invocation used, as the kernel counts it, in the answer's X-Oyster-Usage header.
describe.runIf(cgroups)('usage of an invocation', () => {
  let stack: Stack;
  beforeAll(async () => {
    stack = await startStack({ pool: { count: 2, memory: '128M' } });
  });
  afterAll(() => stack?.close());

  test("CPU time: the function's work, within what its start and execution took", async () => {
    const idle = await invoke(stack, 'burn', { loops: 0 });
    const busy = await invoke(stack, 'burn', { loops });
    expect([idle.statusCode, busy.statusCode]).toEqual([200, 200]);
    const { start = 0, execution = 0 } = busy.stages;
    // The loop runs on one thread the whole of its execution; V8's own threads add a little.
    expect(execution).toBeGreaterThan(150);
    expect(busy.usage['cpu-ms']).toBeGreaterThan(0.8 * execution);
    expect(busy.usage['cpu-ms']).toBeLessThan(1.2 * (start + execution) + 20);
    expect(busy.usage['cpu-ms']! - idle.usage['cpu-ms']!).toBeGreaterThan(0.8 * execution - idle.usage['cpu-ms']!);
    // An idle function's CPU is its start: some milliseconds.
    expect(idle.usage['cpu-ms']).toBeGreaterThan(1);
    expect(idle.usage['cpu-ms']).toBeLessThan(200);
  });

  test('peak memory: what the function holds comes on top of an idle workerd, within 8 MiB', async () => {
    const idle = await invoke(stack, 'hold-memory', { mb: 0 });
    const holding = await invoke(stack, 'hold-memory', { mb: heldMb });
    expect([idle.statusCode, holding.statusCode]).toEqual([200, 200]);
    const grown = (holding.usage['peak-memory']! - idle.usage['peak-memory']!) / mib;
    expect(grown).toBeGreaterThan(heldMb - 8);
    expect(grown).toBeLessThan(heldMb + 8);
    expect(idle.usage['peak-memory']! / mib).toBeGreaterThan(10);
  });

  test('wall time and the bytes the function received and gave', async () => {
    const { usage, stages } = await invoke(stack, 'echo', { text: 'héllo' });
    const sent = Buffer.byteLength(JSON.stringify({ text: 'héllo' }));
    expect(usage['bytes-in']).toBe(sent);
    expect(usage['bytes-out']).toBe(sent);
    expect(usage['wall-ms']).toBeGreaterThanOrEqual(stages.start! + stages.execution!);
  });

  test('a failed invocation carries its usage too, and /metrics counts it by outcome', async () => {
    const timedOut = await stack.app.inject({
      method: 'POST',
      url: '/api/serverless',
      payload: { code_id: 'throw' },
    });
    expect(timedOut.statusCode).toBe(500);
    expect(headerFields(timedOut.headers['x-oyster-usage'], '=')['cpu-ms']).toBeGreaterThan(0);
    const metrics = await (await stack.app.inject({ method: 'GET', url: '/metrics' })).body;
    expect(metrics).toMatch(/^oyster_function_cpu_seconds_count\{outcome="exception"\} [1-9]/m);
    expect(metrics).toMatch(/^oyster_function_peak_memory_bytes_count\{outcome="ok"\} [1-9]/m);
  });

  test('an invocation that never started its function carries none', async () => {
    const missing = await stack.app.inject({ method: 'POST', url: '/api/serverless', payload: { code_id: 'nope' } });
    expect(missing.statusCode).toBe(404);
    expect(missing.headers['x-oyster-usage']).toBeUndefined();
  });
});
