import { describe, expect, test } from 'vitest';
import { maxTraceLineBytes, parseTrace, TraceLineFilter } from '../../src/sandbox/traceLines.js';

const marker = 'S3CRET trace ';
const payload = JSON.stringify({
  events: [{ logs: [{ level: 'log', timestamp: 1_700_000_000_000, message: ['hi'] }], exceptions: [] }],
  caught: [{ name: 'TypeError', message: 'boom', stack: 'TypeError: boom\n    at main.js:1:1' }],
});

// Feeds a filter the chunks, then ends the run: the payloads it found, and the output it passed on.
function filter(chunks: readonly (string | Buffer)[]): { found: string[]; passed: string } {
  const found: string[] = [];
  const passed: Buffer[] = [];
  const lines = new TraceLineFilter(
    marker,
    (line) => found.push(line),
    (bytes) => passed.push(bytes),
  );
  for (const chunk of chunks) lines.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk));
  lines.flush();
  return { found, passed: Buffer.concat(passed).toString('utf8') };
}
const scan = (chunks: readonly (string | Buffer)[]) => filter(chunks).found;

describe('the trace line filter', () => {
  test("takes a module worker's trace line out of the output, split across chunks anywhere, and passes on the rest", () => {
    const output = `hello\n${marker}${payload}\nafter\nunfinished`;
    for (let cut = 1; cut < output.length; cut += 7) {
      expect(filter([output.slice(0, cut), output.slice(cut)])).toEqual({
        found: [payload],
        passed: 'hello\nafter\nunfinished',
      });
    }
  });

  test('passes on output without the marker unchanged, long lines and chunks without a line end included', () => {
    const long = 'y'.repeat(10_000);
    expect(filter(['a\nb', `c\n${long}`, `${long}\nd`]).passed).toBe(`a\nbc\n${long}${long}\nd`);
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

  test('passes on a line with the marker where it does not begin it and is not a console call of the guard', () => {
    const lines = `user said ${marker}{}\nx message() = ["not the ${marker}"]\n`;
    expect(filter([lines])).toEqual({ found: [], passed: lines });
  });

  test('hands on only the first trace line of a run, and passes on neither', () => {
    expect(filter([`${marker}{"a":1}\nx\n${marker}{"b":2}\n`])).toEqual({ found: ['{"a":1}'], passed: 'x\n' });
  });

  test('drops a line longer than maxTraceLineBytes, from the output too, and still finds the next one', () => {
    const long = `${marker}${'x'.repeat(maxTraceLineBytes)}\n`;
    const chunks = ['before\n', long.slice(0, 1000), long.slice(1000), `${marker}{"ok":true}\nafter\n`];
    expect(filter(chunks)).toEqual({ found: ['{"ok":true}'], passed: 'before\nafter\n' });
  });

  test('waits for the end of the line: an unfinished trace line is neither taken nor passed on', () => {
    expect(filter([`${marker}${payload}`])).toEqual({ found: [], passed: '' });
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
