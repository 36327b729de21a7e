import { describe, expect, test } from 'vitest';
import { exceptionFirst } from '../../src/capacity/failure.js';

describe("an error answer's output, exception first", () => {
  test("moves the first uncaught exception and its stack to the front, without the guard's frames", () => {
    const output = [
      'hello',
      'Uncaught TypeError: boom',
      '    at Object.fetch (main.js:9:35)',
      '    at __oyster_guard__.js:139:112',
      '    at Object.guarded (__oyster_guard__.js:75:21)',
      'after',
    ].join('\n');
    expect(exceptionFirst(output)).toBe(
      ['Uncaught TypeError: boom', '    at Object.fetch (main.js:9:35)', 'hello', 'after'].join('\n'),
    );
  });

  test('leaves output without an uncaught exception as it is', () => {
    expect(exceptionFirst('a\n    at __oyster_guard__.js:1:1\nb')).toBe('a\n    at __oyster_guard__.js:1:1\nb');
  });
});
