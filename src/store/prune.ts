import { DAY } from '../analyse/rollups.js';
import type { Db } from './db.js';
import { errorMessage } from '../errors.js';
import { settleRollups } from './rollups.js';

/**
 * Retention ([retention]): the per-record rows of old reports are deleted (aggregate report
 * records, TLS report policies and failure details, failure report summaries, which hold the
 * addresses of real people). What stays: each report's row in `reports` (its natural key and raw
 * SHA-256, so a re-delivered old report is still a duplicate), its DMARC policy row, and the daily
 * rollups, so trends, the dashboard's history and `report` totals do not change.
 *
 * Work is done in short transactions (at most BATCH_RECORDS rows deleted in each), so `ruawatch
 * run` and a concurrent `fetch` wait milliseconds, not minutes; the space is then given back a few
 * thousand pages at a time with PRAGMA incremental_vacuum (databases created since retention
 * exists have auto_vacuum = INCREMENTAL; in older ones freed pages are reused, the file does not
 * shrink).
 */

export interface RetentionSettings {
  /** Days of records kept; 0: for ever. */
  recordsDays: number;
  /** Days of failure report summaries kept; 0: for ever. */
  failureReportsDays: number;
}

export interface PruneResult {
  dry_run: boolean;
  /** Reports that ended before these days (YYYY-MM-DD) lose their rows; null: kept for ever. */
  records_before: string | null;
  failure_reports_before: string | null;
  reports: number;
  dmarc_records: number;
  tls_policies: number;
  tls_failures: number;
  failure_reports: number;
  /** Bytes given back to the file system (incremental vacuum). */
  freed_bytes: number;
  /** Bytes of free pages left inside the file (reused for new data). */
  free_bytes: number;
  auto_vacuum: 'none' | 'full' | 'incremental';
  /**
   * Why the aggregate reports waiting for the rollups could not be added to them first (their
   * records are then kept, and everything else is pruned); null when they were, or in a dry run.
   */
  settle_error: string | null;
}

const BATCH_RECORDS = 20_000;
const BATCH_REPORTS = 500;
const VACUUM_PAGES = 2_000;

function cutoff(now: number, days: number): number | null {
  return days > 0 ? (Math.floor(now / DAY) - days) * DAY : null;
}

const iso = (t: number | null) => (t === null ? null : new Date(t * 1000).toISOString().slice(0, 10));

/**
 * Prunes step by step: each step is one short transaction (or one vacuum step); the generator
 * yields between steps so a caller can let other work run. Returns what it did (or, with dryRun,
 * what it would do).
 */
export function* pruneSteps(db: Db, s: RetentionSettings, now: number, dryRun: boolean): Generator<void, PruneResult> {
  const records = cutoff(now, s.recordsDays);
  const failures = cutoff(now, s.failureReportsDays);
  const pageSize = db.pragma('page_size', { simple: true }) as number;
  const mode = (['none', 'full', 'incremental'] as const)[db.pragma('auto_vacuum', { simple: true }) as number] ?? 'none';
  const result: PruneResult = {
    dry_run: dryRun,
    records_before: iso(records),
    failure_reports_before: iso(failures),
    reports: 0,
    dmarc_records: 0,
    tls_policies: 0,
    tls_failures: 0,
    failure_reports: 0,
    freed_bytes: 0,
    free_bytes: 0,
    auto_vacuum: mode,
    settle_error: null,
  };
  const passes: { kinds: string; before: number }[] = [];
  if (records !== null) passes.push({ kinds: `'dmarc', 'tlsrpt'`, before: records });
  if (failures !== null) passes.push({ kinds: `'failure'`, before: failures });

  if (dryRun) {
    for (const p of passes) {
      const where = `r.pruned_at IS NULL AND r.end_ts < ? AND r.kind IN (${p.kinds})`;
      const count = (sql: string) => db.prepare(sql).pluck().get(p.before) as number;
      result.reports += count(`SELECT COUNT(*) FROM reports r WHERE ${where}`);
      result.dmarc_records += count(`SELECT COUNT(*) FROM reports r JOIN dmarc_records d ON d.report_id = r.id WHERE ${where}`);
      result.tls_policies += count(`SELECT COUNT(*) FROM reports r JOIN tls_policies p ON p.report_id = r.id WHERE ${where}`);
      result.tls_failures += count(
        `SELECT COUNT(*) FROM reports r JOIN tls_policies p ON p.report_id = r.id JOIN tls_failures f ON f.policy_id = p.id WHERE ${where}`,
      );
      result.failure_reports += count(`SELECT COUNT(*) FROM reports r JOIN failure_reports f ON f.report_id = r.id WHERE ${where}`);
    }
    result.free_bytes = (db.pragma('freelist_count', { simple: true }) as number) * pageSize;
    return result;
  }

  const q = {
    deleteRecords: db.prepare(`DELETE FROM dmarc_records WHERE id IN (SELECT id FROM dmarc_records WHERE report_id = ? LIMIT ?)`),
    deleteTlsFailures: db.prepare(`DELETE FROM tls_failures WHERE policy_id IN (SELECT id FROM tls_policies WHERE report_id = ?)`),
    deleteTlsPolicies: db.prepare(`DELETE FROM tls_policies WHERE report_id = ?`),
    deleteFailure: db.prepare(`DELETE FROM failure_reports WHERE report_id = ?`),
    mark: db.prepare(`UPDATE reports SET pruned_at = ? WHERE id = ?`),
  };
  // Records are deleted only once they are in the rollups: queued reports are settled first, and
  // one still queued (the settle failed: a full disk is when retention matters most; or another
  // process queued it meanwhile) keeps its records until a later run.
  if (!dryRun) {
    try {
      settleRollups(db);
    } catch (err) {
      result.settle_error = errorMessage(err);
    }
    yield;
  }
  for (const p of passes) {
    // The partial index reports_end holds exactly the reports not pruned yet, by end time.
    const next = db.prepare(
      `SELECT id, kind FROM reports WHERE pruned_at IS NULL AND end_ts < ? AND kind IN (${p.kinds})
          AND NOT EXISTS (SELECT 1 FROM rollup_pending q WHERE q.report_id = reports.id)
        ORDER BY end_ts, id LIMIT ${BATCH_REPORTS}`,
    );
    for (;;) {
      const batch = next.all(p.before) as { id: number; kind: string }[];
      if (batch.length === 0) break;
      db.transaction(() => {
        let budget = BATCH_RECORDS;
        for (const r of batch) {
          if (r.kind === 'dmarc') {
            const n = q.deleteRecords.run(r.id, budget).changes;
            result.dmarc_records += n;
            budget -= n;
            // Records left over: the next transaction goes on with this report.
            if (budget <= 0) break;
          } else if (r.kind === 'tlsrpt') {
            const f = q.deleteTlsFailures.run(r.id).changes;
            const n = q.deleteTlsPolicies.run(r.id).changes;
            result.tls_failures += f;
            result.tls_policies += n;
            budget -= f + n + 1;
          } else {
            result.failure_reports += q.deleteFailure.run(r.id).changes;
            budget--;
          }
          q.mark.run(Math.floor(now), r.id);
          result.reports++;
          if (budget <= 0) break;
        }
      })();
      yield;
    }
  }

  if (mode === 'incremental') {
    const before = db.pragma('page_count', { simple: true }) as number;
    while ((db.pragma('freelist_count', { simple: true }) as number) > 0) {
      db.pragma(`incremental_vacuum(${VACUUM_PAGES})`);
      yield;
    }
    // The file shrinks when the WAL is checkpointed; one that readers hold is left to the next.
    db.pragma('wal_checkpoint(PASSIVE)');
    result.freed_bytes = (before - (db.pragma('page_count', { simple: true }) as number)) * pageSize;
  }
  result.free_bytes = (db.pragma('freelist_count', { simple: true }) as number) * pageSize;
  return result;
}

/** Runs every step at once (the `ruawatch prune` command). */
export function prune(db: Db, s: RetentionSettings, now: number, dryRun: boolean): PruneResult {
  const steps = pruneSteps(db, s, now, dryRun);
  for (;;) {
    const step = steps.next();
    if (step.done) return step.value;
  }
}

/** Runs the steps with a turn of the event loop between them (inside `ruawatch run`: /healthz keeps answering). */
export async function pruneInTurns(db: Db, s: RetentionSettings, now: number): Promise<PruneResult> {
  const steps = pruneSteps(db, s, now, false);
  for (;;) {
    const step = steps.next();
    if (step.done) return step.value;
    await new Promise((resolve) => setImmediate(resolve));
  }
}
