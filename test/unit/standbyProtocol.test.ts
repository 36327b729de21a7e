import { describe, expect, test } from 'vitest';
import { splitRuns } from '../../src/sandbox/standbyProtocol.js';

describe('splitRuns', () => {
  const marker = 'f'.repeat(32);
  const stream = `first run\n${marker} 1 0\nsecond, with no newline${marker} 2 137\nthird\n${marker} 3 1\n`;
  const split = (chunks: string[]) => {
    const output: string[] = [''];
    const ends: Array<[number, number]> = [];
    const runs = splitRuns(
      marker,
      (chunk) => (output[output.length - 1] += chunk.toString()),
      (turn, status) => {
        ends.push([turn, status]);
        output.push('');
      },
    );
    for (const chunk of chunks) runs.push(Buffer.from(chunk));
    return { output, ends };
  };

  test('cuts the output at each end line, wherever the chunks break', () => {
    const whole = split([stream]);
    expect(whole).toEqual({
      output: ['first run\n', 'second, with no newline', 'third\n', ''],
      ends: [
        [1, 0],
        [2, 137],
        [3, 1],
      ],
    });
    for (let at = 1; at < stream.length; at += 1) expect(split([stream.slice(0, at), stream.slice(at)])).toEqual(whole);
    expect(split([...stream])).toEqual(whole);
  });

  test('takes a line with the marker that is not an end line as neither output nor an end', () => {
    expect(split([`a${marker} x\nb${marker} 1 0\n`])).toEqual({ output: ['ab', ''], ends: [[1, 0]] });
  });

  test('holds back only output that could be the start of a marker, until the next chunk', () => {
    expect(split(['plain output']).output).toEqual(['plain output']);
    expect(split([`output, then ${marker.slice(0, 5)}`]).output).toEqual(['output, then ']);
  });
});
