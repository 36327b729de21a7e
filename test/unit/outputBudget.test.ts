import { PassThrough } from 'node:stream';
import { describe, expect, test } from 'vitest';
import { readWithinBudget } from '../../src/sandbox/outputBudget.js';

describe("reading a standby's output within a budget", () => {
  // A pipe hands over all that piled up in one read after a pause; this stream keeps its writes
  // apart, so it shows the budget, and the abuse test shows the pipe.
  test('reads a flood of small writes at most 50 times in 100 ms, and every byte in the end', async () => {
    const stream = new PassThrough();
    const readAt: number[] = [];
    let bytes = 0;
    readWithinBudget(stream, (chunk) => {
      readAt.push(performance.now());
      bytes += chunk.length;
    });
    const started = performance.now();
    // One write per turn of the event loop, as a printing function's lines arrive.
    for (let i = 0; i < 300; i += 1) {
      stream.write(Buffer.alloc(10, 'x'));
      await new Promise((resolve) => setImmediate(resolve));
    }
    stream.end();
    await new Promise((resolve) => stream.once('end', resolve));
    expect(bytes).toBe(3000);
    const inFirstWindow = readAt.filter((at) => at - started < 100).length;
    expect(inFirstWindow).toBeLessThanOrEqual(50);
    // Paused, not dropped: the reads resume in the next window.
    expect(readAt.some((at) => at - started >= 100)).toBe(true);
  });
});
