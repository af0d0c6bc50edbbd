import { DAY } from '../analyse/rollups.js';
import type { Statement } from 'better-sqlite3';
import type { Db } from './db.js';

export interface ReportFilter {
  domain?: string;
  /** Epoch seconds: the first UTC day counted is the one this falls in. */
  since?: number;
  /** Epoch seconds, exclusive: the days counted end before the day this falls in (or with it, at midnight). */
  until?: number;
}

export interface SourceTotals {
  ip: string;
  /** With enrichment asked for (`report --enrich`, the digest): who the source is (analyse/senders.ts). */
  asn?: number | null;
  as_org?: string | null;
  country?: string | null;
  service?: string | null;
  service_type?: string | null;
  messages: number;
  dmarc_pass: number;
  dkim_aligned_pass: number;
  spf_aligned_pass: number;
  pass_rate: number | null;
  quarantined: number;
  rejected: number;
  reports: number;
  reporters: number;
}

export interface DomainTotals {
  domain: string;
  messages: number;
  dmarc_pass: number;
  dkim_aligned_pass: number;
  spf_aligned_pass: number;
  pass_rate: number | null;
  reports: number;
  sources: SourceTotals[];
}

export interface TlsTotals {
  policy_domain: string;
  successful: number;
  failed: number;
  reports: number;
  failures: { result_type: string; count: number }[];
}

export interface FailureReportTotals {
  domain: string;
  count: number;
  source_ips: number;
}

export interface ReportTotals {
  domains: DomainTotals[];
  tlsrpt: TlsTotals[];
  failure_reports: FailureReportTotals[];
}

/**
 * Totals for `ruawatch report`, the digest and /metrics, from the daily rollups: messages of the
 * UTC days in the range (a report spanning several days is shared out over them pro rata, so
 * counts can have fractions), reports counted on the day they end. A message passes DMARC when its
 * policy_evaluated DKIM or SPF result is "pass" (RFC 7489 section 6.6.2: either aligned identifier
 * suffices). `sources` limits the sources listed per domain (all by default).
 */
export function reportTotals(db: Db, f: ReportFilter, opts: { sources?: number } = {}): ReportTotals {
  const where = ['1'];
  if (f.domain) where.push('domain = @domain');
  if (f.since !== undefined) where.push('day >= @from');
  if (f.until !== undefined) where.push('day < @to');
  const cond = where.join(' AND ');
  const params = clean({
    domain: f.domain?.toLowerCase().replace(/\.$/, ''),
    from: f.since === undefined ? undefined : Math.floor(f.since / DAY),
    to: f.until === undefined ? undefined : Math.ceil(f.until / DAY),
  });

  const domainRows = db
    .prepare(
      `SELECT domain, SUM(messages) AS messages, SUM(dmarc_pass) AS dmarc_pass, SUM(dkim_aligned_pass) AS dkim_aligned_pass,
              SUM(spf_aligned_pass) AS spf_aligned_pass, SUM(dmarc_reports) AS reports,
              SUM(tls_successful) AS tls_successful, SUM(tls_failed) AS tls_failed, SUM(tls_reports) AS tls_reports
         FROM domain_daily WHERE ${cond} GROUP BY domain ORDER BY domain`,
    )
    .all(params) as (Omit<DomainTotals, 'pass_rate' | 'sources'> & { tls_successful: number; tls_failed: number; tls_reports: number })[];

  const statements = new Map<number, Statement>();
  const sources = (bits: number) => {
    let st = statements.get(bits);
    if (!st) {
      st = db.prepare(
        `SELECT source_ip AS ip, SUM(messages) AS messages, SUM(dmarc_pass) AS dmarc_pass, SUM(dkim_aligned_pass) AS dkim_aligned_pass,
                SUM(spf_aligned_pass) AS spf_aligned_pass, SUM(quarantine) AS quarantined, SUM(reject) AS rejected,
                SUM(reports) AS reports, ${reporterCountSql('reporters', bits)} AS reporters
           FROM dmarc_daily WHERE domain = @one${f.since === undefined ? '' : ' AND day >= @from'}${f.until === undefined ? '' : ' AND day < @to'}
          GROUP BY source_ip HAVING SUM(messages) > 0
          ORDER BY messages DESC, source_ip ${opts.sources === undefined ? '' : `LIMIT ${Math.max(0, Math.floor(opts.sources))}`}`,
      );
      statements.set(bits, st);
    }
    return st;
  };
  const domains: DomainTotals[] = [];
  for (const d of domainRows) {
    if (d.reports === 0 && d.messages === 0) continue;
    domains.push({
      domain: d.domain,
      messages: tidy(d.messages),
      dmarc_pass: tidy(d.dmarc_pass),
      dkim_aligned_pass: tidy(d.dkim_aligned_pass),
      spf_aligned_pass: tidy(d.spf_aligned_pass),
      pass_rate: rate(d.dmarc_pass, d.messages),
      reports: d.reports,
      sources: (
        (opts.sources === 0
          ? []
          : sources(reporterBits(db, d.domain)).all(clean({ from: params.from, to: params.to, one: d.domain }))) as Omit<
          SourceTotals,
          'pass_rate'
        >[]
      ).map((s) => ({
        ip: s.ip,
        messages: tidy(s.messages),
        dmarc_pass: tidy(s.dmarc_pass),
        dkim_aligned_pass: tidy(s.dkim_aligned_pass),
        spf_aligned_pass: tidy(s.spf_aligned_pass),
        quarantined: tidy(s.quarantined),
        rejected: tidy(s.rejected),
        reports: s.reports,
        reporters: s.reporters,
        pass_rate: rate(s.dmarc_pass, s.messages),
      })),
    });
  }

  const failures = new Map<string, { result_type: string; count: number }[]>();
  for (const x of db
    .prepare(
      // As the reports detail them: failed sessions without details ('unspecified' in the
      // rollups) are only in `failed`.
      `SELECT domain, result_type, SUM(sessions) AS count FROM tls_failure_daily WHERE ${cond} AND result_type <> 'unspecified'
        GROUP BY domain, result_type ORDER BY domain, count DESC, result_type`,
    )
    .all(params) as { domain: string; result_type: string; count: number }[]) {
    const list = failures.get(x.domain) ?? [];
    list.push({ result_type: x.result_type, count: tidy(x.count) });
    failures.set(x.domain, list);
  }
  const tlsrpt: TlsTotals[] = domainRows
    .filter((d) => d.tls_reports > 0 || d.tls_successful + d.tls_failed > 0)
    .map((d) => ({
      policy_domain: d.domain,
      successful: tidy(d.tls_successful),
      failed: tidy(d.tls_failed),
      reports: d.tls_reports,
      failures: failures.get(d.domain) ?? [],
    }));

  const failure_reports = db
    .prepare(
      `SELECT domain, SUM(reports) AS count, COUNT(DISTINCT NULLIF(source_ip, '')) AS source_ips FROM failure_daily
        WHERE ${cond} GROUP BY domain ORDER BY domain`,
    )
    .all(params) as FailureReportTotals[];

  return { domains, tlsrpt, failure_reports };
}

function rate(pass: number, total: number): number | null {
  return total > 0 ? Math.round((pass / total) * 10000) / 10000 : null;
}

/** Sums of shares, without the noise of floating point (1/3 + 1/3 + 1/3 is 1). */
export function tidy(n: number): number {
  return Math.round(n * 1e6) / 1e6;
}

/** Drops unset filters: better-sqlite3 refuses undefined as a parameter value. */
function clean(p: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(p).filter(([, v]) => v !== undefined));
}

/**
 * The SQL that counts the reporters in the union of dmarc_daily.reporters bit sets of a group,
 * for a domain whose reporters use `bits` bits (domain_reporters): one MAX per bit, which SQLite
 * computes as it aggregates (it has no bitwise-or aggregate).
 */
export function reporterCountSql(column: string, bits: number): string {
  if (bits <= 0) return '0';
  return `(${Array.from({ length: bits }, (_, b) => `MAX((${column}) >> ${b} & 1)`).join(' + ')})`;
}

/** Bits the reporters of a domain use in dmarc_daily.reporters. */
export function reporterBits(db: Db, domain: string): number {
  const top = db.prepare(`SELECT max(bit) FROM domain_reporters WHERE domain = ?`).pluck().get(domain) as number | null;
  return top === null ? 0 : top + 1;
}

/**
 * The DKIM signing domains each source of a policy domain signed with over a range of days (day
 * numbers, `to` exclusive; undefined: unbounded), from dkim_daily: what enrichment matches a
 * source on beyond its address.
 */
export function dkimDomainsBySource(db: Db, domain: string, from: number | undefined, to: number | undefined): Map<string, string[]> {
  const dkim = new Map<string, string[]>();
  const rows = db
    .prepare(`SELECT DISTINCT source_ip, signing_domain FROM dkim_daily WHERE domain = ? AND day >= ? AND day < ? AND signing_domain <> ''`)
    .raw(true)
    .all(domain, from ?? -1e9, to ?? 1e9) as [string, string][];
  for (const [ip, d] of rows) {
    const list = dkim.get(ip);
    if (list) list.push(d);
    else dkim.set(ip, [d]);
  }
  return dkim;
}

/** Reverse DNS names cached for some IPs (null: looked up, none); IPs never looked up are absent. */
export function cachedNames(db: Db, ips: Iterable<string>): Map<string, string | null> {
  const q = db.prepare(`SELECT name FROM reverse_dns WHERE ip = ?`).raw(true);
  const out = new Map<string, string | null>();
  for (const ip of ips) {
    const row = q.get(ip) as [string | null] | undefined;
    if (row) out.set(ip, row[0]);
  }
  return out;
}
