import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import Database from 'better-sqlite3';
import type { FastifyInstance } from 'fastify';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { buildAdminApp } from '../../src/http/adminApp.js';
import { maxTails } from '../../src/tail/tailHub.js';
import { cgroupsOrSkip } from '../helpers/cgroups.js';
import { noLeftovers, type Stack, startStack } from '../helpers/stack.js';
import { type OpenTail, openTail } from '../helpers/tail.js';
import { waitFor } from '../helpers/wait.js';

const cgroups = await cgroupsOrSkip();

// The outcome word of an answer's X-Oyster-Usage header.
const headerOutcome = (headers: Record<string, unknown>) =>
  /(?:^|, )outcome=(\w+)/.exec(String(headers['x-oyster-usage'] ?? ''))?.[1];

describe.runIf(cgroups)('the live tail (GET /admin/tail)', () => {
  let stack: Stack;
  let admin: FastifyInstance;
  let adminUrl: string;
  let ledger: Database.Database;
  const tails: OpenTail[] = [];
  const tail = async (codeId: string) => {
    const opened = await openTail(adminUrl, codeId);
    tails.push(opened);
    return opened;
  };
  // The outcome of the newest ledger row of a code_id.
  const ledgerOutcome = (codeId: string) =>
    (
      ledger.prepare('SELECT outcome FROM invocations WHERE code_id = ? ORDER BY id DESC LIMIT 1').get(codeId) as
        | { outcome: string }
        | undefined
    )?.outcome;

  beforeAll(async () => {
    stack = await startStack({
      pool: { count: 2, memory: '128M' },
      env: { EXECUTION_TIMEOUT_MS: '1500', MAX_RESPONSE_BYTES: '4096' },
    });
    admin = buildAdminApp(stack.service);
    await admin.listen({ port: 0, host: '127.0.0.1' });
    adminUrl = `http://127.0.0.1:${(admin.server.address() as AddressInfo).port}`;
    ledger = new Database(stack.config.ledgerPath!, { readonly: true });
  });
  afterAll(async () => {
    for (const opened of tails) opened.close();
    ledger?.close();
    await admin?.close();
    await stack?.close();
  });

  test.each([
    ['a module worker', 'tail-logs'],
    ['a service worker', 'tail-logs-sw'],
  ])(
    "%s: its console lines, with level and time, within a second, and only on its own code_id's tail",
    async (_, codeId) => {
      const own = await tail(codeId);
      const other = await tail('hello');
      const response = await stack.app.inject({ method: 'GET', url: `/fn/${codeId}/path?secret=1` });
      const answeredMs = performance.now();
      expect(response.body).toBe('logged');
      const event = await own.next((e) => e.type === 'invocation', 1_000);
      expect(event.atMs - answeredMs).toBeLessThan(1_000);
      expect(event.data).toMatchObject({
        code_id: codeId,
        route: 'fn',
        method: 'GET',
        path: '/path',
        outcome: 'ok',
        status: 200,
      });
      expect(event.data.headers).toBeUndefined();
      const logs = event.data.logs as Array<{ level: string; at_ms: number; message: unknown }>;
      expect(logs.map(({ level, message }) => [level, message])).toEqual([
        ['log', ['hello', { n: 1 }]],
        ['warn', ['careful']],
        ['error', ['bad']],
      ]);
      for (const log of logs) expect(Math.abs(log.at_ms - Date.now())).toBeLessThan(10_000);
      expect(event.data.cpu_ms).toBeGreaterThan(0);
      expect(event.data.wall_ms).toBeGreaterThan(0);
      expect(other.events).toEqual([]);
      expect(await stack.leftovers()).toEqual(noLeftovers);
    },
  );

  test("an uncaught exception: the event has the function's exception and stack, and the answer begins with them", async () => {
    const own = await tail('tail-logs');
    const response = await stack.app.inject({ method: 'GET', url: '/fn/tail-logs/?throw' });
    expect(response.statusCode).toBe(500);
    expect(String(response.json().data)).toMatch(
      /^Uncaught TypeError: thrown on purpose\n\s+at Object\.fetch \(main\.js:9:/,
    );
    const event = await own.next((e) => e.type === 'invocation' && e.data.outcome === 'exception');
    expect(event.data.exceptions).toEqual([
      expect.objectContaining({
        name: 'TypeError',
        message: 'thrown on purpose',
        stack: expect.stringMatching(/main\.js:9:/),
      }),
    ]);
    expect(String((event.data.exceptions as Array<{ stack: string }>)[0]!.stack)).not.toContain('__oyster_guard__');
    expect(event.data.error_code).toBe('USER_CODE_FAILED');
  });

  test("a service worker's uncaught exception: the answer begins with its console line of the exception, stack and all", async () => {
    const response = await stack.app.inject({ method: 'GET', url: '/fn/tail-logs-sw/?throw' });
    expect(response.statusCode).toBe(500);
    const [first] = String(response.json().data).split('\n');
    expect(first).toMatch(/message\(\) = \["Uncaught", "TypeError: thrown on purpose\\n {4}at .*:6:/);
  });

  test("a tailed function that printed more than the answer holds: the answer has its output, and none of the trace's", async () => {
    const own = await tail('tail-logs');
    // A line of 100 KiB, then the three lines and the throw: its trace line is longer than the output the answer keeps.
    const response = await stack.app.inject({ method: 'GET', url: '/fn/tail-logs/?throw&kb=100' });
    const data = String(response.json().data);
    expect(data).toMatch(/^Uncaught TypeError: thrown on purpose\n\s+at Object\.fetch \(main\.js:9:/);
    expect(data).toContain('careful');
    expect(data).not.toContain('"level"');
    const event = await own.next((e) => e.type === 'invocation' && e.data.outcome === 'exception');
    // The 100 KiB line, the three, and the guard's "Uncaught".
    expect((event.data.logs as unknown[]).length).toBe(5);
  });

  test.each([
    ['ok', 'GET', '/fn/tail-logs/'],
    ['exception', 'GET', '/fn/throw/'],
    ['cpu_limit', 'GET', '/fn/limits/spin'],
    ['memory_limit', 'GET', '/fn/oom/'],
    ['wall_limit', 'POST', '/fn/slow/'],
    ['response_limit', 'POST', '/fn/big-response/'],
  ] as const)('%s: the same word in the usage header, the ledger and the tail', async (outcome, method, url) => {
    const codeId = url.split('/')[2]!;
    const own = await tail(codeId);
    const payload = { ms: 60_000, bytes: 100_000 };
    const response = await stack.app.inject({ method, url, ...(method === 'POST' && { payload }) });
    expect(headerOutcome(response.headers)).toBe(outcome);
    const event = await own.next((e) => e.type === 'invocation');
    expect(event.data.outcome).toBe(outcome);
    expect(ledgerOutcome(codeId)).toBe(outcome);
    expect(await stack.leftovers()).toEqual(noLeftovers);
  });

  test('client_gone and invalid_code: in the ledger (where workerd started) and the tail', async () => {
    const gone = await tail('slow');
    await stack.app.listen({ port: 0, host: '127.0.0.1' });
    const { port } = stack.app.server.address() as AddressInfo;
    // A client that goes away while the function runs.
    const client = http.request({
      port,
      method: 'POST',
      path: '/fn/slow/',
      headers: { 'content-type': 'application/json' },
    });
    client.on('error', () => undefined);
    client.end(JSON.stringify({ ms: 60_000 }));
    await sleep(500);
    client.destroy();
    expect((await gone.next((e) => e.type === 'invocation')).data.outcome).toBe('client_gone');
    expect(ledgerOutcome('slow')).toBe('client_gone');
    const invalid = await tail('syntax-error');
    const response = await stack.invoke({ code_id: 'syntax-error' });
    expect(response.statusCode).toBe(400);
    const event = await invalid.next((e) => e.type === 'invocation');
    expect(event.data).toMatchObject({ outcome: 'invalid_code', error_code: 'USER_CODE_INVALID', route: 'serverless' });
    expect(String(event.data.output)).toMatch(/SyntaxError/);
  });

  test(`past ${maxTails} open tails: 503 TAIL_LIMIT, in the envelope, and a tail again once one closes`, async () => {
    const extra: OpenTail[] = [];
    while (stack.service.tails.open < maxTails) extra.push(await openTail(adminUrl, 'hello'));
    const refused = await request(`${adminUrl}/admin/tail?code_id=hello`);
    expect(refused.statusCode).toBe(503);
    expect(refused.headers['x-oyster-error']).toBe('TAIL_LIMIT');
    expect(await refused.body.json()).toMatchObject({ status: 'error', data: { max_tails: maxTails } });
    extra.pop()!.close();
    await waitFor('the closed tail to go', async () => stack.service.tails.open < maxTails);
    extra.push(await openTail(adminUrl, 'hello'));
    for (const opened of extra) opened.close();
  });

  // Last: shutdown ends this stack's admission for good.
  test('shutdown: an invocation cut short by it, the same word in the header, the ledger and the tail', async () => {
    const own = await tail('slow');
    const answer = stack.app.inject({ method: 'POST', url: '/fn/slow/', payload: { ms: 60_000 } });
    await sleep(500);
    await stack.service.gates.drain(100);
    const response = await answer;
    expect(response.headers['x-oyster-error']).toBe('SHUTDOWN_INTERRUPTED');
    expect(headerOutcome(response.headers)).toBe('shutdown');
    expect((await own.next((e) => e.type === 'invocation')).data.outcome).toBe('shutdown');
    expect(ledgerOutcome('slow')).toBe('shutdown');
    expect(await stack.leftovers()).toEqual(noLeftovers);
  });
});
