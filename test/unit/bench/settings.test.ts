import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, expect, test } from 'vitest';
import { readSettings } from '../../../bench/settings.js';
import { tempDirsRemovedAfterEach } from '../../helpers/tempDirs.js';

describe("the bench's settings", () => {
  const dirs = tempDirsRemovedAfterEach();

  test('run no build before this one unless BENCH_BASELINE names one', () => {
    expect(readSettings({}).baseline).toBeUndefined();
    expect(readSettings({ BENCH_BASELINE: '' }).baseline).toBeUndefined();
  });

  test('take a built checkout as the build before, by its absolute root', async () => {
    const root = await dirs.make('oyster-baseline-');
    await mkdir(path.join(root, 'dist', 'src'), { recursive: true });
    await writeFile(path.join(root, 'dist', 'src', 'main.js'), '');
    const relative = path.relative(process.cwd(), root);
    expect(readSettings({ BENCH_BASELINE: relative }).baseline).toBe(root);
  });

  test('refuse a checkout that is not built, naming the setting', async () => {
    const root = await dirs.make('oyster-baseline-');
    expect(() => readSettings({ BENCH_BASELINE: root })).toThrow(/^BENCH_BASELINE must be a built checkout/);
  });

  test('warm every loaded side up with 3,000 invocations unless BENCH_WARMUP_LOAD says otherwise, 0 for none', () => {
    expect(readSettings({}).warmupInvocations).toBe(3000);
    expect(readSettings({ BENCH_WARMUP_LOAD: '0' }).warmupInvocations).toBe(0);
    expect(() => readSettings({ BENCH_WARMUP_LOAD: '-1' })).toThrow(/^BENCH_WARMUP_LOAD must be an integer >= 0/);
  });

  test('refuse a bad number, naming the setting', () => {
    expect(() => readSettings({ BENCH_SAMPLES: '0' })).toThrow(/^BENCH_SAMPLES must be an integer >= 1/);
    expect(() => readSettings({ BENCH_IDLE_S: 'soon' })).toThrow(/^BENCH_IDLE_S must be a positive number/);
  });
});
