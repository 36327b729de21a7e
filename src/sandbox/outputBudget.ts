import type { Readable } from 'node:stream';

/** The window in which a standby's output may be read maxReadsPerWindow times. */
const windowMs = 100;
/**
 * Reads of one standby's output in a window: far more than a function that prints now and then
 * causes, far fewer than a function printing line after line would (one read per line).
 */
const maxReadsPerWindow = 50;

/**
 * Reads a stream within a budget of reads per window: past it, the stream is paused until the
 * window ends. A function that prints without end then fills its pipe, and its workerd waits for
 * the next window, in its own cgroup; each read after a pause takes a whole pipe's worth, so the
 * service spends at most a few hundred reads a second on it, however much it prints, and still
 * reads every byte (the last of them are the error the answer carries).
 */
export function readWithinBudget(stream: Readable, onChunk: (chunk: Buffer) => void): void {
  let windowStart = Number.NEGATIVE_INFINITY;
  let reads = 0;
  stream.on('data', (chunk: Buffer) => {
    onChunk(chunk);
    const now = performance.now();
    if (now - windowStart >= windowMs) {
      windowStart = now;
      reads = 0;
    }
    reads += 1;
    if (reads < maxReadsPerWindow) return;
    stream.pause();
    setTimeout(() => stream.resume(), Math.ceil(windowStart + windowMs - now));
  });
}
