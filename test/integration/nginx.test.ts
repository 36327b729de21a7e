import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import type { RunningServer } from '../../src/dev/listen.js';
import { makeTempDir, removeTempDir } from '../../src/dev/tempDir.js';
import { cgroupsOrSkip } from '../helpers/cgroups.js';
import { type Answer, getJson, invoke, postJson } from '../helpers/http.js';
import { burst, type Instance, startInstance, stopInstance } from '../helpers/instances.js';
import { type Nginx, startNginx } from '../helpers/nginx.js';
import { programOrSkip } from '../helpers/programs.js';
import { examplesDir, fixturesDir } from '../helpers/stack.js';
import { startUpstreams } from '../helpers/upstreams.js';
import { waitFor } from '../helpers/wait.js';

const ready = (await cgroupsOrSkip()) && (await programOrSkip('nginx', 'nginx'));

// The cgroups of each instance; a burst of burstSize requests is more than both pools hold.
const poolSize = 2;
const burstSize = 6;
// Long enough that every request of a burst arrives while the first ones still hold their cgroups.
const holdMs = 1500;
const answerTimeoutMs = 20_000;

const slow = { code_id: 'slow', input: { ms: holdMs } };
const hello = { code_id: 'hello', input: { name: 'Ada' } };

describe.runIf(ready)('two instances behind nginx with the shipped example configuration', () => {
  let attestation: RunningServer;
  let storage: RunningServer;
  let a: Instance;
  let b: Instance;
  let nginx: Nginx;

  beforeAll(async () => {
    ({ attestation, storage } = await startUpstreams([examplesDir, fixturesDir]));
    a = await startInstance(attestation, storage, poolSize);
    b = await startInstance(attestation, storage, poolSize);
    nginx = await startNginx([a.address, b.address]);
  });

  afterAll(async () => {
    await nginx?.stop();
    for (const instance of [a, b]) if (instance) await stopInstance(instance);
    await Promise.all([attestation?.close(), storage?.close()]);
  });

  test('a 503 from an instance whose pool is full is answered by the other instance', async () => {
    // Fill a's pool directly, around nginx.
    const holding = [invoke(a.service.url, slow), invoke(a.service.url, slow)];
    const full = async () => (await getJson<{ data: { free: number } }>(`${a.service.url}/health`)).data.free === 0;
    await waitFor('every cgroup of the first instance to be taken', full, holdMs);

    const answers: Answer[] = [];
    for (let i = 0; i < 4; i += 1) answers.push(await invoke(nginx.url, hello));
    expect(answers.map((answer) => answer.statusCode)).toEqual([200, 200, 200, 200]);
    const retried = (await nginx.accessLog()).filter((entry) => entry.upstreams.length === 2);
    expect(retried).toContainEqual({
      status: 200,
      upstreams: [a.address, b.address],
      upstreamStatuses: ['503', '200'],
    });

    expect((await Promise.all(holding)).map((answer) => answer.statusCode)).toEqual([200, 200]);
  });

  test('more requests at once than one pool holds: the pair answers more of them, and fewer 503s, than one instance', async () => {
    const alone = await burst(a.service.url, burstSize, slow);
    expect(alone).toEqual({ 200: poolSize, 503: burstSize - poolSize });

    const pair = await burst(nginx.url, burstSize, slow);
    // Only the service's own answers: no request is lost to nginx (502, 504), and each 503 is the
    // second instance's, after the first one's.
    expect(pair).toEqual({ 200: 2 * poolSize, 503: burstSize - 2 * poolSize });
    const busy = (await nginx.accessLog()).slice(-burstSize).filter((entry) => entry.status === 503);
    for (const entry of busy) expect(entry.upstreamStatuses).toEqual(['503', '503']);
  });

  test('draining one instance takes it out of rotation without losing a request; resuming brings it back', async () => {
    const before = (await nginx.accessLog()).length;
    expect(await postJson(`${a.adminUrl}/admin/drain`)).toMatchObject({ message: 'Draining' });
    const drained: Answer[] = [];
    for (let i = 0; i < 6; i += 1) drained.push(await invoke(nginx.url, hello));
    expect(drained.map((answer) => answer.statusCode)).toEqual(Array(6).fill(200));
    const whileDrained = (await nginx.accessLog()).slice(before);
    // Every request ended at b; those nginx tried on a first got its retryable 503 and moved on.
    for (const entry of whileDrained) expect(entry.upstreams.at(-1)).toBe(b.address);
    expect(whileDrained).toContainEqual({
      status: 200,
      upstreams: [a.address, b.address],
      upstreamStatuses: ['503', '200'],
    });

    expect(await postJson(`${a.adminUrl}/admin/resume`)).toMatchObject({ message: 'Serving' });
    const resumedAt = (await nginx.accessLog()).length;
    for (let i = 0; i < 4; i += 1) expect((await invoke(nginx.url, hello)).statusCode).toBe(200);
    const afterResume = (await nginx.accessLog()).slice(resumedAt);
    expect(afterResume).toContainEqual({ status: 200, upstreams: [a.address], upstreamStatuses: ['200'] });
  });

  test('stopping one instance mid-run loses no request: what it cannot take, the other answers', async () => {
    const clients = 2;
    const perClient = 12;
    let answered = 0;
    const run = async () => {
      const statuses: number[] = [];
      for (let i = 0; i < perClient; i += 1) {
        statuses.push((await invoke(nginx.url, hello)).statusCode);
        answered += 1;
      }
      return statuses;
    };
    const before = (await nginx.accessLog()).length;
    const running = Promise.all(Array.from({ length: clients }, run));
    await waitFor(
      'a quarter of the requests to be answered',
      async () => answered >= (clients * perClient) / 4,
      answerTimeoutMs,
    );
    a.service.child.kill('SIGTERM');

    expect((await running).flat()).toEqual(Array(clients * perClient).fill(200));
    expect(await a.service.exited).toBe(0);
    const entries = (await nginx.accessLog()).slice(before);
    // Some went to the stopping instance first and were passed on; the last ones only to b.
    expect(entries.some((entry) => entry.upstreams.length === 2 && entry.upstreams[0] === a.address)).toBe(true);
    expect(entries.at(-1)?.upstreams.at(-1)).toBe(b.address);
  });
});

// The HTTP route is hashed on its code_id (the example's second upstream block), so a code_id's
// requests go where its code is cached and its spare waits.
describe.runIf(ready)('three instances behind nginx: each code_id of the HTTP route keeps to one instance', () => {
  const codeIds = Array.from({ length: 12 }, (_, i) => `affinity-${i}`);
  let codeDir: string;
  let attestation: RunningServer;
  let storage: RunningServer;
  let instances: Instance[];
  let nginx: Nginx;

  beforeAll(async () => {
    // Code of its own for each code_id: the request-info example under another name.
    codeDir = await makeTempDir('oyster-affinity-');
    const code = await readFile(path.join(examplesDir, 'request-info.js'), 'utf8');
    await Promise.all(codeIds.map((codeId) => writeFile(path.join(codeDir, `${codeId}.js`), `// ${codeId}\n${code}`)));
    ({ attestation, storage } = await startUpstreams([codeDir]));
    // Three cgroups each: with two code_ids on one instance, each still gets its spare.
    instances = await Promise.all([1, 2, 3].map(() => startInstance(attestation, storage, 3)));
    nginx = await startNginx(instances.map((instance) => instance.address));
  });

  afterAll(async () => {
    await nginx?.stop();
    for (const instance of instances ?? []) await stopInstance(instance);
    await Promise.all([attestation?.close(), storage?.close()]);
    if (codeDir) await removeTempDir(codeDir);
  });

  // The sum over the instances of one of their counters.
  const total = async (metric: string) => {
    let sum = 0;
    for (const instance of instances) {
      const text = await (await request(`${instance.service.url}/metrics`)).body.text();
      sum += Number(new RegExp(`^${metric} (\\d+)$`, 'm').exec(text)?.[1] ?? 0);
    }
    return sum;
  };
  // GETs a code_id through nginx; answers the instance that answered it, and those it tried.
  const get = async (codeId: string) => {
    const logged = (await nginx.accessLog()).length;
    const response = await request(`${nginx.url}/fn/${codeId}/items?x=1`);
    expect(response.statusCode).toBe(200);
    await response.body.text();
    // nginx writes the request's log line once the answer has gone.
    const entry = await waitFor('its access log line', async () => (await nginx.accessLog())[logged]);
    return { answeredBy: entry.upstreams.at(-1)!, tried: entry.upstreams };
  };

  test('repeated requests for a code_id go to one instance, and find the spare each one leaves there', async () => {
    let ready = await total('oyster_spares_ready_total');
    const hitsBefore = await total('oyster_spare_hits_total');
    for (const codeId of codeIds.slice(0, 2)) {
      const instancesUsed = new Set<string>();
      for (let i = 0; i < 3; i += 1) {
        instancesUsed.add((await get(codeId)).answeredBy);
        // Each invocation leaves a spare behind, ready before the next request.
        ready += 1;
        await waitFor('the spare it left', async () => (await total('oyster_spares_ready_total')) === ready);
      }
      expect(instancesUsed.size).toBe(1);
    }
    expect((await total('oyster_spare_hits_total')) - hitsBefore).toBe(4);
  });

  test('an instance that goes away moves only its own code_ids to the others', async () => {
    const before = new Map<string, string>();
    for (const codeId of codeIds) before.set(codeId, (await get(codeId)).answeredBy);
    const used = new Set(before.values());
    expect(used.size).toBeGreaterThan(1);
    const gone = instances.find((instance) => used.has(instance.address))!;
    await stopInstance(gone);
    for (const codeId of codeIds) {
      const { answeredBy, tried } = await get(codeId);
      if (before.get(codeId) === gone.address) {
        expect(tried[0]).toBe(gone.address);
        expect(answeredBy).not.toBe(gone.address);
      } else {
        expect(tried).toEqual([before.get(codeId)]);
      }
    }
  });
});
