import { afterEach, beforeEach, describe, expect, test, vi } from 'vitest';
import { IdleCollector } from '../../src/idleCollector.js';

const idleMs = 1_000;

describe('the collection after a burst of requests', () => {
  let collector: IdleCollector | undefined;
  beforeEach(() => vi.useFakeTimers());
  afterEach(() => {
    collector?.close();
    vi.useRealTimers();
  });

  const start = (options: { idleMs?: number; collect?: (() => void) | undefined } = {}) => {
    const collect = vi.fn();
    const onCollected = vi.fn();
    collector = new IdleCollector({
      idleMs: options.idleMs ?? idleMs,
      collect: 'collect' in options ? options.collect : collect,
      onCollected,
    });
    return { collector, collect, onCollected };
  };

  test('runs once, idleMs after the last request began or ended, and reports it', () => {
    const { collector, collect, onCollected } = start();
    collector.activity();
    vi.advanceTimersByTime(idleMs - 1);
    expect(collect).not.toHaveBeenCalled();
    vi.advanceTimersByTime(1);
    expect(collect).toHaveBeenCalledTimes(1);
    expect(onCollected).toHaveBeenCalledWith(expect.any(Number));
  });

  test('waits while requests keep coming', () => {
    const { collector, collect } = start();
    for (let i = 0; i < 10; i++) {
      collector.activity();
      vi.advanceTimersByTime(idleMs / 2);
    }
    expect(collect).not.toHaveBeenCalled();
    vi.advanceTimersByTime(idleMs / 2);
    expect(collect).toHaveBeenCalledTimes(1);
  });

  test('does not run for an idle service, nor twice for one burst', () => {
    const { collector, collect } = start();
    vi.advanceTimersByTime(idleMs * 5);
    expect(collect).not.toHaveBeenCalled();
    collector.activity();
    vi.advanceTimersByTime(idleMs * 5);
    expect(collect).toHaveBeenCalledTimes(1);
  });

  test('runs again after the next burst', () => {
    const { collector, collect } = start();
    collector.activity();
    vi.advanceTimersByTime(idleMs);
    collector.activity();
    vi.advanceTimersByTime(idleMs);
    expect(collect).toHaveBeenCalledTimes(2);
  });

  test('never runs with idleMs 0, without a collect function, or once closed', () => {
    const off = start({ idleMs: 0 });
    off.collector.activity();
    vi.advanceTimersByTime(idleMs * 5);
    expect(off.collect).not.toHaveBeenCalled();

    const without = start({ collect: undefined });
    without.collector.activity();
    vi.advanceTimersByTime(idleMs * 5);
    expect(without.onCollected).not.toHaveBeenCalled();

    const closed = start();
    closed.collector.activity();
    closed.collector.close();
    vi.advanceTimersByTime(idleMs * 5);
    expect(closed.collect).not.toHaveBeenCalled();
  });

  test.each([-1, 1.5, Number.NaN])('refuses idleMs %s, naming it', (value) => {
    expect(() => new IdleCollector({ idleMs: value, collect: vi.fn() })).toThrow(/idleMs/);
  });
});
