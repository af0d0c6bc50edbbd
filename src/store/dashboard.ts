import { isoDay, lastDays, type Window } from '../analyse/rollups.js';
import type { Db } from './db.js';
import { rollupsVersion } from './rollups.js';
import { reporterBits, reporterCountSql, tidy } from './summary.js';

/**
 * Read-only queries behind the dashboard's JSON API (web/server.ts), from the daily rollups. Days
 * are UTC and periods are lastDays(): the N whole days before today, today left out, as alerts,
 * the digest and /metrics count them. Every query reads a bounded number of rows: one per domain
 * and day for at most MAX_DOMAINS domains, one per source and day of those domains.
 */

/** Domains drawn and listed at most: the ones with the most mail over the recent days. */
export const MAX_DOMAINS = 8;
/** Sources listed at most. */
export const MAX_SOURCES = 200;

export interface DaySeries {
  domain: string;
  days: { day: string; messages: number; dmarc_pass: number; pass_rate: number | null }[];
}

export interface TlsDay {
  domain: string;
  days: { day: string; successful: number; failed: number }[];
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

const rate = (pass: number, total: number) => (total > 0 ? Math.round((pass / total) * 10000) / 10000 : null);

/** DMARC pass rate per policy domain and day over [from, to) (day numbers), from the rollups. */
export function passRateSeries(db: Db, w: Window, domains: string[]): DaySeries[] {
  const q = db.prepare(
    `SELECT day, messages, dmarc_pass FROM domain_daily WHERE domain = ? AND day >= ? AND day < ? AND (messages > 0 OR dmarc_reports > 0)
      ORDER BY day`,
  );
  return domains.map((domain) => ({
    domain,
    days: (q.all(domain, w.from, w.to) as { day: number; messages: number; dmarc_pass: number }[]).map((d) => ({
      day: isoDay(d.day),
      messages: tidy(d.messages),
      dmarc_pass: tidy(d.dmarc_pass),
      pass_rate: rate(d.dmarc_pass, d.messages),
    })),
  }));
}

/** The same over every domain, one row per day. */
export function totalSeries(db: Db, w: Window): { dmarc: DaySeries['days']; tls: TlsDay['days'] } {
  const rows = db
    .prepare(
      `SELECT day, messages, dmarc_pass, dmarc_reports, tls_successful, tls_failed, tls_reports FROM daily_totals
        WHERE day >= ? AND day < ? ORDER BY day`,
    )
    .all(w.from, w.to) as {
    day: number;
    messages: number;
    dmarc_pass: number;
    dmarc_reports: number;
    tls_successful: number;
    tls_failed: number;
    tls_reports: number;
  }[];
  return {
    dmarc: rows
      .filter((r) => r.messages > 0 || r.dmarc_reports > 0)
      .map((r) => ({
        day: isoDay(r.day),
        messages: tidy(r.messages),
        dmarc_pass: tidy(r.dmarc_pass),
        pass_rate: rate(r.dmarc_pass, r.messages),
      })),
    tls: rows
      .filter((r) => r.tls_successful + r.tls_failed > 0 || r.tls_reports > 0)
      .map((r) => ({ day: isoDay(r.day), successful: tidy(r.tls_successful), failed: tidy(r.tls_failed) })),
  };
}

/** TLS sessions per day of one policy domain. */
export function tlsSeries(db: Db, w: Window, domain: string): TlsDay {
  const rows = db
    .prepare(
      `SELECT day, tls_successful AS successful, tls_failed AS failed FROM domain_daily
        WHERE domain = ? AND day >= ? AND day < ? AND (tls_successful + tls_failed > 0 OR tls_reports > 0) ORDER BY day`,
    )
    .all(domain, w.from, w.to) as { day: number; successful: number; failed: number }[];
  return { domain, days: rows.map((r) => ({ day: isoDay(r.day), successful: tidy(r.successful), failed: tidy(r.failed) })) };
}

/** The policy domains with the most messages over a window, at most `limit`, and how many there are in all. */
export function topDomains(db: Db, w: Window, limit: number): { domains: string[]; count: number } {
  const rows = db
    .prepare(
      `SELECT domain, SUM(messages) AS messages FROM domain_daily WHERE day >= ? AND day < ?
        GROUP BY domain HAVING SUM(messages) > 0 OR SUM(dmarc_reports) > 0 ORDER BY messages DESC, domain`,
    )
    .all(w.from, w.to) as { domain: string }[];
  return { domains: rows.slice(0, limit).map((r) => r.domain), count: rows.length };
}

/**
 * Sources of the given policy domains over `w`, with the pass rate of the window of the same length
 * before; the MAX_SOURCES with the most messages.
 */
export function sourceRows(db: Db, w: Window, domains: string[], limit = MAX_SOURCES): SourceRow[] {
  const prev = w.from - (w.to - w.from);
  const q = (bits: number) =>
    db.prepare(
      `SELECT domain, source_ip AS ip,
            SUM(CASE WHEN day >= @from THEN messages ELSE 0 END) AS messages,
            SUM(CASE WHEN day >= @from THEN dmarc_pass ELSE 0 END) AS pass,
            SUM(CASE WHEN day < @from THEN messages ELSE 0 END) AS prev_messages,
            SUM(CASE WHEN day < @from THEN dmarc_pass ELSE 0 END) AS prev_pass,
            SUM(CASE WHEN day >= @from THEN dkim_aligned_pass ELSE 0 END) AS dkim_aligned_pass,
            SUM(CASE WHEN day >= @from THEN spf_aligned_pass ELSE 0 END) AS spf_aligned_pass,
            ${reporterCountSql('CASE WHEN day >= @from THEN reporters ELSE 0 END', bits)} AS reporters
       FROM dmarc_daily WHERE domain = @domain AND day >= @prev AND day < @to
      GROUP BY source_ip HAVING messages > 0 ORDER BY messages DESC, source_ip LIMIT ${limit}`,
    );
  const rows = domains.flatMap(
    (domain) =>
      q(reporterBits(db, domain)).all({ domain, from: w.from, to: w.to, prev }) as (Omit<
        SourceRow,
        'pass_rate' | 'previous_pass_rate' | 'name'
      > & {
        pass: number;
        prev_messages: number;
        prev_pass: number;
      })[],
  );
  rows.sort((a, b) => b.messages - a.messages || a.domain.localeCompare(b.domain) || a.ip.localeCompare(b.ip));
  const name = db.prepare(`SELECT name FROM reverse_dns WHERE ip = ?`).pluck();
  return rows.slice(0, limit).map(({ pass, prev_messages, prev_pass, ...r }) => ({
    domain: r.domain,
    ip: r.ip,
    name: (name.get(r.ip) as string | null | undefined) ?? null,
    messages: tidy(r.messages),
    pass_rate: rate(pass, r.messages),
    previous_pass_rate: rate(prev_pass, prev_messages),
    dkim_aligned_pass: tidy(r.dkim_aligned_pass),
    spf_aligned_pass: tidy(r.spf_aligned_pass),
    reporters: r.reporters,
  }));
}

/** The first and last day with data of each kind (of one domain, or all), as YYYY-MM-DD. */
export function dataExtent(
  db: Db,
  domain: string | null,
): { dmarc: { first: string; last: string } | null; tls: { first: string; last: string } | null } {
  const one = (kind: 'dmarc' | 'tls') => {
    const cond = kind === 'dmarc' ? `(messages > 0 OR dmarc_reports > 0)` : `(tls_successful + tls_failed > 0 OR tls_reports > 0)`;
    const row = (
      domain === null
        ? db.prepare(`SELECT min(day) AS first, max(day) AS last FROM daily_totals WHERE ${cond}`).get()
        : db.prepare(`SELECT min(day) AS first, max(day) AS last FROM domain_daily WHERE domain = ? AND ${cond}`).get(domain)
    ) as { first: number | null; last: number | null };
    return row.first === null || row.last === null ? null : { first: isoDay(row.first), last: isoDay(row.last) };
  };
  return { dmarc: one('dmarc'), tls: one('tls') };
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

/** The latest reports that began before `before` (of one domain, or all). */
export function recentReports(db: Db, limit: number, before: number, domain: string | null = null): ReportListRow[] {
  const columns = `id, kind, reporter, report_id, policy_domain, begin_ts AS begin, end_ts AS end, record_count, message_count, input`;
  return (
    domain === null
      ? db.prepare(`SELECT ${columns} FROM reports WHERE begin_ts < ? ORDER BY begin_ts DESC, id DESC LIMIT ?`).all(before, limit)
      : db
          .prepare(`SELECT ${columns} FROM reports WHERE policy_domain = ? AND begin_ts < ? ORDER BY begin_ts DESC, id DESC LIMIT ?`)
          .all(domain, before, limit)
  ) as ReportListRow[];
}

export interface OverviewOptions {
  /** Days the charts cover (lastDays). */
  days: number;
  /** The evaluation time: as of the end of a day, or now. */
  now: number;
  /** The alerts' recent window ([analysis] recent_days): the sources table covers it. */
  recentDays: number;
  /** One policy domain only. */
  domain?: string | null;
}

/**
 * What the rollups give the dashboard for a period, cached per database until they change
 * (rollupsVersion): the page is read far more often than mail arrives, and the first read after
 * a poll pays for the rest.
 */
const cache = new WeakMap<Db, Map<string, { version: string; value: ReturnType<typeof fromRollups> }>>();
const CACHED = 32;

function fromRollups(db: Db, period: Window, recent: Window, one: string | null) {
  const ranked = one === null ? topDomains(db, recent, MAX_DOMAINS) : { domains: [one], count: 1 };
  // Domains that had mail in the period but none in the recent days still get their line when
  // there is room for them (a small installation, or a period in the past).
  if (one === null && ranked.domains.length < MAX_DOMAINS) {
    const more = topDomains(db, period, MAX_DOMAINS);
    for (const d of more.domains) if (ranked.domains.length < MAX_DOMAINS && !ranked.domains.includes(d)) ranked.domains.push(d);
    ranked.count = Math.max(ranked.count, more.count);
  }
  const totals = one === null ? totalSeries(db, period) : null;
  return {
    data: dataExtent(db, one),
    domain: one,
    /** Domains with aggregate reports in the recent days (or the period, when fewer than MAX_DOMAINS). */
    domain_count: ranked.count,
    domains: passRateSeries(db, period, ranked.domains),
    all_domains: totals && totals.dmarc.length ? { domain: 'all domains', days: totals.dmarc } : null,
    tls: one === null ? [{ domain: 'all policy domains', days: totals!.tls }] : [tlsSeries(db, period, one)],
    sources: sourceRows(db, recent, ranked.domains, MAX_SOURCES + 1),
  };
}

/** What the dashboard's charts and sources table show, bounded whatever the database holds (web/queries.ts adds the rest). */
export function overview(db: Db, o: OverviewOptions) {
  const period = lastDays(o.now, o.days);
  const recent = lastDays(o.now, o.recentDays);
  const one = o.domain ? o.domain.toLowerCase().replace(/\.$/, '') : null;
  const version = rollupsVersion(db);
  const key = JSON.stringify([period, recent, one]);
  let entries = cache.get(db);
  if (!entries) cache.set(db, (entries = new Map()));
  let hit = entries.get(key);
  if (!hit || hit.version !== version) {
    hit = { version, value: fromRollups(db, period, recent, one) };
    entries.delete(key);
    entries.set(key, hit);
    if (entries.size > CACHED) entries.delete(entries.keys().next().value!);
  }
  const span = (w: Window) => ({ from: isoDay(w.from), to: isoDay(w.to - 1), days: w.to - w.from });
  const { sources, ...rest } = hit.value;
  return {
    generated_at: new Date(o.now * 1000).toISOString(),
    days: o.days,
    period: span(period),
    recent: span(recent),
    ...rest,
    sources: sources.slice(0, MAX_SOURCES),
    more_sources: sources.length > MAX_SOURCES,
  };
}

/** One report with its rows: DMARC records, TLS policies with their failures, or the failure report. */
/** Rows /api/reports/N lists at most: records of an aggregate report, policies of a TLS report, failure details of a policy. */
export const DETAIL_LIMITS = { records: 1000, policies: 100, failures: 100 } as const;

export function reportDetail(db: Db, id: number): Record<string, unknown> | null {
  const report = db.prepare(`SELECT * FROM reports WHERE id = ?`).get(id) as Record<string, unknown> | undefined;
  if (!report) return null;
  const json = (s: unknown) => JSON.parse(String(s)) as unknown;
  const L = DETAIL_LIMITS;
  if (report.kind === 'dmarc') {
    const policy = db.prepare(`SELECT * FROM dmarc_policies WHERE report_id = ?`).get(id) ?? null;
    const rows = db
      .prepare(
        `SELECT source_ip, count, disposition, dkim_aligned, spf_aligned, header_from, envelope_from, reasons, dkim_results, spf_results FROM dmarc_records WHERE report_id = ? ORDER BY count DESC, id LIMIT ?`,
      )
      .all(id, L.records + 1) as Record<string, unknown>[];
    const records = rows
      .slice(0, L.records)
      .map((r) => ({ ...r, reasons: json(r.reasons), dkim_results: json(r.dkim_results), spf_results: json(r.spf_results) }));
    return { report, policy, records, limits: L, truncated: { records: rows.length > L.records } };
  }
  if (report.kind === 'tlsrpt') {
    // A TLS report may list any number of policies and failure details: the answer stays bounded.
    const rows = db.prepare(`SELECT * FROM tls_policies WHERE report_id = ? ORDER BY id LIMIT ?`).all(id, L.policies + 1) as Record<
      string,
      unknown
    >[];
    const failuresOf = db.prepare(`SELECT * FROM tls_failures WHERE policy_id = ? ORDER BY failed_sessions DESC, rowid LIMIT ?`);
    let failuresCut = false;
    const policies = rows.slice(0, L.policies).map((p) => {
      const failures = failuresOf.all(p.id, L.failures + 1);
      if (failures.length > L.failures) failuresCut = true;
      return { ...p, policy_strings: json(p.policy_strings), mx_hosts: json(p.mx_hosts), failures: failures.slice(0, L.failures) };
    });
    return { report, policies, limits: L, truncated: { policies: rows.length > L.policies, failures: failuresCut } };
  }
  return { report, failure: db.prepare(`SELECT * FROM failure_reports WHERE report_id = ?`).get(id) ?? null };
}
