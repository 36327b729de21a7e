import { describe, expect, test } from 'vitest';
import { orderForRound } from '../../../bench/latency.js';
import { parseServerTiming } from '../../../bench/sides.js';

describe('orderForRound', () => {
  const sides = ['a', 'b', 'c', 'd'];

  test('runs every side once per round', () => {
    for (let round = 0; round < 16; round += 1) expect([...orderForRound(sides, round)].sort()).toEqual(sides);
  });

  test('starts with each side equally often and lets each side follow different neighbours', () => {
    const rounds = Array.from({ length: 8 }, (_, round) => orderForRound(sides, round));
    const firsts = rounds.map((order) => order[0]);
    for (const side of sides) expect(firsts.filter((first) => first === side)).toHaveLength(2);
    const before = new Set(rounds.map((order) => order[order.indexOf('c') - 1]).filter(Boolean));
    expect(before.size).toBeGreaterThan(1);
  });
});

describe('parseServerTiming', () => {
  test('reads name;dur=ms metrics and skips those without a duration', () => {
    expect(
      parseServerTiming('admission;dur=0.4, attestation;desc="GET";dur=1.25,cache;desc=hit, start;dur="30"'),
    ).toEqual([
      ['admission', 0.4],
      ['attestation', 1.25],
      ['start', 30],
    ]);
  });

  test('of no header is nothing', () => {
    expect(parseServerTiming(undefined)).toEqual([]);
  });
});
