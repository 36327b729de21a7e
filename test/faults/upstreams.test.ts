import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { cgroupsOrSkip } from '../helpers/cgroups.js';
import { type Fault, type FaultyServer, startFaultyServer } from '../helpers/faultyServer.js';
import { noLeftovers, type Stack, startStack } from '../helpers/stack.js';

const cgroups = await cgroupsOrSkip();
const upstreamTimeoutMs = 500;
// Generous room for a loaded 2-core machine; the point is "near the timeout", not "after 30 s".
const slack = 1_500;

describe.runIf(cgroups).each<{ upstream: 'attestation' | 'storage'; message: string }>([
  { upstream: 'attestation', message: 'There was a problem in generating the attestation document' },
  { upstream: 'storage', message: 'There was a problem in fetching the code from the storage server' },
])('a misbehaving $upstream server gets the documented 500 within UPSTREAM_TIMEOUT_MS', ({ upstream, message }) => {
  const faults: Fault[] = ['silent', 'error', 'cut'];
  const servers = new Map<Fault, FaultyServer>();
  const stacks = new Map<Fault, Stack>();
  beforeAll(async () => {
    for (const fault of faults) {
      const server = await startFaultyServer(fault);
      servers.set(fault, server);
      const url: Record<string, string> =
        upstream === 'attestation' ? { ATTESTATION_URL: server.url } : { STORAGE_URL: `${server.url}/load` };
      stacks.set(
        fault,
        await startStack({ pool: { count: 1 }, env: { UPSTREAM_TIMEOUT_MS: String(upstreamTimeoutMs), ...url } }),
      );
    }
  });
  afterAll(async () => {
    for (const stack of stacks.values()) await stack.close();
    for (const server of servers.values()) await server.close();
  });

  test('unreachable', async () => {
    const closedPort: Record<string, string> =
      upstream === 'attestation'
        ? { ATTESTATION_URL: 'http://127.0.0.1:9' }
        : { STORAGE_URL: 'http://127.0.0.1:9/load' };
    const stack = await startStack({ pool: { count: 1 }, env: closedPort });
    try {
      const response = await stack.invoke({ code_id: 'hello' });
      expect(response.statusCode).toBe(500);
      expect(response.body.message).toBe(message);
      expect(await stack.leftovers()).toEqual(noLeftovers);
    } finally {
      await stack.close();
    }
  });

  test.each(faults)('%s', async (fault) => {
    const stack = stacks.get(fault)!;
    const started = Date.now();
    const response = await stack.invoke({ code_id: 'hello' });
    expect(response.statusCode).toBe(500);
    expect(response.body.message).toBe(message);
    expect(Date.now() - started).toBeLessThan(upstreamTimeoutMs + slack);
    expect(servers.get(fault)!.requests).toBeGreaterThan(0);
    expect(await stack.leftovers()).toEqual(noLeftovers);
  });
});
