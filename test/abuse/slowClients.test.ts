import type net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { cgroupsOrSkip } from '../helpers/cgroups.js';
import { invoke } from '../helpers/http.js';
import { connect, stalledHead } from '../helpers/rawClient.js';
import { noLeftovers, type Stack, startStack } from '../helpers/stack.js';

const cgroups = await cgroupsOrSkip();
const requestTimeoutMs = 1_000;
const keepAliveTimeoutMs = 500;
const maxConnections = 12;

// Slow and idle clients against the real HTTP server on loopback.
describe.runIf(cgroups)('slow clients', () => {
  let stack: Stack;
  let port: number;
  beforeAll(async () => {
    stack = await startStack({
      pool: { count: 2 },
      env: {
        REQUEST_TIMEOUT_MS: String(requestTimeoutMs),
        KEEP_ALIVE_TIMEOUT_MS: String(keepAliveTimeoutMs),
        MAX_CONNECTIONS: String(maxConnections),
      },
    });
    await stack.app.listen({ host: '127.0.0.1', port: 0 });
    port = (stack.app.server.address() as net.AddressInfo).port;
  });
  afterAll(() => stack?.close());

  const invokeOverHttp = () => invoke(`http://127.0.0.1:${port}`, { code_id: 'hello', input: { name: 'neighbour' } });

  test('a body that never comes gets a 408 at REQUEST_TIMEOUT_MS, while everyone else is answered', async () => {
    const stalled = await Promise.all(Array.from({ length: 6 }, () => connect(port, stalledHead)));
    for (let i = 0; i < 3; i += 1) expect((await invokeOverHttp()).statusCode).toBe(200);
    const closedAfter = await Promise.all(stalled.map((client) => client.closed));
    for (const [i, client] of stalled.entries()) {
      expect(client.received()).toMatch(/^HTTP\/1\.1 408 /);
      expect(closedAfter[i]).toBeGreaterThanOrEqual(requestTimeoutMs - 50);
      // Node looks for expired requests twice a second.
      expect(closedAfter[i]).toBeLessThan(requestTimeoutMs + 1_500);
    }
    expect(await stack.leftovers()).toEqual(noLeftovers);
  });

  test('a chunked body dripping a byte at a time gets its 408 all the same: the time-out is for the whole request', async () => {
    const client = await connect(
      port,
      'POST /api/serverless HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n',
    );
    const drip = setInterval(() => client.socket.write('1\r\n \r\n'), 100);
    try {
      const closedAfter = await client.closed;
      expect(client.received()).toMatch(/^HTTP\/1\.1 408 /);
      expect(closedAfter).toBeLessThan(requestTimeoutMs + 1_500);
    } finally {
      clearInterval(drip);
    }
  });

  test('an idle kept-alive connection is closed after KEEP_ALIVE_TIMEOUT_MS', async () => {
    const client = await connect(port, 'GET /health HTTP/1.1\r\nHost: x\r\n\r\n');
    const closedAfter = await client.closed;
    expect(client.received()).toMatch(/^HTTP\/1\.1 200 /);
    expect(closedAfter).toBeGreaterThanOrEqual(keepAliveTimeoutMs - 50);
    expect(closedAfter).toBeLessThan(requestTimeoutMs + 1_500);
  });

  test('at MAX_CONNECTIONS a new client is answered: the connection stalled longest is closed to make room', async () => {
    const held = [];
    for (let i = 0; i < maxConnections; i += 1) {
      held.push(await connect(port, stalledHead));
      // Each a little later than the one before, so that which is the longest stalled is clear.
      await sleep(10);
    }
    expect((await invokeOverHttp()).statusCode).toBe(200);
    expect(await held[0]!.closed).toBeLessThan(requestTimeoutMs);
    expect(held[0]!.received()).toBe('');
    expect(held.slice(1).filter((client) => client.socket.closed)).toEqual([]);
    await Promise.all(held.map((client) => client.closed));
  });
});
