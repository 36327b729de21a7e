import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { describe, expect, test } from 'vitest';
import { serviceNodeFlags } from '../../src/serviceNodeFlags.js';
import { projectRoot } from '../helpers/projectRoot.js';

// Two places that start the service cannot import the flags: each must pass them all.
describe('the Node flags of the service', () => {
  test('npm start passes them', async () => {
    const { scripts } = JSON.parse(await readFile(path.join(projectRoot, 'package.json'), 'utf8')) as {
      scripts: Record<string, string>;
    };
    expect(scripts.start).toBe(`node ${serviceNodeFlags.join(' ')} dist/src/main.js`);
  });

  test('supervisord passes them', async () => {
    const conf = await readFile(path.join(projectRoot, 'supervisord.conf'), 'utf8');
    expect(conf).toContain(`\ncommand=node ${serviceNodeFlags.join(' ')} %(here)s/dist/src/main.js\n`);
  });
});

// The collection after a burst (src/idleCollector.ts), as the service runs it: under the service's
// flags gc() exists, and the compacting collection gives back the pages that held old-generation
// garbage (on Node 20 a plain gc() keeps them). Collected from a timer, once the burst's code has
// returned, as in the service.
const burstThenCollect = (idleCollector: string) => `
import v8 from 'node:v8';
import { compactingCollection } from ${JSON.stringify(idleCollector)};
const oldSpace = () => v8.getHeapSpaceStatistics().find((space) => space.space_name === 'old_space').space_size;
gc();
const before = oldSpace();
let items = [];
for (let i = 0; i < 300000; i++) items.push({ i, text: 'item ' + i });
gc();
gc();
const survivors = items.filter((_, i) => i % 50 === 0);
items = undefined;
const grown = oldSpace();
setTimeout(() => {
  compactingCollection(gc)();
  console.log(JSON.stringify({ before, grown, after: oldSpace(), survivors: survivors.length }));
});
`;

describe('the Node flags of the service, at work', () => {
  test('the compacting collection after a burst gives back the heap the burst grew', async () => {
    const idleCollector = pathToFileURL(path.join(projectRoot, 'dist/src/idleCollector.js')).href;
    const { stdout } = await promisify(execFile)(process.execPath, [
      ...serviceNodeFlags,
      '--input-type=module',
      '-e',
      burstThenCollect(idleCollector),
    ]);
    const { before, grown, after } = JSON.parse(stdout) as { before: number; grown: number; after: number };
    const mb = 1024 * 1024;
    expect(grown - before).toBeGreaterThan(15 * mb);
    expect(after - before).toBeLessThan(3 * mb);
  });
});
