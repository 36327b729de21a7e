import { execFileSync } from 'node:child_process';
import { rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { makeTempDir, removeTempDir } from '../../src/dev/tempDir.js';
import { buildAdminApp } from '../../src/http/adminApp.js';
import { cgroupsOrSkip } from '../helpers/cgroups.js';
import { type Stack, startStack } from '../helpers/stack.js';

const cgroups = await cgroupsOrSkip();

// The usage ledger: every invocation whose workerd started has its row, committed before its answer.
describe.runIf(cgroups)('the usage ledger of a running service', () => {
  let stack: Stack;
  beforeAll(async () => {
    stack = await startStack({ pool: { count: 2 } });
  });
  afterAll(() => stack?.close());

  const rows = () => {
    const db = new Database(stack.config.ledgerPath!, { readonly: true });
    try {
      return db
        .prepare('SELECT id, code_id, outcome, cpu_us, bytes_in, bytes_out FROM invocations ORDER BY id')
        .all() as Array<{
        id: number;
        code_id: string;
        outcome: string;
        cpu_us: number;
        bytes_in: number;
        bytes_out: number;
      }>;
    } finally {
      db.close();
    }
  };

  test('an answer names its row, which is in the ledger by the time the answer arrives', async () => {
    const answer = await stack.app.inject({
      method: 'POST',
      url: '/api/serverless',
      payload: { code_id: 'hello', input: { name: 'ledger' } },
    });
    expect(answer.statusCode).toBe(200);
    const id = Number(answer.headers['x-oyster-invocation']);
    const row = rows().find((candidate) => candidate.id === id);
    expect(row).toMatchObject({ code_id: 'hello', outcome: 'ok', bytes_in: 17, bytes_out: 'Hello, ledger!'.length });
    expect(row!.cpu_us).toBeGreaterThan(0);
  });

  test('failures of the function are recorded with their code; requests that started no workerd are not', async () => {
    const before = rows().length;
    expect((await stack.invoke({ code_id: 'throw' })).statusCode).toBe(500);
    expect((await stack.invoke({ code_id: 'no-such-code' })).statusCode).toBe(404);
    const added = rows().slice(before);
    expect(added.map((row) => [row.code_id, row.outcome])).toEqual([['throw', 'exception']]);
  });

  test('the operator endpoint sums the ledger per code_id over a time range', async () => {
    const admin = buildAdminApp(stack.service);
    const from = Date.now();
    for (let i = 0; i < 3; i += 1) await stack.invoke({ code_id: 'echo', input: { i } });
    const answer = await admin.inject({ method: 'GET', url: `/admin/usage?from=${from}` });
    expect(answer.statusCode).toBe(200);
    const codes = answer.json().data.codes as Array<{ code_id: string; invocations: number; cpu_us: number }>;
    expect(codes).toEqual([expect.objectContaining({ code_id: 'echo', invocations: 3 })]);
    expect(codes[0]!.cpu_us).toBeGreaterThan(0);
    expect((await admin.inject({ method: 'GET', url: '/admin/usage?from=5&to=1' })).statusCode).toBe(400);
    // Never on the public listener.
    expect((await stack.app.inject({ method: 'GET', url: '/admin/usage' })).statusCode).toBe(404);
    await admin.close();
  });
});

// A full disk: the answer is a 503, and no new work runs until the ledger takes writes again.
describe.runIf(cgroups && process.getuid?.() === 0)('a ledger on a full disk', () => {
  let dir: string;
  let stack: Stack;
  beforeAll(async () => {
    dir = await makeTempDir('oyster-full-');
    // A small file system of its own, so that filling it fills nothing else.
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=2m', 'tmpfs', dir]);
    stack = await startStack({ pool: { count: 2 }, env: { LEDGER_PATH: path.join(dir, 'usage.sqlite') } });
  });
  afterAll(async () => {
    await stack?.close();
    execFileSync('umount', [dir]);
    await removeTempDir(dir);
  });

  test('withholds the answer it cannot record, runs no more work until it can, and serves again once there is room', async () => {
    const filler = path.join(dir, 'filler');
    await writeFile(filler, Buffer.alloc(4 * 1024 * 1024)).catch(() => undefined);
    // The function ran: a 500 that no load balancer sends elsewhere again, not a 503.
    const full = await stack.invoke({ code_id: 'hello' });
    expect(full.statusCode).toBe(500);
    expect(full.headers['x-oyster-error']).toBe('LEDGER_WRITE_FAILED');
    // The next one does not start a workerd at all.
    const refused = await stack.app.inject({ method: 'POST', url: '/api/serverless', payload: { code_id: 'hello' } });
    expect(refused.statusCode).toBe(503);
    expect(refused.headers['x-oyster-error']).toBe('LEDGER_UNAVAILABLE');
    expect(String(refused.headers['server-timing'])).not.toContain('start');
    await rm(filler);
    expect((await stack.invoke({ code_id: 'hello' })).statusCode).toBe(200);
  });
});
