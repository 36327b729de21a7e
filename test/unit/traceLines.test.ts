import { describe, expect, test } from 'vitest';
import { maxTraceLineBytes, parseTrace, TraceLineScanner, withoutTraceLine } from '../../src/sandbox/traceLines.js';

const marker = 'S3CRET trace ';
const payload = JSON.stringify({
  events: [{ logs: [{ level: 'log', timestamp: 1_700_000_000_000, message: ['hi'] }], exceptions: [] }],
  caught: [{ name: 'TypeError', message: 'boom', stack: 'TypeError: boom\n    at main.js:1:1' }],
});

// Feeds a scanner the chunks and returns the payloads it found.
function scan(chunks: readonly (string | Buffer)[]): string[] {
  const found: string[] = [];
  const scanner = new TraceLineScanner(marker, (line) => found.push(line));
  for (const chunk of chunks) scanner.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk));
  return found;
}

describe('the trace line scanner', () => {
  test("finds a module worker's trace line among other output, split across chunks anywhere", () => {
    const output = `hello\n${marker}${payload}\nafter\n`;
    for (let cut = 1; cut < output.length; cut += 7) {
      expect(scan([output.slice(0, cut), output.slice(cut)])).toEqual([payload]);
    }
  });

  test('splits a multi-byte character across chunks without harm', () => {
    const withAccent = JSON.stringify({ events: [{ logs: [{ level: 'log', timestamp: 1, message: ['é€'] }] }] });
    const bytes = Buffer.from(`${marker}${withAccent}\n`);
    const cut = bytes.indexOf(Buffer.from('€')) + 1;
    expect(scan([bytes.subarray(0, cut), bytes.subarray(cut)])).toEqual([withAccent]);
  });

  test("finds a service worker's trace line, which workerd prints as the console call's JSON arguments", () => {
    const printed = `workerd/io/worker.c++:1234: info: console.log(); message() = ${JSON.stringify([`${marker}${payload}`])}\n`;
    expect(scan(['noise\n', printed])).toEqual([payload]);
  });

  test('ignores the marker where a line does not begin with it and is not a console call of the guard', () => {
    expect(scan([`user said ${marker}{}\n`, `x message() = ["not the ${marker}"]\n`])).toEqual([]);
  });

  test('takes only the first trace line of a run', () => {
    expect(scan([`${marker}{"a":1}\n${marker}{"b":2}\n`])).toEqual(['{"a":1}']);
  });

  test('drops a line longer than maxTraceLineBytes, and still finds the next one', () => {
    const long = `${marker}${'x'.repeat(maxTraceLineBytes)}\n`;
    const chunks = [long.slice(0, 1000), long.slice(1000), `${marker}{"ok":true}\n`];
    expect(scan(chunks)).toEqual(['{"ok":true}']);
  });

  test('waits for the end of the line: an unfinished one is not taken', () => {
    expect(scan([`${marker}${payload}`])).toEqual([]);
  });
});

describe('parsing the trace', () => {
  test("workerd's console lines and exceptions, then what the guard caught", () => {
    expect(parseTrace(payload)).toEqual({
      traced: true,
      logs: [{ level: 'log', atMs: 1_700_000_000_000, message: ['hi'] }],
      exceptions: [{ name: 'TypeError', message: 'boom', stack: 'TypeError: boom\n    at main.js:1:1' }],
    });
  });

  test('JSON that is not what the guard writes gives an empty trace', () => {
    expect(parseTrace('not json')).toEqual({ traced: true, logs: [], exceptions: [] });
    expect(parseTrace('{"events":3,"caught":"x"}')).toEqual({ traced: true, logs: [], exceptions: [] });
  });
});

describe('output without the trace line', () => {
  test('keeps every other line', () => {
    expect(withoutTraceLine(`a\n${marker}${payload}\nb`, marker)).toBe('a\nb');
    expect(withoutTraceLine('a\nb', marker)).toBe('a\nb');
  });
});
