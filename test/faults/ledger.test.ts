import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import Database from 'better-sqlite3';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import type { RunningServer } from '../../src/dev/listen.js';
import { makeTempDir, removeTempDir } from '../../src/dev/tempDir.js';
import { cgroupsOrSkip, createTestPool, type TestPool } from '../helpers/cgroups.js';
import { serviceEnv, startService } from '../helpers/service.js';
import { examplesDir } from '../helpers/stack.js';
import { startUpstreams } from '../helpers/upstreams.js';

const cgroups = await cgroupsOrSkip();

const clients = 6;
const killAfterMs = 1_500;

describe.runIf(cgroups)('the usage ledger when the service is killed', () => {
  let attestation: RunningServer;
  let storage: RunningServer;
  let pool: TestPool;
  let dir: string;
  beforeAll(async () => {
    ({ attestation, storage } = await startUpstreams([examplesDir]));
    pool = await createTestPool({ count: 3 });
    dir = await makeTempDir('oyster-ledger-kill-');
  });
  afterAll(async () => {
    await pool?.remove();
    await Promise.all([attestation?.close(), storage?.close()]);
    if (dir) await removeTempDir(dir);
  });

  test('SIGKILL under load loses no answered invocation: every answer the clients got has its row', async () => {
    const ledgerPath = path.join(dir, 'usage.sqlite');
    const runtimePath = path.join(dir, 'runtime');
    const service = await startService({
      ...serviceEnv({ pool, runtimePath, attestation, storage }),
      LEDGER_PATH: ledgerPath,
    });
    const answered: number[] = [];
    let killed = false;
    const client = async () => {
      while (!killed) {
        try {
          const response = await request(`${service.url}/api/serverless`, {
            method: 'POST',
            headers: { 'content-type': 'application/json' },
            body: JSON.stringify({ code_id: 'hello', input: { name: 'ledger' } }),
          });
          await response.body.text();
          if (response.statusCode === 200) answered.push(Number(response.headers['x-oyster-invocation']));
        } catch {
          // The connection the kill cut: this request was never answered.
        }
      }
    };
    const running = Array.from({ length: clients }, client);
    await sleep(killAfterMs);
    service.child.kill('SIGKILL');
    killed = true;
    await service.exited;
    await Promise.all(running);

    expect(answered.length).toBeGreaterThan(10);
    const db = new Database(ledgerPath, { readonly: true });
    const rows = new Map(
      (db.prepare('SELECT id, outcome FROM invocations').all() as Array<{ id: number; outcome: string }>).map((row) => [
        row.id,
        row.outcome,
      ]),
    );
    db.close();
    expect(answered.filter((id) => rows.get(id) !== 'ok')).toEqual([]);
    // What was recorded but not answered is at most what was in flight when the kill came.
    expect(rows.size - answered.length).toBeLessThanOrEqual(clients);
  });
});
