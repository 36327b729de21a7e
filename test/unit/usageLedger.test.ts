import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, describe, expect, test } from 'vitest';
import { StartupError } from '../../src/errors.js';
import { type InvocationRecord, UsageLedger } from '../../src/ledger/usageLedger.js';

const hourMs = 60 * 60 * 1000;
const dayMs = 24 * hourMs;

const dirs: string[] = [];
afterEach(async () => {
  for (const dir of dirs.splice(0)) await rm(dir, { recursive: true, force: true });
});
async function ledgerFile(): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'oyster-ledger-test-'));
  dirs.push(dir);
  return path.join(dir, 'usage.sqlite');
}

const row = (codeId: string, atMs: number, extra: Partial<InvocationRecord> = {}): InvocationRecord => ({
  atMs,
  codeId,
  outcome: 'OK',
  cpuUs: 1_000,
  peakMemoryBytes: 40_000_000,
  wallUs: 5_000,
  bytesIn: 10,
  bytesOut: 20,
  ...extra,
});

describe('the usage ledger', () => {
  test('keeps a row per invocation in WAL mode, and sums them per code_id over a time range', async () => {
    const file = await ledgerFile();
    const ledger = UsageLedger.open({ file, retentionDays: 30 });
    const now = Date.now();
    const ids = [
      row('a', now),
      row('a', now + 1, { cpuUs: 3_000, outcome: 'USER_CODE_FAILED' }),
      row('b', now + 2),
    ].map((record) => ledger.record(record));
    expect(new Set(ids).size).toBe(3);
    expect(ledger.totals(now, now + 10)).toEqual([
      {
        code_id: 'a',
        invocations: 2,
        cpu_us: 4_000,
        wall_us: 10_000,
        bytes_in: 20,
        bytes_out: 40,
        peak_memory_max: 40_000_000,
      },
      {
        code_id: 'b',
        invocations: 1,
        cpu_us: 1_000,
        wall_us: 5_000,
        bytes_in: 10,
        bytes_out: 20,
        peak_memory_max: 40_000_000,
      },
    ]);
    expect(ledger.totals(now + 2, now + 10).map((totals) => totals.code_id)).toEqual(['b']);
    ledger.close();
    const db = new Database(file, { readonly: true });
    expect(db.pragma('journal_mode', { simple: true })).toBe('wal');
    db.close();
  });

  test('folds rows past their retention into hourly totals, and the totals stay the same', async () => {
    const ledger = UsageLedger.open({ file: await ledgerFile(), retentionDays: 1 });
    const now = Date.now();
    const old = now - 3 * dayMs;
    for (const atMs of [old, old + 1, old + hourMs]) ledger.record(row('a', atMs));
    ledger.record(row('a', now));
    const before = ledger.totals(0, now + 1);
    expect(ledger.rollUp(now)).toBe(3);
    expect(ledger.totals(0, now + 1)).toEqual(before);
    expect(ledger.rollUp(now)).toBe(0);
    ledger.close();
  });

  test('a file that is not a ledger stops the start, naming LEDGER_PATH', async () => {
    const file = await ledgerFile();
    await writeFile(file, 'not a database, but long enough to look like one '.repeat(100));
    expect(() => UsageLedger.open({ file, retentionDays: 30 })).toThrow(StartupError);
    expect(() => UsageLedger.open({ file, retentionDays: 30 })).toThrow(`LEDGER_PATH=${file}`);
  });

  test('a path that cannot be a file stops the start, naming LEDGER_PATH', async () => {
    const file = await ledgerFile();
    await mkdir(file);
    expect(() => UsageLedger.open({ file, retentionDays: 30 })).toThrow(
      /LEDGER_PATH=.*cannot be opened|not a usable ledger/,
    );
  });

  test('a ledger written by a newer version is refused, not changed', async () => {
    const file = await ledgerFile();
    const db = new Database(file);
    db.pragma('user_version = 99');
    db.close();
    expect(() => UsageLedger.open({ file, retentionDays: 30 })).toThrow(/schema version 99/);
  });
});
