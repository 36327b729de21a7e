import type { AddressInfo } from 'node:net';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { buildAdminApp } from '../../src/http/adminApp.js';
import { cgroupsOrSkip } from '../helpers/cgroups.js';
import { noLeftovers, type Stack, startStack } from '../helpers/stack.js';

const cgroups = await cgroupsOrSkip();

// The operator's endpoints, on a listener apart from the public one: draining takes the instance
// out of rotation (new invocations get a retryable 503, those in flight finish), resuming puts it back.
describe.runIf(cgroups)('operator endpoints and draining', () => {
  let stack: Stack;
  let admin: FastifyInstance;
  beforeAll(async () => {
    stack = await startStack({ pool: { count: 2 } });
    admin = buildAdminApp(stack.service);
  });
  afterAll(async () => {
    await admin?.close();
    await stack?.close();
  });

  const health = async () => {
    const response = await stack.app.inject({ method: 'GET', url: '/health' });
    return { statusCode: response.statusCode, body: response.json() };
  };

  test('are not on the public listener', async () => {
    const endpoints = [
      ['POST', '/admin/drain'],
      ['POST', '/admin/resume'],
      ['GET', '/admin/status'],
      ['GET', '/admin/usage'],
      ['POST', '/admin/claims'],
      ['GET', '/admin/claims/latest'],
    ] as const;
    for (const [method, url] of endpoints) {
      const response = await stack.app.inject({
        method,
        url,
        payload: method === 'POST' ? { nonce: '01' } : undefined,
      });
      expect(response.statusCode, url).toBe(404);
    }
    expect(stack.service.gates.draining).toBe(false);
  });

  test('draining lets the invocation in flight finish, refuses new ones retryably, and resuming takes them again', async () => {
    const running = stack.invoke({ code_id: 'slow', input: { ms: 800 } });
    await expect.poll(() => stack.service.gates.inFlight).toBe(1);

    const drained = await admin.inject({ method: 'POST', url: '/admin/drain' });
    expect(drained.statusCode).toBe(200);
    expect(drained.json()).toEqual({ status: 'success', message: 'Draining', data: { draining: true, in_flight: 1 } });

    const refused = await stack.invoke({ code_id: 'hello', input: { name: 'Ada' } });
    expect(refused.statusCode).toBe(503);
    expect(refused.headers['x-oyster-error']).toBe('DRAINING');
    expect(refused.headers['retry-after']).toBeDefined();
    expect((await health()).statusCode).toBe(503);
    expect((await health()).body).toMatchObject({ message: 'Draining', data: { draining: true } });
    // The metrics still answer: the instance is out of rotation, not down.
    expect((await stack.app.inject({ method: 'GET', url: '/metrics' })).statusCode).toBe(200);

    const finished = await running;
    expect(finished.statusCode).toBe(200);
    expect(finished.body.data).toBe('done');
    expect((await health()).body).toMatchObject({ data: { in_flight: 0 } });

    const resumed = await admin.inject({ method: 'POST', url: '/admin/resume' });
    expect(resumed.json()).toEqual({ status: 'success', message: 'Serving', data: { draining: false, in_flight: 0 } });
    expect((await stack.invoke({ code_id: 'hello', input: { name: 'Ada' } })).statusCode).toBe(200);
    expect((await health()).statusCode).toBe(200);
    expect(await stack.leftovers()).toEqual(noLeftovers);
  });

  test('user code cannot reach them', async () => {
    await admin.listen({ host: '127.0.0.1', port: 0 });
    const url = `http://127.0.0.1:${(admin.server.address() as AddressInfo).port}/admin/status`;
    const response = await stack.invoke({ code_id: 'fetch', input: { url } });
    expect(response.body.data).toMatch(/^blocked /);
  });
});
