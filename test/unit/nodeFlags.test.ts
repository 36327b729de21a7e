import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { promisify } from 'node:util';
import path from 'node:path';
import { describe, expect, test } from 'vitest';
import { serviceNodeFlags } from '../../src/nodeFlags.js';

const projectRoot = path.resolve(import.meta.dirname, '../..');

// Two places that start the service cannot import the flags: each must pass them all.
describe('the Node flags of the service', () => {
  test('npm start passes them', async () => {
    const { scripts } = JSON.parse(await readFile(path.join(projectRoot, 'package.json'), 'utf8')) as { scripts: Record<string, string> };
    expect(scripts.start).toBe(`node ${serviceNodeFlags.join(' ')} dist/src/main.js`);
  });

  test('supervisord passes them', async () => {
    const conf = await readFile(path.join(projectRoot, 'supervisord.conf'), 'utf8');
    expect(conf).toContain(`\ncommand=node ${serviceNodeFlags.join(' ')} %(here)s/dist/src/main.js\n`);
  });
});

// What the collection after a burst relies on (src/idleCollector.ts): under these flags gc() exists
// and gives back the pages of old-generation garbage that survived long enough to be promoted.
const burstThenCollect = `
const v8 = require('node:v8');
const oldSpace = () => v8.getHeapSpaceStatistics().find((space) => space.space_name === 'old_space').space_size;
gc();
const before = oldSpace();
let burst = [];
for (let i = 0; i < 300000; i++) burst.push({ i, text: 'item ' + i });
gc();
gc();
const survivors = burst.filter((_, i) => i % 50 === 0);
burst = undefined;
const grown = oldSpace();
// As in the service: from a timer, once the burst's code has returned.
setTimeout(() => {
  gc();
  console.log(JSON.stringify({ before, grown, after: oldSpace(), survivors: survivors.length }));
});
`;

describe('the Node flags of the service, at work', () => {
  test('a gc() after a burst gives back the heap the burst grew', async () => {
    const { stdout } = await promisify(execFile)(process.execPath, [...serviceNodeFlags, '-e', burstThenCollect]);
    const { before, grown, after } = JSON.parse(stdout) as { before: number; grown: number; after: number };
    const mb = 1024 * 1024;
    expect(grown - before).toBeGreaterThan(15 * mb);
    expect(after - before).toBeLessThan(3 * mb);
  });
});
