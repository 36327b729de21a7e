import { describe, expect, test } from 'vitest';
import { codeMemoryLimit, v8HeapFlags } from '../../src/sandbox/heapLimit.js';

const MiB = 1024 * 1024;

describe("V8's heap limits for a workerd", () => {
  test("leave room under the cgroup's limit for workerd itself: 64 MiB, with a young generation of 2 MiB", () => {
    expect(v8HeapFlags(100 * MiB)).toEqual(['--max-old-space-size=36', '--max-semi-space-size=2']);
    expect(v8HeapFlags(512 * MiB)).toEqual(['--max-old-space-size=448', '--max-semi-space-size=2']);
  });

  test('give at least 16 MiB of old generation, however small the cgroup', () => {
    expect(v8HeapFlags(40 * MiB)[0]).toBe('--max-old-space-size=16');
  });

  test("are V8's own where the cgroup has no limit", () => {
    expect(v8HeapFlags(undefined)).toEqual([]);
  });
});

describe("code's own memory limit", () => {
  test("is what it asks for, up to its cgroup's", () => {
    expect(codeMemoryLimit(128, 256 * MiB)).toBe(128 * MiB);
    expect(codeMemoryLimit(256, 256 * MiB)).toBe(256 * MiB);
    expect(codeMemoryLimit(undefined, 256 * MiB)).toBe(256 * MiB);
    expect(codeMemoryLimit(64, undefined)).toBe(64 * MiB);
  });

  test("an ask past the cgroup's is refused with LIMIT_NOT_ALLOWED, never held to it", () => {
    expect(() => codeMemoryLimit(257, 256 * MiB)).toThrow(
      expect.objectContaining({ code: 'LIMIT_NOT_ALLOWED', status: 400 }),
    );
  });
});
