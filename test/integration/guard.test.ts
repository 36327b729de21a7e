import { performance } from 'node:perf_hooks';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { createResponseGuard, guardHeader, guardVerdict, settleRequest } from '../../src/code/responseGuard.js';
import { noSettings, type WorkerCode } from '../../src/code/workerCode.js';
import { removeWorkerFiles, type WorkerFiles, writeWorkerFiles } from '../../src/code/workerdConfig.js';
import { parseConfig } from '../../src/config.js';
import { makeTempDir, removeTempDir } from '../../src/dev/tempDir.js';
import { prepareWorkerd, type WorkerdProcess, type WorkerdStandby } from '../../src/sandbox/standby.js';
import { plainFileCgroup } from '../helpers/fakeCgroupfs.js';

// The guard on its own: a tiny worker of each form, wrapped by the guard as the service writes it,
// run by workerd (started by a standby in a cgroup of plain files) with no service in front of it.
const maxBytes = 1024;
const guard = createResponseGuard(maxBytes);
// Long enough that a settle answered before the work would show.
const workMs = 300;

// The routes every form of the tiny worker answers, by path; `done` says whether the waitUntil work has finished.
// A module worker passes its ctx.exports, through which it reaches its own named exports.
const routes = `
let done = false;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const broken = () => {
  const { readable, writable } = new TransformStream();
  const writer = writable.getWriter();
  (async () => {
    await writer.write(new TextEncoder().encode('PART1-'));
    await sleep(20);
    await writer.abort(new Error('stream broke'));
  })();
  return new Response(readable);
};
const endless = (bytes) => new Response(new ReadableStream({
  pull(controller) { controller.enqueue(new Uint8Array(bytes)); controller.close(); },
}));
// "chunks" in four chunks, one of each kind of bytes workerd takes.
const chunked = () => new Response(new ReadableStream({
  start(controller) {
    const bytes = new TextEncoder().encode('chunks');
    controller.enqueue(bytes.slice(0, 1));
    controller.enqueue(bytes.slice(1, 2).buffer);
    controller.enqueue(new DataView(bytes.slice(2, 4).buffer));
    controller.enqueue(new Uint16Array(bytes.slice(4, 6).buffer));
    controller.close();
  },
}));
// A body that never ends, as fast as the isolate can make it.
const forever = () => new Response(new ReadableStream({
  pull(controller) { controller.enqueue(new Uint8Array(4096)); },
}));
const notBytes = () => new Response(new ReadableStream({
  start(controller) { controller.enqueue('a string'); controller.close(); },
}));
// A body that never comes: workerd ends a read of it with its own 500, so only a refusal before reading passes.
const declared = (bytes) => new Response(new ReadableStream(), { headers: { 'content-length': String(bytes) } });
const answer = (request, waitUntil, exports) => {
  const route = new URL(request.url).pathname.slice(1);
  if (route === 'whole') return new Response('the whole answer', { status: 201, headers: { 'x-own': 'kept' } });
  if (route === 'throw') throw new Error('the function threw');
  if (route === 'broken') return broken();
  if (route === 'big') return endless(${maxBytes + 1});
  if (route === 'limit') return endless(${maxBytes});
  if (route === 'chunked') return chunked();
  if (route === 'forever') return forever();
  if (route === 'not-bytes') return notBytes();
  if (route === 'big-declared') return declared(${maxBytes + 1});
  if (route === 'forged') return new Response('all mine', { headers: { '${guardHeader}': '${'0'.repeat(32)} threw' } });
  if (route === 'wait') { waitUntil(sleep(${workMs}).then(() => { done = true; })); return new Response('answered'); }
  if (route === 'done') return new Response(String(done));
  if (route === 'named') return exports.Named.fetch(request);
  return new Response('no such route', { status: 404 });
};
`;

// What both module forms begin with: the routes, and a named export, which the guard's module must re-export.
const moduleHead = `import { WorkerEntrypoint } from 'cloudflare:workers';
${routes}export class Named extends WorkerEntrypoint { fetch() { return new Response('named'); } }
`;

// The worker in each form the guard wraps.
const forms: ReadonlyArray<readonly [string, WorkerCode]> = [
  [
    'a handler object',
    modules(`${moduleHead}export default {
  async fetch(request, env, ctx) { return answer(request, (work) => ctx.waitUntil(work), ctx.exports); },
};`),
  ],
  [
    'a WorkerEntrypoint class',
    modules(`${moduleHead}export default class extends WorkerEntrypoint {
  async fetch(request) { return answer(request, (work) => this.ctx.waitUntil(work), this.ctx.exports); }
}`),
  ],
  [
    'a service worker',
    serviceWorker(`'use strict';
${routes}addEventListener('fetch', (event) => {
  if (new URL(event.request.url).pathname === '/throw-early') throw new Error('the listener threw');
  event.respondWith(answer(event.request, (work) => event.waitUntil(work)));
});`),
  ],
];

function modules(source: string): WorkerCode {
  return {
    format: 'modules',
    modules: [{ name: 'index.js', type: 'esModule', content: Buffer.from(source) }],
    settings: noSettings,
  };
}

function serviceWorker(source: string): WorkerCode {
  return { format: 'service-worker', script: Buffer.from(source), settings: noSettings };
}

describe.each(forms)('the guard around %s, in workerd', (_, code) => {
  let dir: string;
  let standby: WorkerdStandby;
  let files: WorkerFiles;
  let workerd: WorkerdProcess;
  beforeAll(async () => {
    dir = await makeTempDir('oyster-guard-');
    standby = prepareWorkerd({ workerdPath: parseConfig({}).workerdPath, cgroup: await plainFileCgroup(dir) });
    files = await writeWorkerFiles({
      runtimePath: dir,
      code,
      defaults: { compatibilityDate: '2026-04-26', compatibilityFlags: [] },
      allowPublicEgress: false,
      deniedEgress: [],
      guard,
    });
    workerd = await standby.start(files.configPath, new AbortController().signal);
  });
  afterAll(async () => {
    await workerd?.stop();
    await standby?.stop();
    if (files) removeWorkerFiles(files);
    await removeTempDir(dir);
  });

  const get = async (route: string, headers: Record<string, string> = {}) => {
    const response = await fetch(`http://127.0.0.1:${workerd.port}/${route}`, { headers });
    const body = await response.text();
    return { status: response.status, body, verdict: response.headers.get(guardHeader), headers: response.headers };
  };
  const refusal = (verdict: string) => ({ status: 500, body: '', verdict: `${guard.secret} ${verdict}` });

  test('passes on a whole answer as the function gave it', async () => {
    const { headers, ...answer } = await get('whole');
    expect(answer).toEqual({ status: 201, body: 'the whole answer', verdict: null });
    expect(headers.get('x-own')).toBe('kept');
  });

  test('passes on a body of exactly the limit', async () => {
    const { status, body, verdict } = await get('limit');
    expect({ status, length: body.length, verdict }).toEqual({ status: 200, length: maxBytes, verdict: null });
  });

  test('passes on a body of many chunks, of every kind of bytes, as one', async () => {
    const { status, body, verdict } = await get('chunked');
    expect({ status, body, verdict }).toEqual({ status: 200, body: 'chunks', verdict: null });
  });

  test.each([
    ['a throw', 'throw', 'threw'],
    ['a body stream that fails', 'broken', 'incomplete'],
    ['a body chunk that is not bytes', 'not-bytes', 'incomplete'],
    ['a body past the limit', 'big', 'too-large'],
    ['a body that never ends', 'forever', 'too-large'],
    ['a declared Content-Length past the limit', 'big-declared', 'too-large'],
  ])('refuses %s with a bodiless 500 that carries the secret', async (_, route, verdict) => {
    const { status, body, verdict: said } = await get(route);
    expect({ status, body, verdict: said }).toEqual(refusal(verdict));
    expect(guardVerdict(guard, said ?? undefined)).toBe(verdict);
  });

  test("passes a header of the guard's name without the secret on as the function's own", async () => {
    const { status, body, verdict } = await get('forged');
    expect({ status, body }).toEqual({ status: 200, body: 'all mine' });
    expect(verdict).toBe(`${'0'.repeat(32)} threw`);
    expect(guardVerdict(guard, verdict ?? undefined)).toBeUndefined();
  });

  test('says "pending" while waitUntil work runs, and answers the settle request once it has settled', async () => {
    const { status, body, verdict } = await get('wait');
    expect({ status, body, verdict }).toEqual({ status: 200, body: 'answered', verdict: `${guard.secret} pending` });
    expect((await get('done')).body).toBe('false');
    const started = performance.now();
    const settled = await get('', { [guardHeader]: `${guard.secret} ${settleRequest}` });
    expect({ status: settled.status, body: settled.body }).toEqual({ status: 204, body: '' });
    expect(performance.now() - started).toBeGreaterThan(workMs / 2);
    expect((await get('done')).body).toBe('true');
    // Nothing runs any more: the next answer is passed on as it is.
    expect((await get('whole')).verdict).toBeNull();
  });

  test('passes a settle request without the secret to the function', async () => {
    expect((await get('whole', { [guardHeader]: `${'0'.repeat(32)} ${settleRequest}` })).body).toBe('the whole answer');
  });

  // Only a module worker has named exports; the guard's module stands in for its main module.
  if (code.format === 'modules') {
    test("re-exports the main module's named exports", async () => {
      const { status, body } = await get('named');
      expect({ status, body }).toEqual({ status: 200, body: 'named' });
    });
  }

  // Only a service worker has a listener that can throw before it responds.
  if (code.format === 'service-worker') {
    test('refuses a listener that throws before it responds', async () => {
      const { status, body, verdict } = await get('throw-early');
      expect({ status, body, verdict }).toEqual(refusal('threw'));
      expect(workerd.output()).toContain('the listener threw');
    });
  }
});
