import type { Db } from './db.js';

/** Read-only queries behind the dashboard's JSON API (web/server.ts). Days are UTC. */

export interface DaySeries {
  domain: string;
  days: { day: string; messages: number; dmarc_pass: number; pass_rate: number | null }[];
}

const rate = (pass: number, total: number) => (total > 0 ? Math.round((pass / total) * 10000) / 10000 : null);
const PASS = `CASE WHEN d.dkim_aligned = 'pass' OR d.spf_aligned = 'pass' THEN d.count ELSE 0 END`;

/** DMARC pass rate per policy domain and day, by the day each report begins. */
export function passRateSeries(db: Db, from: number, to: number): DaySeries[] {
  const rows = db
    .prepare(
      `SELECT r.policy_domain AS domain, date(r.begin_ts, 'unixepoch') AS day, SUM(d.count) AS messages, SUM(${PASS}) AS dmarc_pass
         FROM dmarc_records d JOIN reports r ON r.id = d.report_id
        WHERE r.kind = 'dmarc' AND r.begin_ts >= ? AND r.begin_ts < ?
        GROUP BY 1, 2 ORDER BY 1, 2`,
    )
    .all(from, to) as { domain: string; day: string; messages: number; dmarc_pass: number }[];
  return byDomain(rows, ({ domain, ...d }) => ({ ...d, pass_rate: rate(d.dmarc_pass, d.messages) }));
}

/** Rows ordered by domain, grouped into one series per domain. */
function byDomain<R extends { domain: string }, D>(rows: R[], day: (r: R) => D): { domain: string; days: D[] }[] {
  const out = new Map<string, { domain: string; days: D[] }>();
  for (const r of rows) {
    const s = out.get(r.domain) ?? { domain: r.domain, days: [] };
    s.days.push(day(r));
    out.set(r.domain, s);
  }
  return [...out.values()];
}

export interface TlsDay {
  domain: string;
  days: { day: string; successful: number; failed: number }[];
}

export function tlsSeries(db: Db, from: number, to: number): TlsDay[] {
  const rows = db
    .prepare(
      `SELECT r.policy_domain AS domain, date(r.begin_ts, 'unixepoch') AS day, SUM(p.successful) AS successful, SUM(p.failed) AS failed
         FROM tls_policies p JOIN reports r ON r.id = p.report_id
        WHERE r.kind = 'tlsrpt' AND r.begin_ts >= ? AND r.begin_ts < ?
        GROUP BY 1, 2 ORDER BY 1, 2`,
    )
    .all(from, to) as { domain: string; day: string; successful: number; failed: number }[];
  return byDomain(rows, ({ domain, ...d }) => d);
}

export interface SourceRow {
  domain: string;
  ip: string;
  name: string | null;
  messages: number;
  pass_rate: number | null;
  /** Pass rate over the same number of days before: the trend is the difference. */
  previous_pass_rate: number | null;
  dkim_aligned_pass: number;
  spf_aligned_pass: number;
  reporters: number;
}

/**
 * Sources per policy domain over [from, to), with the pass rate of the period before: the `limit`
 * with the most messages, ordered by domain, then messages.
 */
export function sourceRows(db: Db, from: number, to: number, limit = -1): SourceRow[] {
  const span = to - from;
  const rows = db
    .prepare(
      `SELECT r.policy_domain AS domain, d.source_ip AS ip,
              SUM(CASE WHEN r.begin_ts >= @from THEN d.count ELSE 0 END) AS messages,
              SUM(CASE WHEN r.begin_ts >= @from THEN ${PASS} ELSE 0 END) AS pass,
              SUM(CASE WHEN r.begin_ts < @from THEN d.count ELSE 0 END) AS prev_messages,
              SUM(CASE WHEN r.begin_ts < @from THEN ${PASS} ELSE 0 END) AS prev_pass,
              SUM(CASE WHEN r.begin_ts >= @from AND d.dkim_aligned = 'pass' THEN d.count ELSE 0 END) AS dkim_aligned_pass,
              SUM(CASE WHEN r.begin_ts >= @from AND d.spf_aligned = 'pass' THEN d.count ELSE 0 END) AS spf_aligned_pass,
              COUNT(DISTINCT CASE WHEN r.begin_ts >= @from THEN r.reporter END) AS reporters,
              n.name
         FROM dmarc_records d JOIN reports r ON r.id = d.report_id LEFT JOIN reverse_dns n ON n.ip = d.source_ip
        WHERE r.kind = 'dmarc' AND r.begin_ts >= @prev AND r.begin_ts < @to
        GROUP BY 1, 2 HAVING messages > 0 ORDER BY messages DESC, 1, 2 LIMIT @limit`,
    )
    .all({ from, to, prev: from - span, limit }) as (Omit<SourceRow, 'pass_rate' | 'previous_pass_rate'> & {
    pass: number;
    prev_messages: number;
    prev_pass: number;
  })[];
  return rows
    .sort((a, b) => (a.domain < b.domain ? -1 : a.domain > b.domain ? 1 : 0))
    .map(({ pass, prev_messages, prev_pass, ...r }) => ({
      ...r,
      pass_rate: rate(pass, r.messages),
      previous_pass_rate: rate(prev_pass, prev_messages),
    }));
}

export interface ReportListRow {
  id: number;
  kind: string;
  reporter: string;
  report_id: string;
  policy_domain: string;
  begin: number;
  end: number;
  record_count: number;
  message_count: number;
  input: string;
}

/** The latest reports that began before `before`. */
export function recentReports(db: Db, limit: number, before: number): ReportListRow[] {
  return db
    .prepare(
      `SELECT id, kind, reporter, report_id, policy_domain, begin_ts AS begin, end_ts AS end, record_count, message_count, input
         FROM reports WHERE begin_ts < ? ORDER BY begin_ts DESC, id DESC LIMIT ?`,
    )
    .all(before, limit) as ReportListRow[];
}

/** One report with its rows: DMARC records, TLS policies with their failures, or the failure report. */
export function reportDetail(db: Db, id: number): Record<string, unknown> | null {
  const report = db.prepare(`SELECT * FROM reports WHERE id = ?`).get(id) as Record<string, unknown> | undefined;
  if (!report) return null;
  const json = (s: unknown) => JSON.parse(String(s)) as unknown;
  if (report.kind === 'dmarc') {
    const policy = db.prepare(`SELECT * FROM dmarc_policies WHERE report_id = ?`).get(id) ?? null;
    const records = (
      db
        .prepare(
          `SELECT source_ip, count, disposition, dkim_aligned, spf_aligned, header_from, envelope_from, reasons, dkim_results, spf_results FROM dmarc_records WHERE report_id = ? ORDER BY count DESC, id LIMIT 1000`,
        )
        .all(id) as Record<string, unknown>[]
    ).map((r) => ({ ...r, reasons: json(r.reasons), dkim_results: json(r.dkim_results), spf_results: json(r.spf_results) }));
    return { report, policy, records };
  }
  if (report.kind === 'tlsrpt') {
    const policies = (db.prepare(`SELECT * FROM tls_policies WHERE report_id = ? ORDER BY id`).all(id) as Record<string, unknown>[]).map(
      (p) => ({
        ...p,
        policy_strings: json(p.policy_strings),
        mx_hosts: json(p.mx_hosts),
        failures: db.prepare(`SELECT * FROM tls_failures WHERE policy_id = ?`).all(p.id),
      }),
    );
    return { report, policies };
  }
  return { report, failure: db.prepare(`SELECT * FROM failure_reports WHERE report_id = ?`).get(id) ?? null };
}
