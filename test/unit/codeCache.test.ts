import { describe, expect, test, vi } from 'vitest';
import { CodeCache, entryCost, entryOverheadBytes, sha256 } from '../../src/code/codeCache.js';
import { ServiceError } from '../../src/errors.js';

const code = (text: string) => ({ bytes: Buffer.from(text), contentType: 'application/javascript' });
// Costs in plain bytes of code, so that the tests of its order can count in bytes.
const byLength = { cost: (stored: { bytes: Buffer }) => stored.bytes.length };

describe('the code cache', () => {
  test('fetches a code_id once and serves it from memory afterwards', async () => {
    const cache = new CodeCache({ ...byLength, maxBytes: 1024 });
    const fetch = vi.fn(async () => code('A'));
    const first = await cache.get('a', fetch);
    const second = await cache.get('a', fetch);
    expect(fetch).toHaveBeenCalledTimes(1);
    expect(first).toMatchObject({ hit: false, code: code('A') });
    expect(second).toMatchObject({ hit: true, code: code('A') });
    expect(second.sha256).toEqual(sha256(Buffer.from('A')));
  });

  test('counts what an entry really costs: tiny code cannot make a budget hold a million entries', async () => {
    const tiny = 'x'.repeat(67);
    expect(entryCost(code(tiny))).toBe(2 * 67 + entryOverheadBytes);
    const maxBytes = 1024 * 1024;
    const cache = new CodeCache({ maxBytes });
    for (let i = 0; i < 1000; i += 1) await cache.get(`code-${i}`, async () => code(tiny));
    expect(cache.size).toBe(Math.floor(maxBytes / entryCost(code(tiny))));
    expect(cache.bytes).toBeLessThanOrEqual(maxBytes);
    // The default budget, 64 MiB, holds a few thousand such entries, not a million.
    expect(Math.floor((64 * 1024 * 1024) / entryCost(code(tiny)))).toBeLessThan(4000);
  });

  test('with maxBytes 0 keeps nothing', async () => {
    const cache = new CodeCache({ ...byLength, maxBytes: 0 });
    const fetch = vi.fn(async () => code('A'));
    await cache.get('a', fetch);
    await cache.get('a', fetch);
    expect(fetch).toHaveBeenCalledTimes(2);
    expect(cache.size).toBe(0);
  });

  test('evicts the least recently used code when over its byte limit', async () => {
    const cache = new CodeCache({ ...byLength, maxBytes: 10 });
    await cache.get('a', async () => code('aaaa'));
    await cache.get('b', async () => code('bbbb'));
    await cache.get('a', async () => code('never'));
    await cache.get('c', async () => code('cccc'));
    expect(cache.bytes).toBe(8);
    const refetch = vi.fn(async () => code('bbbb'));
    expect((await cache.get('a', refetch)).hit).toBe(true);
    expect((await cache.get('b', refetch)).hit).toBe(false);
    expect(refetch).toHaveBeenCalledTimes(1);
  });

  test('tells which download it holds for a code_id, and of each one it lets go of', async () => {
    const evicted: string[] = [];
    const cache = new CodeCache({
      ...byLength,
      maxBytes: 8,
      onEvict: (stored) => evicted.push(stored.bytes.toString()),
    });
    const a = (await cache.get('a', async () => code('aaaa'))).code;
    expect(cache.holds('a', a)).toBe(true);
    expect(cache.holds('a', code('aaaa'))).toBe(false);
    const b = (await cache.get('b', async () => code('bbbb'))).code;
    b.bytes.write('BBBB');
    await cache.get('b', async () => code('bbbb'));
    await cache.get('c', async () => code('cccc'));
    expect(evicted).toEqual(['BBBB', 'aaaa']);
    expect(cache.holds('a', a)).toBe(false);
  });

  test('does not keep code larger than the whole cache', async () => {
    const cache = new CodeCache({ ...byLength, maxBytes: 3 });
    await cache.get('big', async () => code('toolarge'));
    expect(cache.size).toBe(0);
    expect(cache.bytes).toBe(0);
  });

  test('refetches an entry whose bytes no longer match their sha256', async () => {
    const cache = new CodeCache({ ...byLength, maxBytes: 1024 });
    const stored = code('original');
    await cache.get('a', async () => stored);
    stored.bytes.write('corrupt!');
    const fetch = vi.fn(async () => code('original'));
    const again = await cache.get('a', fetch);
    expect(fetch).toHaveBeenCalledTimes(1);
    expect(again).toMatchObject({ hit: false, code: code('original') });
  });

  test('concurrent first requests for one code_id share a single fetch, kept once', async () => {
    const onEvict = vi.fn();
    const cache = new CodeCache({ ...byLength, maxBytes: 1024, onEvict });
    let release!: (value: ReturnType<typeof code>) => void;
    const fetch = vi.fn(() => new Promise<ReturnType<typeof code>>((resolve) => (release = resolve)));
    const all = Promise.all([cache.get('a', fetch), cache.get('a', fetch), cache.get('a', fetch)]);
    release(code('A'));
    const results = await all;
    expect(fetch).toHaveBeenCalledTimes(1);
    expect(results.map((result) => result.code.bytes.toString())).toEqual(['A', 'A', 'A']);
    expect(cache.holds('a', results[0]!.code)).toBe(true);
    expect(cache.bytes).toBe(1);
    expect(onEvict).not.toHaveBeenCalled();
  });

  test('a failed fetch is shared by its joiners and not cached', async () => {
    const cache = new CodeCache({ ...byLength, maxBytes: 1024 });
    const failing = vi.fn(async () => {
      throw new ServiceError('CODE_NOT_FOUND');
    });
    const results = await Promise.allSettled([cache.get('a', failing), cache.get('a', failing)]);
    expect(results.map((result) => result.status)).toEqual(['rejected', 'rejected']);
    expect(failing).toHaveBeenCalledTimes(1);
    expect((await cache.get('a', async () => code('A'))).hit).toBe(false);
  });

  test('a fetch abandoned by its client does not fail the requests that joined it', async () => {
    const cache = new CodeCache({ ...byLength, maxBytes: 1024 });
    let abandon!: (error: Error) => void;
    const first = cache.get('a', () => new Promise<ReturnType<typeof code>>((_, reject) => (abandon = reject)));
    const joined = cache.get('a', async () => code('A'));
    abandon(new ServiceError('CLIENT_CLOSED'));
    await expect(first).rejects.toMatchObject({ code: 'CLIENT_CLOSED' });
    expect((await joined).code.bytes.toString()).toBe('A');
  });
});
