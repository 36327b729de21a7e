import { describe, expect, test } from 'vitest';
import { median, pairedRatioMedian, pairedRatios, percentile, summarize } from '../../../bench/stats.js';

describe('percentile', () => {
  test('interpolates linearly between the two nearest ranks', () => {
    const values = [10, 20, 30, 40];
    expect(percentile(values, 0)).toBe(10);
    expect(percentile(values, 50)).toBe(25);
    expect(percentile(values, 100)).toBe(40);
    // rank 0.95 * 3 = 2.85: 30 + 0.85 * (40 - 30)
    expect(percentile(values, 95)).toBeCloseTo(38.5, 10);
  });

  test('does not depend on the order of the values, nor change them', () => {
    const values = [5, 1, 4, 2, 3];
    expect(percentile(values, 50)).toBe(3);
    expect(values).toEqual([5, 1, 4, 2, 3]);
  });

  test('p99 of 1..100 is just below the maximum', () => {
    const values = Array.from({ length: 100 }, (_, i) => i + 1);
    expect(percentile(values, 99)).toBeCloseTo(99.01, 10);
    expect(percentile(values, 50)).toBe(50.5);
  });

  test('of one value is that value; of none is NaN', () => {
    expect(percentile([7], 99)).toBe(7);
    expect(percentile([], 50)).toBeNaN();
  });

  test('refuses a percentile outside 0..100', () => {
    expect(() => percentile([1], 101)).toThrow(RangeError);
    expect(() => percentile([1], -1)).toThrow(RangeError);
    expect(() => percentile([1], Number.NaN)).toThrow(RangeError);
  });
});

describe('median', () => {
  test('is the middle value, or the mean of the middle two', () => {
    expect(median([3, 1, 2])).toBe(2);
    expect(median([4, 1, 3, 2])).toBe(2.5);
  });
});

describe('summarize', () => {
  test('ignores failed samples', () => {
    const summary = summarize([10, undefined, 30, 20, undefined]);
    expect(summary).toMatchObject({ n: 3, min: 10, max: 30, mean: 20, p50: 20 });
  });

  test('of no successful sample is all NaN with n 0', () => {
    const summary = summarize([undefined]);
    expect(summary.n).toBe(0);
    expect(summary.p50).toBeNaN();
    expect(summary.mean).toBeNaN();
  });
});

describe('paired ratios', () => {
  test('divide round by round, skipping rounds where either side failed', () => {
    expect(pairedRatios([20, 30, undefined, 40], [10, 10, 10, undefined])).toEqual([2, 3]);
  });

  test('a constant factor survives drift that hits both sides in the same rounds', () => {
    const limit = [10, 10, 100, 100, 10];
    const service = [11, 11, 110, 110, 11];
    expect(pairedRatioMedian(service, limit)).toBeCloseTo(1.1, 10);
  });

  test('pair by round, unlike the ratio of the medians', () => {
    const limit = [10, 20, 30];
    const service = [30, 10, 20];
    // Ratios 3, 0.5 and 0.667; the medians alone would say 20 / 20 = 1.
    expect(pairedRatioMedian(service, limit)).toBeCloseTo(2 / 3, 10);
    expect(median(service) / median(limit)).toBe(1);
  });

  test('median of an even number of ratios is the mean of the middle two', () => {
    expect(pairedRatioMedian([1, 2, 3, 4], [1, 1, 1, 1])).toBe(2.5);
  });

  test('skip a zero or missing denominator, and are NaN when no round pairs up', () => {
    expect(pairedRatios([1, 2], [0, 1])).toEqual([2]);
    expect(pairedRatioMedian([undefined], [1])).toBeNaN();
  });

  test('refuse samples of different lengths', () => {
    expect(() => pairedRatios([1, 2], [1])).toThrow(RangeError);
  });
});
