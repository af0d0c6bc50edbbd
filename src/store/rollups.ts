import type { Statement } from 'better-sqlite3';
import { countDay, dayShares, effectivePolicy, FORWARDED_REASONS, rollupTls } from '../analyse/rollups.js';
import type { TlsRow } from '../analyse/types.js';
import type { DmarcPolicyPublished } from '../parse/types.js';
import type { Db } from './db.js';

/**
 * Writes the daily rollups (migrations/0004) for reports as they are stored, inside the report's
 * own transaction: a report and its rollups are committed together or not at all, and a duplicate,
 * which stores nothing, adds nothing. The rollups of an aggregate report are computed by SQLite
 * from the records just written (all of them, however many were streamed into the transaction),
 * so the same statements serve ingest (one report) and the migration of an existing database
 * (thousands at a time, buildRollups).
 */

/** An aggregate report, as the rollups need it. */
export interface DmarcRollupReport {
  id: number;
  domain: string;
  reporter: string;
  begin: number;
  end: number;
  /** The policy the reporter saw (effectivePolicy), when it said. */
  policy: string | null;
}

/** A TLS report, as the rollups need it. */
export interface TlsRollupReport {
  domain: string;
  reporter: string;
  begin: number;
  end: number;
  policies: {
    policyDomain: string | null;
    mxHosts: string[];
    successful: number;
    failed: number;
    failures: { resultType: string; mx: string | null; sessions: number }[];
  }[];
}

/** A failure report, as the rollups need it. */
export interface FailureRollupReport {
  domain: string;
  begin: number;
  sourceIp: string | null;
  dkimDomain: string | null;
  dkimSelector: string | null;
}

/** Bits of dmarc_daily.reporters: 0-61 one reporter each, 62 shared by any further ones. */
const LAST_BIT = 62;

const FORWARDED_SQL = `(d.reasons <> '[]' AND EXISTS (SELECT 1 FROM json_each(d.reasons) WHERE value ->> 'type' IN (${FORWARDED_REASONS.map((r) => `'${r}'`).join(', ')})))`;
const PASS_SQL = `(d.dkim_aligned = 'pass' OR d.spf_aligned = 'pass')`;

export class RollupWriter {
  private readonly s: Record<string, Statement>;

  constructor(private readonly db: Db) {
    // One temporary table per connection: the day shares of the reports being rolled up.
    db.exec(`CREATE TEMP TABLE IF NOT EXISTS rollup_shares (
      report_id INTEGER NOT NULL, domain TEXT NOT NULL, reporter TEXT NOT NULL, day INTEGER NOT NULL,
      share REAL NOT NULL, last INTEGER NOT NULL, bit INTEGER NOT NULL, policy TEXT, end_ts INTEGER NOT NULL)`);
    db.exec(`CREATE INDEX IF NOT EXISTS temp.rollup_shares_report ON rollup_shares (report_id)`);
    const n = (col: string) => `${col} = ${col} + excluded.${col}`;
    this.s = {
      clear: db.prepare(`DELETE FROM temp.rollup_shares`),
      share: db.prepare(`INSERT INTO temp.rollup_shares (report_id, domain, reporter, day, share, last, bit, policy, end_ts)
        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`),
      bitOf: db.prepare(`SELECT bit FROM domain_reporters WHERE domain = ? AND reporter = ?`).pluck(),
      newBit: db.prepare(`INSERT INTO domain_reporters (domain, reporter, bit)
        SELECT @domain, @reporter, min(COUNT(*), ${LAST_BIT}) FROM domain_reporters WHERE domain = @domain RETURNING bit`),
      // A report is counted once per source IP: on the row of its first record from that IP, on
      // the last day it is shared out over (rollup_shares.last).
      sources: db.prepare(`INSERT INTO dmarc_daily (domain, day, source_ip, header_from, messages, dmarc_pass, dkim_aligned_pass,
          spf_aligned_pass, forwarded, quarantine, reject, reports, reporters)
        SELECT s.domain, s.day, d.source_ip, d.hf, SUM(d.count * s.share), SUM(d.pass * d.count * s.share),
          SUM(d.dkim_pass * d.count * s.share), SUM(d.spf_pass * d.count * s.share), SUM(d.fwd * d.count * s.share),
          SUM(d.quarantine * d.count * s.share), SUM(d.reject * d.count * s.share), SUM(s.last * d.first),
          SUM(DISTINCT 1 << s.bit)
        FROM temp.rollup_shares s JOIN (
          SELECT d.report_id, d.source_ip, lower(coalesce(d.header_from, '')) AS hf, d.count,
            CASE WHEN ${PASS_SQL} THEN 1 ELSE 0 END AS pass,
            CASE WHEN d.dkim_aligned = 'pass' THEN 1 ELSE 0 END AS dkim_pass,
            CASE WHEN d.spf_aligned = 'pass' THEN 1 ELSE 0 END AS spf_pass,
            CASE WHEN NOT ${PASS_SQL} AND ${FORWARDED_SQL} THEN 1 ELSE 0 END AS fwd,
            CASE WHEN d.disposition = 'quarantine' THEN 1 ELSE 0 END AS quarantine,
            CASE WHEN d.disposition = 'reject' THEN 1 ELSE 0 END AS reject,
            CASE WHEN d.id = min(d.id) OVER (PARTITION BY d.report_id, d.source_ip) THEN 1 ELSE 0 END AS first
          FROM dmarc_records d WHERE d.report_id IN (SELECT report_id FROM temp.rollup_shares)
        ) d ON d.report_id = s.report_id
        WHERE true
        GROUP BY s.domain, s.day, d.source_ip, d.hf
        ON CONFLICT (domain, day, source_ip, header_from) DO UPDATE SET ${['messages', 'dmarc_pass', 'dkim_aligned_pass', 'spf_aligned_pass', 'forwarded', 'quarantine', 'reject', 'reports'].map(n).join(', ')},
          reporters = reporters | excluded.reporters`),
      dkim: db.prepare(`INSERT INTO dkim_daily (domain, day, source_ip, signing_domain, selector, result, messages)
        SELECT s.domain, s.day, d.source_ip, lower(coalesce(k.value ->> 'domain', '')), lower(coalesce(k.value ->> 'selector', '')),
          coalesce(k.value ->> 'result', 'none'), SUM(d.count * s.share)
        FROM temp.rollup_shares s JOIN dmarc_records d ON d.report_id = s.report_id JOIN json_each(d.dkim_results) k
        WHERE d.dkim_results <> '[]' AND NOT ${FORWARDED_SQL}
        GROUP BY 1, 2, 3, 4, 5, 6
        ON CONFLICT (domain, day, source_ip, signing_domain, selector, result) DO UPDATE SET ${n('messages')}`),
      domains: db.prepare(`INSERT INTO domain_daily (day, domain, messages, dmarc_pass, dkim_aligned_pass, spf_aligned_pass, forwarded,
          quarantine, reject, dmarc_reports)
        SELECT s.day, s.domain, coalesce(SUM(d.count * s.share), 0),
          coalesce(SUM(CASE WHEN ${PASS_SQL} THEN d.count * s.share END), 0),
          coalesce(SUM(CASE WHEN d.dkim_aligned = 'pass' THEN d.count * s.share END), 0),
          coalesce(SUM(CASE WHEN d.spf_aligned = 'pass' THEN d.count * s.share END), 0),
          coalesce(SUM(CASE WHEN NOT ${PASS_SQL} AND ${FORWARDED_SQL} THEN d.count * s.share END), 0),
          coalesce(SUM(CASE WHEN d.disposition = 'quarantine' THEN d.count * s.share END), 0),
          coalesce(SUM(CASE WHEN d.disposition = 'reject' THEN d.count * s.share END), 0),
          COUNT(DISTINCT CASE WHEN s.last THEN s.report_id END)
        FROM temp.rollup_shares s LEFT JOIN dmarc_records d ON d.report_id = s.report_id
        WHERE true
        GROUP BY s.day, s.domain
        ON CONFLICT (day, domain) DO UPDATE SET ${['messages', 'dmarc_pass', 'dkim_aligned_pass', 'spf_aligned_pass', 'forwarded', 'quarantine', 'reject', 'dmarc_reports'].map(n).join(', ')}`),
      totals: db.prepare(`INSERT INTO daily_totals (day, messages, dmarc_pass, dmarc_reports)
        SELECT s.day, coalesce(SUM(d.count * s.share), 0), coalesce(SUM(CASE WHEN ${PASS_SQL} THEN d.count * s.share END), 0),
          COUNT(DISTINCT CASE WHEN s.last THEN s.report_id END)
        FROM temp.rollup_shares s LEFT JOIN dmarc_records d ON d.report_id = s.report_id
        WHERE true
        GROUP BY s.day
        ON CONFLICT (day) DO UPDATE SET ${['messages', 'dmarc_pass', 'dmarc_reports'].map(n).join(', ')}`),
      policies: db.prepare(`INSERT INTO policy_daily (domain, day, policy, weight, reports)
        SELECT domain, day, policy, SUM(share), SUM(last) FROM temp.rollup_shares WHERE policy IS NOT NULL GROUP BY 1, 2, 3
        ON CONFLICT (domain, day, policy) DO UPDATE SET ${n('weight')}, ${n('reports')}`),
      coverage: db.prepare(`INSERT INTO report_daily (domain, kind, day, reporter, reports, last_end)
        SELECT domain, 'dmarc', day, reporter, COUNT(*), MAX(end_ts) FROM temp.rollup_shares WHERE last GROUP BY 1, 3, 4
        ON CONFLICT (domain, kind, day, reporter) DO UPDATE SET ${n('reports')}, last_end = max(last_end, excluded.last_end)`),
      oneCoverage: db.prepare(`INSERT INTO report_daily (domain, kind, day, reporter, reports, last_end) VALUES (?, ?, ?, ?, 1, ?)
        ON CONFLICT (domain, kind, day, reporter) DO UPDATE SET reports = reports + 1, last_end = max(last_end, excluded.last_end)`),
      tls: db.prepare(`INSERT INTO tls_daily (domain, day, mx, successful, failed) VALUES (?, ?, ?, ?, ?)
        ON CONFLICT (domain, day, mx) DO UPDATE SET ${n('successful')}, ${n('failed')}`),
      tlsFailure: db.prepare(`INSERT INTO tls_failure_daily (domain, day, mx, result_type, reporter, sessions) VALUES (?, ?, ?, ?, ?, ?)
        ON CONFLICT (domain, day, mx, result_type, reporter) DO UPDATE SET ${n('sessions')}`),
      tlsDomain: db.prepare(`INSERT INTO domain_daily (day, domain, tls_successful, tls_failed, tls_reports) VALUES (?, ?, ?, ?, ?)
        ON CONFLICT (day, domain) DO UPDATE SET ${n('tls_successful')}, ${n('tls_failed')}, ${n('tls_reports')}`),
      tlsTotals: db.prepare(`INSERT INTO daily_totals (day, tls_successful, tls_failed, tls_reports) VALUES (?, ?, ?, ?)
        ON CONFLICT (day) DO UPDATE SET ${n('tls_successful')}, ${n('tls_failed')}, ${n('tls_reports')}`),
      failure: db.prepare(`INSERT INTO failure_daily (domain, day, source_ip, dkim_domain, dkim_selector, reports) VALUES (?, ?, ?, ?, ?, 1)
        ON CONFLICT (domain, day, source_ip, dkim_domain, dkim_selector) DO UPDATE SET reports = reports + 1`),
    };
  }

  /**
   * Adds aggregate reports, already stored with their records, to the rollups. Call inside the
   * transaction that stored them.
   */
  dmarc(reports: DmarcRollupReport[]): void {
    if (reports.length === 0) return;
    const s = this.s;
    s.clear!.run();
    for (const r of reports) {
      const bit = this.bitOf(r.domain, r.reporter);
      const shares = dayShares(r.begin, r.end);
      shares.forEach(([day, share], i) =>
        s.share!.run(r.id, r.domain, r.reporter, day, share, i === shares.length - 1 ? 1 : 0, bit, r.policy, r.end),
      );
    }
    for (const name of ['sources', 'dkim', 'domains', 'totals', 'policies', 'coverage']) s[name]!.run();
    s.clear!.run();
  }

  /** Adds a TLS report to the rollups. */
  tls(r: TlsRollupReport): void {
    const s = this.s;
    const reportDomain = r.domain || '(none)';
    const rows: TlsRow[] = r.policies.map((p) => ({
      domain: p.policyDomain || reportDomain,
      reporter: r.reporter,
      begin: r.begin,
      end: r.end,
      policyType: '',
      mxHosts: p.mxHosts,
      successful: p.successful,
      failed: p.failed,
      failures: p.failures,
    }));
    const { tls, tlsFailures } = rollupTls(rows);
    const perDay = new Map<string, { day: number; domain: string; successful: number; failed: number }>();
    for (const t of tls) {
      s.tls!.run(t.domain, t.day, t.mx, t.successful, t.failed);
      const k = `${t.day}\0${t.domain}`;
      const x = perDay.get(k) ?? { day: t.day, domain: t.domain, successful: 0, failed: 0 };
      x.successful += t.successful;
      x.failed += t.failed;
      perDay.set(k, x);
    }
    for (const f of tlsFailures) s.tlsFailure!.run(f.domain, f.day, f.mx, f.resultType, f.reporter, f.sessions);
    const day = countDay(r.begin, r.end);
    const counted = new Set(rows.length ? rows.map((p) => p.domain) : [reportDomain]);
    for (const domain of counted)
      if (!perDay.has(`${day}\0${domain}`)) perDay.set(`${day}\0${domain}`, { day, domain, successful: 0, failed: 0 });
    const totals = new Map<number, { successful: number; failed: number }>();
    for (const x of perDay.values()) {
      s.tlsDomain!.run(x.day, x.domain, x.successful, x.failed, x.day === day && counted.has(x.domain) ? 1 : 0);
      const t = totals.get(x.day) ?? { successful: 0, failed: 0 };
      t.successful += x.successful;
      t.failed += x.failed;
      totals.set(x.day, t);
    }
    if (!totals.has(day)) totals.set(day, { successful: 0, failed: 0 });
    for (const [d, t] of totals) s.tlsTotals!.run(d, t.successful, t.failed, d === day ? 1 : 0);
    s.oneCoverage!.run(reportDomain, 'tlsrpt', day, r.reporter, r.end);
  }

  /** Adds a failure report to the rollups. */
  failure(r: FailureRollupReport): void {
    const lower = (v: string | null) => (v ?? '').replace(/[A-Z]+/g, (m) => m.toLowerCase());
    this.s.failure!.run(r.domain, countDay(r.begin, r.begin), r.sourceIp ?? '', lower(r.dkimDomain), lower(r.dkimSelector));
  }

  private bitOf(domain: string, reporter: string): number {
    const known = this.s.bitOf!.get(domain, reporter) as number | undefined;
    return known ?? (this.s.newBit!.pluck().get({ domain, reporter }) as number);
  }
}

/** The effective policy of a stored or parsed policy_published, for policy_daily. */
export function policyText(p: Pick<DmarcPolicyPublished, 'p' | 'sp' | 'np' | 'pct' | 'adkim' | 'aspf'> | null | undefined): string | null {
  return p ? effectivePolicy(p) : null;
}

/**
 * Fills the rollups from the reports already in the database: the step of migration 0004 that
 * SQL alone cannot do with progress. DMARC reports go through the same statements as at ingest,
 * a batch of reports (about 200,000 records) at a time; TLS and failure reports one by one.
 * `progress` is called with (done, total) reports now and then.
 */
export function buildRollups(db: Db, progress?: (done: number, total: number) => void): void {
  const writer = new RollupWriter(db);
  const total = db.prepare(`SELECT COUNT(*) FROM reports`).pluck().get() as number;
  let done = 0;
  const tick = (n: number) => {
    done += n;
    progress?.(done, total);
  };

  const dmarc = db.prepare(
    `SELECT r.id, r.policy_domain AS domain, r.reporter, r.begin_ts AS begin, r.end_ts AS end, r.record_count AS records,
            p.p, p.sp, p.np, p.pct, p.adkim, p.aspf, p.report_id AS has_policy
       FROM reports r LEFT JOIN dmarc_policies p ON p.report_id = r.id
      WHERE r.kind = 'dmarc' AND r.id > ? ORDER BY r.id LIMIT 2000`,
  );
  type Row = { id: number; domain: string; reporter: string; begin: number; end: number; records: number; has_policy: number | null };
  let after = 0;
  for (;;) {
    const rows = dmarc.all(after) as (Row & Parameters<typeof effectivePolicy>[0])[];
    if (rows.length === 0) break;
    let batch: DmarcRollupReport[] = [];
    let records = 0;
    for (const r of rows) {
      batch.push({
        id: r.id,
        domain: r.domain,
        reporter: r.reporter,
        begin: r.begin,
        end: r.end,
        policy: r.has_policy ? effectivePolicy(r) : null,
      });
      records += r.records;
      if (records >= 200_000) {
        writer.dmarc(batch);
        tick(batch.length);
        batch = [];
        records = 0;
      }
    }
    writer.dmarc(batch);
    tick(batch.length);
    after = rows[rows.length - 1]!.id;
  }

  // Read a page at a time: the connection cannot run the writes while a query is being iterated.
  const tlsReports = db.prepare(
    `SELECT id, policy_domain AS domain, reporter, begin_ts AS begin, end_ts AS end FROM reports
      WHERE kind = 'tlsrpt' AND id > ? ORDER BY id LIMIT 2000`,
  );
  const policies = db.prepare(
    `SELECT id, policy_domain AS policyDomain, mx_hosts AS mxHosts, successful, failed FROM tls_policies WHERE report_id = ? ORDER BY id`,
  );
  const failures = db.prepare(
    `SELECT result_type AS resultType, receiving_mx_hostname AS mx, failed_sessions AS sessions FROM tls_failures WHERE policy_id = ?`,
  );
  for (let last = 0; ;) {
    const page = tlsReports.all(last) as { id: number; domain: string; reporter: string; begin: number; end: number }[];
    if (page.length === 0) break;
    for (const r of page) {
      const ps = (
        policies.all(r.id) as { id: number; policyDomain: string | null; mxHosts: string; successful: number; failed: number }[]
      ).map((p) => ({
        policyDomain: p.policyDomain,
        mxHosts: JSON.parse(p.mxHosts) as string[],
        successful: p.successful,
        failed: p.failed,
        failures: failures.all(p.id) as { resultType: string; mx: string | null; sessions: number }[],
      }));
      writer.tls({ domain: r.domain, reporter: r.reporter, begin: r.begin, end: r.end, policies: ps });
    }
    tick(page.length);
    last = page[page.length - 1]!.id;
  }

  const failureRows = db.prepare(
    `SELECT r.id, r.policy_domain AS domain, r.begin_ts AS begin, f.source_ip AS sourceIp, f.dkim_domain AS dkimDomain,
            f.dkim_selector AS dkimSelector
       FROM failure_reports f JOIN reports r ON r.id = f.report_id WHERE r.id > ? ORDER BY r.id LIMIT 5000`,
  );
  for (let last = 0; ;) {
    const page = failureRows.all(last) as (FailureRollupReport & { id: number })[];
    if (page.length === 0) break;
    for (const f of page) writer.failure(f);
    tick(page.length);
    last = page[page.length - 1]!.id;
  }
  progress?.(total, total);
}
