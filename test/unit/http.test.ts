import { Readable } from 'node:stream';
import { describe, expect, test } from 'vitest';
import { BodyTooLargeError, readCapped, startDeadline } from '../../src/http.js';

describe('readCapped', () => {
  test('reads a body up to the cap', async () => {
    expect((await readCapped(Readable.from([Buffer.from('ab'), Buffer.from('cd')]), 4)).toString()).toBe('abcd');
  });

  test('stops reading an endless body as soon as it passes the cap', async () => {
    let produced = 0;
    const endless = new Readable({
      read() {
        produced += 1024;
        this.push(Buffer.alloc(1024));
      },
    });
    await expect(readCapped(endless, 10_000)).rejects.toBeInstanceOf(BodyTooLargeError);
    expect(produced).toBeLessThan(100 * 1024);
    expect(endless.destroyed).toBe(true);
  });
});

describe('startDeadline', () => {
  test('fires with a TimeoutError when its time is up', async () => {
    const deadline = startDeadline(new AbortController().signal, 20);
    await new Promise((resolve) => deadline.signal.addEventListener('abort', resolve));
    expect((deadline.signal.reason as Error).name).toBe('TimeoutError');
  });

  test('fires with the parent\'s reason when the parent aborts first', () => {
    const parent = new AbortController();
    const deadline = startDeadline(parent.signal, 10_000);
    parent.abort(new Error('client gone'));
    expect((deadline.signal.reason as Error).message).toBe('client gone');
  });

  test('does not fire once cleared', async () => {
    const deadline = startDeadline(new AbortController().signal, 10);
    deadline.clear();
    await new Promise((resolve) => setTimeout(resolve, 30));
    expect(deadline.signal.aborted).toBe(false);
  });
});
