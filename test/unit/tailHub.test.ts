import { describe, expect, test } from 'vitest';
import { isServiceError } from '../../src/errors.js';
import { maxQueuedBytes, maxTails, TailHub } from '../../src/tail/tailHub.js';

// A reader's side of a tail: what it was sent, and whether its buffer is full (as a socket's write() says).
function reader() {
  const chunks: string[] = [];
  const sink = {
    full: false,
    ended: false,
    write: (chunk: string) => {
      chunks.push(chunk);
      return !sink.full;
    },
    end: () => {
      sink.ended = true;
    },
  };
  const events = () => chunks.filter((chunk) => !chunk.startsWith(':')).map(parse);
  return { sink, chunks, events };
}

function parse(chunk: string): { type: string; data: Record<string, unknown> } {
  const [, type, data] = /^event: (.*)\ndata: (.*)\n\n$/.exec(chunk)!;
  return { type: type!, data: JSON.parse(data!) };
}

describe('the tail hub', () => {
  test('sends each event to every tail on its code_id, and to none on another', () => {
    const hub = new TailHub();
    const [a, b, other] = [reader(), reader(), reader()];
    hub.openTail('fn', a.sink);
    hub.openTail('fn', b.sink);
    hub.openTail('other', other.sink);
    hub.publish('fn', { n: 1 });
    expect(a.events()).toEqual([{ type: 'invocation', data: { n: 1 } }]);
    expect(b.events()).toEqual([{ type: 'invocation', data: { n: 1 } }]);
    expect(other.events()).toEqual([]);
  });

  test('a reader that falls behind: held up to maxQueuedBytes, then lost, and told how many once it drains', () => {
    const hub = new TailHub();
    const slow = reader();
    const fast = reader();
    const tail = hub.openTail('fn', slow.sink);
    hub.openTail('fn', fast.sink);
    const padding = 'x'.repeat(100 * 1024);
    slow.sink.full = true;
    const offered = 30;
    for (let n = 0; n < offered; n += 1) hub.publish('fn', { n, padding });
    expect(tail.queuedBytes).toBeLessThanOrEqual(maxQueuedBytes);
    expect(tail.lost).toBeGreaterThan(0);
    // The one written when the buffer filled, and nothing more until it drains.
    expect(slow.events()).toHaveLength(1);
    expect(fast.events()).toHaveLength(offered);

    slow.sink.full = false;
    tail.drained();
    const events = slow.events();
    const invocations = events.filter((event) => event.type === 'invocation').map((event) => event.data.n);
    const lost = events.at(-1)!;
    expect(lost.type).toBe('lost');
    expect(invocations).toEqual([...invocations].sort((x, y) => Number(x) - Number(y)));
    expect(invocations.length + Number(lost.data.lost)).toBe(offered);
    expect(tail.queuedBytes).toBe(0);
  });

  test('events stay in order: once one is lost, later ones are too until the reader catches up', () => {
    const hub = new TailHub();
    const slow = reader();
    const tail = hub.openTail('fn', slow.sink);
    slow.sink.full = true;
    hub.publish('fn', { n: 0 });
    hub.publish('fn', { n: 1, padding: 'x'.repeat(maxQueuedBytes) });
    hub.publish('fn', { n: 2 });
    expect(tail.lost).toBe(2);
    slow.sink.full = false;
    tail.drained();
    expect(slow.events()).toEqual([
      { type: 'invocation', data: { n: 0 } },
      { type: 'lost', data: { lost: 2 } },
    ]);
  });

  test(`refuses a tail past ${maxTails} with TAIL_LIMIT, and takes one again once one closes`, () => {
    const hub = new TailHub();
    const tails = Array.from({ length: maxTails }, () => hub.openTail('fn', reader().sink));
    expect(hub.open).toBe(maxTails);
    let refused: unknown;
    try {
      hub.openTail('fn', reader().sink);
    } catch (error) {
      refused = error;
    }
    expect(isServiceError(refused, 'TAIL_LIMIT')).toBe(true);
    tails[0]!.close();
    expect(hub.open).toBe(maxTails - 1);
    expect(() => hub.openTail('fn', reader().sink)).not.toThrow();
  });

  test('a closed tail gets nothing more and no longer counts; closeAll ends every stream', () => {
    const hub = new TailHub();
    const gone = reader();
    const staying = reader();
    hub.openTail('fn', gone.sink).close();
    hub.openTail('fn', staying.sink);
    hub.publish('fn', { n: 1 });
    expect(gone.events()).toEqual([]);
    expect(hub.watching('fn')).toBe(true);
    hub.closeAll();
    expect(staying.sink.ended).toBe(true);
    expect(hub.open).toBe(0);
    expect(hub.watching('fn')).toBe(false);
  });
});
