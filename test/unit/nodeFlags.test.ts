import { readFile } from 'node:fs/promises';
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
