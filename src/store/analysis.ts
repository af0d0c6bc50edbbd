import { DAY } from '../analyse/rollups.js';
import type { AnalysisInput, AnalysisSettings, PolicyRow, RecordRow, ReportRow, TlsRow } from '../analyse/types.js';
import type { Db } from './db.js';

/** Everything the drift rules need for an evaluation at `now`: reports overlapping both windows. */
export function loadAnalysisInput(db: Db, now: number, s: AnalysisSettings): AnalysisInput {
  const from = (Math.floor(now / DAY) - s.recentDays - s.baselineDays) * DAY;
  const range = { from, now };

  // The same JSON strings come back again and again (one sender, one selector, no reasons): parse
  // each distinct one once. Rows share the parsed arrays, which nothing mutates.
  const reasonsOf = memo((json) => (JSON.parse(json) as { type: string | null }[]).map((r) => r.type ?? ''));
  const dkimOf = memo((json) =>
    (JSON.parse(json) as { domain: string | null; selector: string | null; result: string | null }[]).map((d) => ({
      domain: d.domain?.toLowerCase() ?? null,
      selector: d.selector?.toLowerCase() ?? null,
      result: d.result ?? 'none',
    })),
  );
  const records: RecordRow[] = [];
  const query = db
    .prepare(
      `SELECT r.policy_domain AS domain, r.reporter, r.begin_ts AS begin, r.end_ts AS end, d.source_ip AS sourceIp,
              lower(d.header_from) AS headerFrom, d.count, d.disposition, d.dkim_aligned AS dkimAligned, d.spf_aligned AS spfAligned,
              d.reasons, d.dkim_results AS dkim
         FROM dmarc_records d JOIN reports r ON r.id = d.report_id
        WHERE r.kind = 'dmarc' AND r.end_ts > @from AND r.begin_ts < @now`,
    )
    .iterate(range) as Iterable<Omit<RecordRow, 'reasons' | 'dkim'> & { reasons: string; dkim: string }>;
  for (const row of query) records.push({ ...row, reasons: reasonsOf(row.reasons), dkim: dkimOf(row.dkim) });

  const tlsById = new Map<number, TlsRow>();
  const tlsQuery = db.prepare(
    `SELECT p.id, r.policy_domain AS domain, r.reporter, r.begin_ts AS begin, r.end_ts AS end, p.policy_type AS policyType,
            p.mx_hosts AS mxHosts, p.successful, p.failed
       FROM tls_policies p JOIN reports r ON r.id = p.report_id
      WHERE r.kind = 'tlsrpt' AND r.end_ts > @from AND r.begin_ts < @now`,
  );
  for (const row of tlsQuery.iterate(range) as Iterable<Record<string, unknown>>) {
    tlsById.set(row.id as number, {
      domain: row.domain as string,
      reporter: row.reporter as string,
      begin: row.begin as number,
      end: row.end as number,
      policyType: row.policyType as string,
      mxHosts: JSON.parse(row.mxHosts as string) as string[],
      successful: row.successful as number,
      failed: row.failed as number,
      failures: [],
    });
  }
  const failureQuery = db.prepare(
    `SELECT f.policy_id AS id, f.result_type AS resultType, f.receiving_mx_hostname AS mx, f.failed_sessions AS sessions
       FROM tls_failures f JOIN tls_policies p ON p.id = f.policy_id JOIN reports r ON r.id = p.report_id
      WHERE r.kind = 'tlsrpt' AND r.end_ts > @from AND r.begin_ts < @now`,
  );
  for (const row of failureQuery.iterate(range) as Iterable<{ id: number; resultType: string; mx: string | null; sessions: number }>) {
    tlsById.get(row.id)?.failures.push({ resultType: row.resultType, mx: row.mx, sessions: row.sessions });
  }

  const reports = db
    .prepare(
      `SELECT kind, policy_domain AS domain, reporter, begin_ts AS begin, end_ts AS end FROM reports
        WHERE kind IN ('dmarc', 'tlsrpt') AND end_ts > @from AND begin_ts < @now`,
    )
    .all(range) as ReportRow[];

  const policies = db
    .prepare(
      `SELECT r.policy_domain AS domain, r.reporter, r.begin_ts AS begin, r.end_ts AS end, p.p, p.sp, p.np, p.pct, p.adkim, p.aspf
         FROM dmarc_policies p JOIN reports r ON r.id = p.report_id
        WHERE r.kind = 'dmarc' AND r.end_ts > @from AND r.begin_ts < @now`,
    )
    .all(range) as PolicyRow[];

  return { records, tls: [...tlsById.values()], reports, policies };
}

function memo<T>(parse: (json: string) => T): (json: string) => T {
  const cache = new Map<string, T>();
  return (json) => {
    let v = cache.get(json);
    if (v === undefined) {
      v = parse(json);
      if (cache.size < 100_000) cache.set(json, v);
    }
    return v;
  };
}
