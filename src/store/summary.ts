import type { Db } from './db.js';

export interface ReportFilter {
  domain?: string;
  /** Epoch seconds, inclusive: reports whose range ends after this. */
  since?: number;
  /** Epoch seconds, exclusive: reports whose range begins before this. */
  until?: number;
}

export interface SourceTotals {
  ip: string;
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
 * Totals for `ruawatch report`. A message passes DMARC when its policy_evaluated DKIM or SPF
 * result is "pass" (RFC 7489 section 6.6.2: either aligned identifier suffices).
 */
export function reportTotals(db: Db, f: ReportFilter): ReportTotals {
  const where = ['r.kind = @kind'];
  if (f.domain) where.push('r.policy_domain = @domain');
  if (f.since !== undefined) where.push('r.end_ts >= @since');
  if (f.until !== undefined) where.push('r.begin_ts < @until');
  const params = (kind: string) => ({ kind, domain: f.domain?.toLowerCase().replace(/\.$/, ''), since: f.since, until: f.until });
  const cond = where.join(' AND ');

  const sources = db
    .prepare(
      `SELECT r.policy_domain AS domain, d.source_ip AS ip,
         SUM(d.count) AS messages,
         SUM(CASE WHEN d.dkim_aligned = 'pass' OR d.spf_aligned = 'pass' THEN d.count ELSE 0 END) AS dmarc_pass,
         SUM(CASE WHEN d.dkim_aligned = 'pass' THEN d.count ELSE 0 END) AS dkim_aligned_pass,
         SUM(CASE WHEN d.spf_aligned = 'pass' THEN d.count ELSE 0 END) AS spf_aligned_pass,
         SUM(CASE WHEN d.disposition = 'quarantine' THEN d.count ELSE 0 END) AS quarantined,
         SUM(CASE WHEN d.disposition = 'reject' THEN d.count ELSE 0 END) AS rejected,
         COUNT(DISTINCT r.id) AS reports,
         COUNT(DISTINCT r.reporter) AS reporters
       FROM dmarc_records d JOIN reports r ON r.id = d.report_id
       WHERE ${cond}
       GROUP BY r.policy_domain, d.source_ip
       HAVING SUM(d.count) > 0
       ORDER BY r.policy_domain, messages DESC, d.source_ip`,
    )
    .all(clean(params('dmarc'))) as (Omit<SourceTotals, 'pass_rate'> & { domain: string })[];
  const reportCounts = new Map(
    (
      db
        .prepare(`SELECT r.policy_domain AS domain, COUNT(*) AS n FROM reports r WHERE ${cond} GROUP BY r.policy_domain`)
        .all(clean(params('dmarc'))) as { domain: string; n: number }[]
    ).map((r) => [r.domain, r.n]),
  );

  const domains = new Map<string, DomainTotals>();
  for (const [domain, reports] of reportCounts) {
    domains.set(domain, {
      domain,
      messages: 0,
      dmarc_pass: 0,
      dkim_aligned_pass: 0,
      spf_aligned_pass: 0,
      pass_rate: null,
      reports,
      sources: [],
    });
  }
  for (const { domain, ...s } of sources) {
    const d = domains.get(domain)!;
    d.messages += s.messages;
    d.dmarc_pass += s.dmarc_pass;
    d.dkim_aligned_pass += s.dkim_aligned_pass;
    d.spf_aligned_pass += s.spf_aligned_pass;
    d.sources.push({ ...s, pass_rate: rate(s.dmarc_pass, s.messages) });
  }
  for (const d of domains.values()) d.pass_rate = rate(d.dmarc_pass, d.messages);

  const tlsRows = db
    .prepare(
      `SELECT COALESCE(p.policy_domain, NULLIF(r.policy_domain, ''), '(none)') AS policy_domain,
         SUM(p.successful) AS successful, SUM(p.failed) AS failed, COUNT(DISTINCT r.id) AS reports
       FROM tls_policies p JOIN reports r ON r.id = p.report_id
       WHERE ${cond} GROUP BY 1 ORDER BY 1`,
    )
    .all(clean(params('tlsrpt'))) as Omit<TlsTotals, 'failures'>[];
  const tlsFailures = db
    .prepare(
      `SELECT COALESCE(p.policy_domain, NULLIF(r.policy_domain, ''), '(none)') AS policy_domain, f.result_type,
         SUM(f.failed_sessions) AS count
       FROM tls_failures f JOIN tls_policies p ON p.id = f.policy_id JOIN reports r ON r.id = p.report_id
       WHERE ${cond} GROUP BY 1, 2 ORDER BY 1, count DESC, 2`,
    )
    .all(clean(params('tlsrpt'))) as { policy_domain: string; result_type: string; count: number }[];
  const tlsrpt = tlsRows.map((t) => ({
    ...t,
    failures: tlsFailures.filter((x) => x.policy_domain === t.policy_domain).map(({ result_type, count }) => ({ result_type, count })),
  }));

  const failure_reports = db
    .prepare(
      `SELECT r.policy_domain AS domain, COUNT(*) AS count, COUNT(DISTINCT fr.source_ip) AS source_ips
       FROM failure_reports fr JOIN reports r ON r.id = fr.report_id
       WHERE ${cond} GROUP BY 1 ORDER BY 1`,
    )
    .all(clean(params('failure'))) as FailureReportTotals[];

  return { domains: [...domains.values()].sort((a, b) => a.domain.localeCompare(b.domain)), tlsrpt, failure_reports };
}

function rate(pass: number, total: number): number | null {
  return total > 0 ? Math.round((pass / total) * 10000) / 10000 : null;
}

/** Drops unset filters: better-sqlite3 refuses undefined as a parameter value. */
function clean(p: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(p).filter(([, v]) => v !== undefined));
}
