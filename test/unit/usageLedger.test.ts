import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import Database from 'better-sqlite3';
import { describe, expect, test } from 'vitest';
import { StartupError } from '../../src/errors.js';
import { signedClaimOf } from '../../src/ledger/claims.js';
import { type InvocationRecord, UsageLedger } from '../../src/ledger/usageLedger.js';
import type { SignedClaim } from '../../src/signing.js';
import { tempDirsRemovedAfterEach } from '../helpers/tempDirs.js';

const hourMs = 60 * 60 * 1000;
const dayMs = 24 * hourMs;

const tempDirs = tempDirsRemovedAfterEach();
async function ledgerFile(): Promise<string> {
  return path.join(await tempDirs.make('oyster-ledger-test-'), 'usage.sqlite');
}

const row = (codeId: string, atMs: number, extra: Partial<InvocationRecord> = {}): InvocationRecord => ({
  atMs,
  codeId,
  outcome: 'ok',
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
    const ids = [row('a', now), row('a', now + 1, { cpuUs: 3_000, outcome: 'exception' }), row('b', now + 2)].map(
      (record) => ledger.record(record),
    );
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

  test('a claim holds the unclaimed usage before its moment, once: the next holds only what came after', async () => {
    const ledger = UsageLedger.open({ file: await ledgerFile(), retentionDays: 1 });
    const now = Date.now();
    // One row old enough to be folded into the hourly totals: those are claimed too.
    ledger.record(row('a', now - 3 * dayMs));
    ledger.rollUp(now);
    ledger.record(row('a', now - 10));
    ledger.record(row('b', now - 5));
    ledger.record(row('b', now + 1_000));
    const signed: SignedClaim[] = [];
    const sign = (claim: SignedClaim) => {
      signed.push(claim);
      return `0xsigned${claim.claimId}`;
    };
    const first = JSON.parse(ledger.claim('aa01', now, sign));
    expect(first).toEqual({
      claim_id: 1,
      nonce: 'aa01',
      until_ms: now,
      codes: [
        { code_id: 'a', invocations: 2, cpu_us: 2_000, wall_us: 10_000, bytes_in: 20, bytes_out: 40 },
        { code_id: 'b', invocations: 1, cpu_us: 1_000, wall_us: 5_000, bytes_in: 10, bytes_out: 20 },
      ],
      signature: '0xsigned1',
    });
    // What was signed is what the answer says.
    expect(signed[0]).toEqual(signedClaimOf(first));
    const second = JSON.parse(ledger.claim('bb02', now + 2_000, sign));
    expect(second.codes).toEqual([
      { code_id: 'b', invocations: 1, cpu_us: 1_000, wall_us: 5_000, bytes_in: 10, bytes_out: 20 },
    ]);
    expect(JSON.parse(ledger.claim('cc03', now + 3_000, sign)).codes).toEqual([]);
    ledger.close();
  });

  test('a nonce used before gets its claim back unchanged, claiming nothing more; the latest is kept as answered', async () => {
    const ledger = UsageLedger.open({ file: await ledgerFile(), retentionDays: 30 });
    const now = Date.now();
    ledger.record(row('a', now - 10));
    const sign = (claim: SignedClaim) => `0x${claim.claimId}`;
    const first = ledger.claim('01', now, sign);
    ledger.record(row('a', now - 5));
    expect(ledger.claim('01', now, sign)).toBe(first);
    expect(ledger.latestClaim()).toBe(first);
    // The row that came after the first claim is still unclaimed.
    expect(JSON.parse(ledger.claim('02', now, sign)).codes[0].invocations).toBe(1);
    ledger.close();
  });

  test('a claim takes an hour of the hourly totals only once the whole hour is before its moment', async () => {
    const ledger = UsageLedger.open({ file: await ledgerFile(), retentionDays: 1 });
    const now = Date.now();
    const hour = Math.floor((now - 3 * dayMs) / hourMs) * hourMs;
    ledger.record(row('a', hour + 10));
    ledger.rollUp(now);
    const sign = () => '0x';
    // The row was answered before this moment, but its hour, where its total now is, was not over.
    expect(JSON.parse(ledger.claim('01', hour + 20, sign)).codes).toEqual([]);
    expect(JSON.parse(ledger.claim('02', hour + hourMs, sign)).codes[0].invocations).toBe(1);
    ledger.close();
  });

  test('a claim whose signing fails leaves nothing claimed', async () => {
    const ledger = UsageLedger.open({ file: await ledgerFile(), retentionDays: 30 });
    const now = Date.now();
    ledger.record(row('a', now - 10));
    expect(() =>
      ledger.claim('01', now, () => {
        throw new Error('no key');
      }),
    ).toThrow('no key');
    expect(ledger.latestClaim()).toBeUndefined();
    expect(JSON.parse(ledger.claim('02', now, () => '0x')).codes[0].invocations).toBe(1);
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

  test("a version 1 ledger's outcomes (OK or the error code) become the outcome's word, hourly totals added up", async () => {
    const file = await ledgerFile();
    const old = Date.now() - 40 * dayMs;
    const hour = Math.floor(old / hourMs) * hourMs;
    const ledger = UsageLedger.open({ file, retentionDays: 30 });
    for (const outcome of ['ok', 'shutdown', 'internal'] as const) ledger.record(row('a', hour + 1, { outcome }));
    ledger.rollUp(Date.now());
    ledger.record(row('a', Date.now()));
    ledger.record(row('a', Date.now(), { outcome: 'exception' }));
    ledger.close();
    // As version 1 wrote them: two codes that now share a word, in one hour, and one no longer in the table.
    const db = new Database(file);
    const setHourly = db.prepare('UPDATE hourly SET outcome = ? WHERE outcome = ?');
    setHourly.run('DRAINING', 'ok');
    setHourly.run('SHUTTING_DOWN', 'shutdown');
    setHourly.run('A_CODE_SINCE_REMOVED', 'internal');
    db.prepare("UPDATE invocations SET outcome = CASE outcome WHEN 'ok' THEN 'OK' ELSE 'USER_CODE_FAILED' END").run();
    db.pragma('user_version = 1');
    db.close();

    UsageLedger.open({ file, retentionDays: 30 }).close();
    const reopened = new Database(file, { readonly: true });
    expect(reopened.pragma('user_version', { simple: true })).toBe(2);
    expect(reopened.prepare('SELECT outcome FROM invocations ORDER BY id').pluck().all()).toEqual(['ok', 'exception']);
    expect(reopened.prepare('SELECT outcome, invocations FROM hourly ORDER BY outcome').all()).toEqual([
      { outcome: 'internal', invocations: 1 },
      { outcome: 'shutdown', invocations: 2 },
    ]);
    reopened.close();
  });
});
