import { mkdirSync } from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { errorCodes, type Outcome, outcomeOf, outcomes, ServiceError, StartupError } from '../errors.js';
import type { SignedClaim } from '../signing.js';
import { type ClaimAnswerCode, signedClaimOf } from './claims.js';

const hourMs = 60 * 60 * 1000;
const dayMs = 24 * hourMs;
const schemaVersion = 2;
const pageCacheKib = 256;

// Per-invocation rows, per code_id, hour and outcome totals of the rows past retention, and the
// claims (claim_id 0: not claimed yet).
const schema = `
CREATE TABLE IF NOT EXISTS invocations (
  id INTEGER PRIMARY KEY,
  at_ms INTEGER NOT NULL,
  code_id TEXT NOT NULL,
  outcome TEXT NOT NULL,
  cpu_us INTEGER,
  peak_memory_bytes INTEGER,
  wall_us INTEGER NOT NULL,
  bytes_in INTEGER NOT NULL,
  bytes_out INTEGER NOT NULL,
  claim_id INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS invocations_at ON invocations (at_ms);
CREATE INDEX IF NOT EXISTS invocations_unclaimed ON invocations (claim_id, at_ms);
CREATE TABLE IF NOT EXISTS hourly (
  code_id TEXT NOT NULL,
  hour_ms INTEGER NOT NULL,
  outcome TEXT NOT NULL,
  invocations INTEGER NOT NULL,
  cpu_us INTEGER NOT NULL,
  wall_us INTEGER NOT NULL,
  bytes_in INTEGER NOT NULL,
  bytes_out INTEGER NOT NULL,
  peak_memory_max INTEGER,
  claim_id INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (code_id, hour_ms, outcome, claim_id)
);
CREATE TABLE IF NOT EXISTS claims (
  id INTEGER PRIMARY KEY,
  nonce TEXT NOT NULL UNIQUE,
  until_ms INTEGER NOT NULL,
  body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS probe (id INTEGER PRIMARY KEY);
`;

// How an hourly total takes in another of the same code_id, hour, outcome and claim.
const addToHourly = `ON CONFLICT (code_id, hour_ms, outcome, claim_id) DO UPDATE SET
  invocations = invocations + excluded.invocations, cpu_us = cpu_us + excluded.cpu_us,
  wall_us = wall_us + excluded.wall_us, bytes_in = bytes_in + excluded.bytes_in,
  bytes_out = bytes_out + excluded.bytes_out,
  peak_memory_max = MAX(COALESCE(peak_memory_max, 0), COALESCE(excluded.peak_memory_max, 0))`;

// Version 1 kept `OK` or the error code as the outcome; version 2 keeps the outcome's word. A code
// no longer in the table was an internal failure. Hourly totals whose words now meet are added up.
const outcomeOfVersion1 = `CASE outcome WHEN 'OK' THEN 'ok' ${errorCodes
  .map((code) => `WHEN '${code}' THEN '${outcomeOf(code)}'`)
  .join(' ')} ELSE 'internal' END`;
const words = outcomes.map((word) => `'${word}'`).join(', ');
const fromVersion1 = `
UPDATE invocations SET outcome = ${outcomeOfVersion1};
INSERT INTO hourly (code_id, hour_ms, outcome, claim_id, invocations, cpu_us, wall_us, bytes_in, bytes_out, peak_memory_max)
  SELECT code_id, hour_ms, ${outcomeOfVersion1}, claim_id, SUM(invocations), SUM(cpu_us), SUM(wall_us), SUM(bytes_in),
         SUM(bytes_out), MAX(peak_memory_max)
  FROM hourly WHERE outcome NOT IN (${words}) GROUP BY 1, 2, 3, 4
  ${addToHourly};
DELETE FROM hourly WHERE outcome NOT IN (${words});
`;

/** One answered invocation, as the ledger keeps it. */
export interface InvocationRecord {
  /** When it was answered, in ms since the epoch. */
  readonly atMs: number;
  readonly codeId: string;
  /** Why it ended (docs/api.md#outcomes). */
  readonly outcome: Outcome;
  readonly cpuUs: number | undefined;
  readonly peakMemoryBytes: number | undefined;
  readonly wallUs: number;
  readonly bytesIn: number;
  readonly bytesOut: number;
}

/** What the invocations of one code_id used together. */
export interface CodeTotals extends ClaimAnswerCode {
  readonly peak_memory_max: number | null;
}

export interface UsageLedgerOptions {
  /** The SQLite file; its folder is made if missing. */
  readonly file: string;
  /** Invocation rows older than this many days are folded into hourly totals per code_id. */
  readonly retentionDays: number;
}

/**
 * The usage ledger: a row per invocation in SQLite (WAL), committed before its answer leaves.
 * With synchronous=NORMAL a commit is in the operating system's hands once it returns, so killing
 * the service (even with SIGKILL) loses nothing committed; a power cut could lose the last ones,
 * which an enclave, whose disk is its memory, does not outlive anyway.
 */
export class UsageLedger {
  readonly #db: Database.Database;
  readonly #retentionMs: number;
  readonly #insert: Database.Statement;

  private constructor(db: Database.Database, retentionDays: number) {
    this.#db = db;
    this.#retentionMs = retentionDays * dayMs;
    this.#insert = db.prepare(
      `INSERT INTO invocations (at_ms, code_id, outcome, cpu_us, peak_memory_bytes, wall_us, bytes_in, bytes_out)
       VALUES (@atMs, @codeId, @outcome, @cpuUs, @peakMemoryBytes, @wallUs, @bytesIn, @bytesOut)`,
    );
  }

  /** Opens (or makes) the ledger; a file that is not a sound ledger, or cannot be written, stops the start. */
  static open(options: UsageLedgerOptions): UsageLedger {
    const refuse = (problem: string, cause?: unknown) =>
      new StartupError(`LEDGER_PATH=${options.file}: ${problem}`, { cause });
    let db: Database.Database;
    try {
      mkdirSync(path.dirname(options.file), { recursive: true, mode: 0o700 });
      db = new Database(options.file);
    } catch (cause) {
      throw refuse(`the ledger cannot be opened (${(cause as Error).message})`, cause);
    }
    try {
      db.pragma('journal_mode = WAL');
      db.pragma('synchronous = NORMAL');
      // Rows are appended and seldom read: a small page cache, not SQLite's default 2 MB, of the
      // service's memory.
      db.pragma(`cache_size = -${pageCacheKib}`);
      const check = db.pragma('quick_check', { simple: true });
      if (check !== 'ok') throw new Error(String(check));
      const version = db.pragma('user_version', { simple: true }) as number;
      if (version > schemaVersion) throw new Error(`its schema version ${version} is newer than this service's`);
      db.transaction(() => {
        db.exec(schema);
        if (version === 1) db.exec(fromVersion1);
        db.pragma(`user_version = ${schemaVersion}`);
      })();
    } catch (cause) {
      db.close();
      throw refuse(`the file is not a usable ledger (${(cause as Error).message})`, cause);
    }
    return new UsageLedger(db, options.retentionDays);
  }

  /** Commits one invocation's row; its id. Throws LEDGER_WRITE_FAILED when it cannot (a full disk, say). */
  record(record: InvocationRecord): number {
    try {
      return Number(
        this.#insert.run({
          ...record,
          cpuUs: record.cpuUs === undefined ? null : Math.round(record.cpuUs),
          peakMemoryBytes: record.peakMemoryBytes ?? null,
          wallUs: Math.round(record.wallUs),
        }).lastInsertRowid,
      );
    } catch (cause) {
      throw new ServiceError('LEDGER_WRITE_FAILED', { cause });
    }
  }

  /** Whether a write would succeed now: after a failed record(), new work waits for this. */
  writable(): boolean {
    try {
      this.#db.transaction(() => {
        this.#db.prepare('INSERT INTO probe (id) VALUES (1)').run();
        this.#db.prepare('DELETE FROM probe').run();
      })();
      return true;
    } catch {
      return false;
    }
  }

  /** Totals per code_id of the invocations answered in [fromMs, toMs), hourly totals of older ones included by their hour. */
  totals(fromMs: number, toMs: number): CodeTotals[] {
    return this.#db
      .prepare(
        `SELECT code_id, SUM(invocations) AS invocations, SUM(cpu_us) AS cpu_us, SUM(wall_us) AS wall_us,
                SUM(bytes_in) AS bytes_in, SUM(bytes_out) AS bytes_out, MAX(peak_memory_max) AS peak_memory_max
         FROM (
           SELECT code_id, 1 AS invocations, COALESCE(cpu_us, 0) AS cpu_us, wall_us, bytes_in, bytes_out,
                  peak_memory_bytes AS peak_memory_max
           FROM invocations WHERE at_ms >= @fromMs AND at_ms < @toMs
           UNION ALL
           SELECT code_id, invocations, cpu_us, wall_us, bytes_in, bytes_out, peak_memory_max
           FROM hourly WHERE hour_ms >= @fromMs AND hour_ms < @toMs
         )
         GROUP BY code_id ORDER BY code_id`,
      )
      .all({ fromMs, toMs }) as CodeTotals[];
  }

  /** Folds the rows older than the retention into hourly totals, in one transaction; how many it folded. */
  rollUp(nowMs: number): number {
    const cutoff = Math.floor((nowMs - this.#retentionMs) / hourMs) * hourMs;
    // Throws what SQLite throws (a full disk, say): the caller decides.
    return this.#db.transaction(() => {
      this.#db
        .prepare(
          `INSERT INTO hourly (code_id, hour_ms, outcome, claim_id, invocations, cpu_us, wall_us, bytes_in, bytes_out,
                              peak_memory_max)
           SELECT code_id, (at_ms / ${hourMs}) * ${hourMs}, outcome, claim_id, COUNT(*), COALESCE(SUM(cpu_us), 0),
                  SUM(wall_us), SUM(bytes_in), SUM(bytes_out), MAX(peak_memory_bytes)
           FROM invocations WHERE at_ms < @cutoff GROUP BY 1, 2, 3, 4
           ${addToHourly}`,
        )
        .run({ cutoff });
      return this.#db.prepare('DELETE FROM invocations WHERE at_ms < @cutoff').run({ cutoff }).changes;
    })();
  }

  /**
   * Claims the usage not claimed yet that was answered before untilMs, per code_id, in one
   * transaction: the claim is stored, signed by sign, with its rows marked as claimed, or nothing
   * is. A nonce already used gets its claim back unchanged, so a claimant who lost the answer asks
   * again without claiming anything twice.
   */
  claim(nonce: string, untilMs: number, sign: (claim: SignedClaim) => string): string {
    return this.#db.transaction(() => {
      const earlier = this.#db.prepare('SELECT body FROM claims WHERE nonce = ?').get(nonce) as
        | { body: string }
        | undefined;
      if (earlier) return earlier.body;
      const claimId = (this.#db.prepare('SELECT COALESCE(MAX(id), 0) + 1 AS id FROM claims').get() as { id: number })
        .id;
      const codes = this.#db
        .prepare(
          `SELECT code_id, SUM(invocations) AS invocations, SUM(cpu_us) AS cpu_us, SUM(wall_us) AS wall_us,
                  SUM(bytes_in) AS bytes_in, SUM(bytes_out) AS bytes_out
           FROM (
             SELECT code_id, 1 AS invocations, COALESCE(cpu_us, 0) AS cpu_us, wall_us, bytes_in, bytes_out
             FROM invocations WHERE claim_id = 0 AND at_ms < @untilMs
             UNION ALL
             SELECT code_id, invocations, cpu_us, wall_us, bytes_in, bytes_out
             FROM hourly WHERE claim_id = 0 AND hour_ms + ${hourMs} <= @untilMs
           )
           GROUP BY code_id ORDER BY code_id`,
        )
        .all({ untilMs }) as ClaimAnswerCode[];
      this.#db
        .prepare('UPDATE invocations SET claim_id = @claimId WHERE claim_id = 0 AND at_ms < @untilMs')
        .run({ claimId, untilMs });
      this.#db
        .prepare(`UPDATE hourly SET claim_id = @claimId WHERE claim_id = 0 AND hour_ms + ${hourMs} <= @untilMs`)
        .run({ claimId, untilMs });
      const unsigned = { claim_id: claimId, nonce, until_ms: untilMs, codes };
      const body = JSON.stringify({ ...unsigned, signature: sign(signedClaimOf(unsigned)) });
      this.#db
        .prepare('INSERT INTO claims (id, nonce, until_ms, body) VALUES (?, ?, ?, ?)')
        .run(claimId, nonce, untilMs, body);
      return body;
    })();
  }

  /** The latest claim, exactly as it was answered; undefined before the first. */
  latestClaim(): string | undefined {
    return (this.#db.prepare('SELECT body FROM claims ORDER BY id DESC LIMIT 1').get() as { body: string } | undefined)
      ?.body;
  }

  close(): void {
    this.#db.close();
  }
}
