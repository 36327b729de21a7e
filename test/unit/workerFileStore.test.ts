import { readdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, test, vi } from 'vitest';
import { WorkerFileStore } from '../../src/capacity/workerFileStore.js';
import { createResponseGuard } from '../../src/code/responseGuard.js';
import type { StoredCode } from '../../src/code/workerCode.js';
import { noSettings, type WorkerCode } from '../../src/code/workerCode.js';
import { type WorkerFiles, writeWorkerFiles } from '../../src/code/workerdConfig.js';
import { makeTempDir, removeTempDir } from '../../src/dev/tempDir.js';

const code: WorkerCode = {
  format: 'service-worker',
  script: Buffer.from('addEventListener("fetch", () => {})'),
  settings: noSettings,
};
const stored = (): StoredCode => ({ bytes: Buffer.from('x'), contentType: 'application/javascript' });

describe('the worker file store', () => {
  let runtimePath: string;
  let cached: Set<StoredCode>;
  let removeFailures: unknown[];
  let write: ReturnType<typeof vi.fn<(code: WorkerCode) => Promise<WorkerFiles>>>;
  let store: WorkerFileStore;

  beforeEach(async () => {
    runtimePath = await makeTempDir('oyster-files-');
    cached = new Set();
    removeFailures = [];
    write = vi.fn((workerCode: WorkerCode) =>
      writeWorkerFiles({
        runtimePath,
        code: workerCode,
        defaults: { compatibilityDate: '2026-04-26', compatibilityFlags: [] },
        allowPublicEgress: false,
        deniedEgress: [],
        guard: createResponseGuard(1024 * 1024),
      }),
    );
    store = new WorkerFileStore({ write, onRemoveFailed: (error) => removeFailures.push(error) });
  });
  afterEach(async () => {
    await removeTempDir(runtimePath);
  });

  const dirs = () => readdir(runtimePath);

  test('writes the files of cached code once, for concurrent and later invocations alike', async () => {
    const download = stored();
    cached.add(download);
    const [first, second] = await Promise.all([
      store.acquire(download, code, cached.has(download)),
      store.acquire(download, code, cached.has(download)),
    ]);
    first.release();
    second.release();
    const third = await store.acquire(download, code, cached.has(download));
    expect(write).toHaveBeenCalledTimes(1);
    expect(new Set([first.configPath, second.configPath, third.configPath]).size).toBe(1);
    third.release();
    expect(await dirs()).toHaveLength(1);
    expect(store.sharedDirs).toEqual([path.dirname(first.configPath)]);
  });

  test('gives code the cache does not hold files of its own, removed when released', async () => {
    const download = stored();
    const [first, second] = await Promise.all([
      store.acquire(download, code, cached.has(download)),
      store.acquire(download, code, cached.has(download)),
    ]);
    expect(first.configPath).not.toBe(second.configPath);
    first.release();
    expect(await dirs()).toHaveLength(1);
    second.release();
    expect(await dirs()).toEqual([]);
    expect(store.sharedDirs).toEqual([]);
  });

  test('removes the files of code the cache let go of at once when unused', async () => {
    const download = stored();
    cached.add(download);
    (await store.acquire(download, code, cached.has(download))).release();
    store.retire(download);
    expect(await dirs()).toEqual([]);
    expect(store.sharedDirs).toEqual([]);
  });

  test('keeps the files of code the cache let go of until the last invocation using them releases them', async () => {
    const download = stored();
    cached.add(download);
    const first = await store.acquire(download, code, cached.has(download));
    const second = await store.acquire(download, code, cached.has(download));
    store.retire(download);
    first.release();
    first.release();
    expect(await dirs()).toHaveLength(1);
    second.release();
    expect(await dirs()).toEqual([]);
  });

  test('removes the files of code the cache let go of while they were being written, once released', async () => {
    const download = stored();
    cached.add(download);
    let open!: () => void;
    const gate = new Promise<void>((resolve) => (open = resolve));
    const writeFiles = write.getMockImplementation()!;
    write.mockImplementationOnce(async (workerCode) => {
      await gate;
      return writeFiles(workerCode);
    });
    const acquiring = store.acquire(download, code, cached.has(download));
    store.retire(download);
    open();
    const lease = await acquiring;
    expect(await dirs()).toHaveLength(1);
    expect(store.sharedDirs).toEqual([]);
    lease.release();
    expect(await dirs()).toEqual([]);
  });

  test('writes again for code fetched anew after the cache let go of the old copy', async () => {
    const old = stored();
    cached.add(old);
    const lease = await store.acquire(old, code, cached.has(old));
    store.retire(old);
    const fresh = stored();
    cached.add(fresh);
    const again = await store.acquire(fresh, code, cached.has(fresh));
    expect(again.configPath).not.toBe(lease.configPath);
    expect(write).toHaveBeenCalledTimes(2);
    lease.release();
    again.release();
    expect(await dirs()).toHaveLength(1);
  });

  test('fails every invocation that waited on a failed write, and the next one writes again', async () => {
    const download = stored();
    cached.add(download);
    write.mockRejectedValueOnce(new Error('disk full'));
    const results = await Promise.allSettled([
      store.acquire(download, code, cached.has(download)),
      store.acquire(download, code, cached.has(download)),
    ]);
    expect(results.map((result) => result.status)).toEqual(['rejected', 'rejected']);
    const lease = await store.acquire(download, code, cached.has(download));
    expect(write).toHaveBeenCalledTimes(2);
    lease.release();
    store.retire(download);
    expect(await dirs()).toEqual([]);
  });

  test('at shutdown lets go of every kept file and keeps nothing from then on', async () => {
    const idle = stored();
    const busy = stored();
    cached.add(idle).add(busy);
    (await store.acquire(idle, code, cached.has(idle))).release();
    const running = await store.acquire(busy, code, cached.has(busy));
    store.retireAll();
    expect(await dirs()).toHaveLength(1);
    running.release();
    expect(await dirs()).toEqual([]);
    (await store.acquire(idle, code, cached.has(idle))).release();
    expect(await dirs()).toEqual([]);
  });

  test('reports files it could not remove when the cache let go of them', async () => {
    const download = stored();
    cached.add(download);
    const lease = await store.acquire(download, code, cached.has(download));
    lease.release();
    await rm(path.dirname(lease.configPath), { recursive: true });
    // Where the directory was, a file: unlinking what was in it fails with ENOTDIR.
    await writeFile(path.dirname(lease.configPath), '');
    store.retire(download);
    expect(removeFailures).toEqual([expect.objectContaining({ code: 'ENOTDIR' })]);
  });
});
