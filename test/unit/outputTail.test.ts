import { describe, expect, test } from 'vitest';
import { OutputTail } from '../../src/sandbox/outputTail.js';

describe('OutputTail', () => {
  test('keeps everything while under its limit', () => {
    const tail = new OutputTail(100);
    tail.push(Buffer.from('first '));
    tail.push(Buffer.from('second'));
    expect(tail.text()).toBe('first second');
  });

  test('keeps only the last maxBytes of a long stream, holding little more than that', () => {
    const tail = new OutputTail(1024);
    for (let i = 0; i < 10_000; i += 1) tail.push(Buffer.from(`line ${i}\n`.padStart(100, '.')));
    const text = tail.text();
    expect(text.length).toBe(1024);
    expect(text.endsWith('line 9999\n')).toBe(true);
  });

  test('cuts a single chunk larger than the limit to its end', () => {
    const tail = new OutputTail(4);
    tail.push(Buffer.from('abcdefgh'));
    expect(tail.text()).toBe('efgh');
  });
});
