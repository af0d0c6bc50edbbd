import { analyse, sortFindings, windowsAt } from '../analyse/index.js';
import { DAY } from '../analyse/rollups.js';
import type {
  AnalysisInput,
  AnalysisSettings,
  CoverageDay,
  DkimDay,
  Finding,
  PolicyDay,
  SourceDay,
  TlsDay,
  TlsFailureDay,
} from '../analyse/types.js';
import type { Db } from './db.js';

/**
 * What the drift rules read: the daily rollups (migrations/0004) of the days the windows cover,
 * one policy domain at a time. Every rule judges one domain, so an evaluation holds the rows of a
 * single domain at once, and costs (domains x sources x days), whatever the number of records.
 */
export class AnalysisReader {
  readonly from: number;
  readonly to: number;
  private readonly q: ReturnType<typeof statements>;

  constructor(
    private readonly db: Db,
    now: number,
    settings: AnalysisSettings,
  ) {
    const w = windowsAt(now, settings);
    this.from = Math.min(w.baseline.from, w.recent.from, w.latest.from);
    this.to = Math.floor(now / DAY);
    this.q = statements(db);
  }

  /** The policy domains with any report over the windows, in order. */
  domains(): string[] {
    return (this.q.domains.all(this.from, this.to) as { domain: string }[]).map((r) => r.domain);
  }

  /** The rollups of one policy domain over the windows. */
  load(domain: string): AnalysisInput {
    const p = [domain, this.from, this.to];
    return {
      sources: (this.q.sources.all(...p) as Omit<SourceDay, 'none'>[]).map((r) => ({ ...r, none: r.messages - r.quarantine - r.reject })),
      dkim: this.q.dkim.all(...p) as DkimDay[],
      tls: this.q.tls.all(...p) as TlsDay[],
      tlsFailures: this.q.tlsFailures.all(...p) as TlsFailureDay[],
      coverage: this.q.coverage.all(...p) as CoverageDay[],
      policies: this.q.policies.all(...p) as PolicyDay[],
    };
  }
}

function statements(db: Db) {
  const range = 'domain = ? AND day >= ? AND day < ?';
  return {
    domains: db.prepare(`SELECT DISTINCT domain FROM domain_daily WHERE day >= ? AND day < ? ORDER BY domain`),
    sources: db.prepare(
      `SELECT domain, day, source_ip AS sourceIp, header_from AS headerFrom, messages, dmarc_pass AS dmarcPass,
              dkim_aligned_pass AS dkimAlignedPass, spf_aligned_pass AS spfAlignedPass, forwarded, quarantine, reject
         FROM dmarc_daily WHERE ${range}`,
    ),
    dkim: db.prepare(
      `SELECT domain, day, source_ip AS sourceIp, signing_domain AS signingDomain, selector, result, messages
         FROM dkim_daily WHERE ${range}`,
    ),
    tls: db.prepare(`SELECT domain, day, mx, successful, failed FROM tls_daily WHERE ${range}`),
    tlsFailures: db.prepare(`SELECT domain, day, mx, result_type AS resultType, reporter, sessions FROM tls_failure_daily WHERE ${range}`),
    coverage: db.prepare(
      `SELECT kind, domain, reporter, day, reports, last_end AS lastEnd FROM report_daily
        WHERE domain = ? AND kind IN ('dmarc', 'tlsrpt') AND day >= ? AND day < ?`,
    ),
    policies: db.prepare(`SELECT domain, day, policy, weight, reports FROM policy_daily WHERE ${range}`),
  };
}

/**
 * Every finding as of `now`, evaluated one policy domain at a time (or only the domains given),
 * in the order analyse() gives.
 */
export function evaluateRules(
  db: Db,
  now: number,
  settings: AnalysisSettings,
  opts: { names?: Map<string, string>; domains?: Iterable<string> } = {},
): Finding[] {
  const reader = new AnalysisReader(db, now, settings);
  const findings: Finding[] = [];
  for (const domain of opts.domains ?? reader.domains()) {
    const input = reader.load(domain);
    if (opts.names) input.names = opts.names;
    for (const f of analyse(input, now, settings)) findings.push(f);
  }
  return sortFindings(findings);
}
