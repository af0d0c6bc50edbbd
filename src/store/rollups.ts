import type { Statement } from 'better-sqlite3';
import { asciiLower, countDay, dayShares, effectivePolicy, FORWARDED_REASONS, policyKey, rollupTls } from '../analyse/rollups.js';
import type { TlsRow } from '../analyse/types.js';
import type { DmarcPolicyPublished, DmarcRecord } from '../parse/types.js';
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

/** An aggregate report's message totals, for the per-day rollups. */
export interface DmarcTotals {
  messages: number;
  dmarcPass: number;
  dkimAlignedPass: number;
  spfAlignedPass: number;
  forwarded: number;
  quarantine: number;
  reject: number;
}

export function emptyDmarcTotals(): DmarcTotals {
  return { messages: 0, dmarcPass: 0, dkimAlignedPass: 0, spfAlignedPass: 0, forwarded: 0, quarantine: 0, reject: 0 };
}

const FORWARDED = new Set<string>(FORWARDED_REASONS);

/**
 * What the rollups need to know of an aggregate report's records that is cheaper to note as they
 * are parsed than to ask SQLite for afterwards: the report's totals, and which records are the
 * first from their source IP (a report counts once per source IP). The rows themselves are rolled
 * up by SQLite from the stored records. Past MAX_FLAGGED records the flags are dropped (memory
 * stays bounded) and SQLite finds the first records itself, at the cost of a sort.
 */
export class DmarcRecordTally {
  static readonly MAX_FLAGGED = 50_000;
  readonly totals = emptyDmarcTotals();
  /** Records with more than one DKIM signature (most have one or none). */
  multiSigned = 0;
  private ips: Set<string> | null = new Set();
  private flags: Uint8Array | null = new Uint8Array(1024);
  private count = 0;

  add(r: DmarcRecord): void {
    const t = this.totals;
    const n = r.count;
    t.messages += n;
    if (r.dkim === 'pass' || r.spf === 'pass') t.dmarcPass += n;
    else if (r.reasons.some((x) => x.type !== null && FORWARDED.has(x.type))) t.forwarded += n;
    if (r.dkim === 'pass') t.dkimAlignedPass += n;
    if (r.spf === 'pass') t.spfAlignedPass += n;
    if (r.disposition === 'quarantine') t.quarantine += n;
    else if (r.disposition === 'reject') t.reject += n;
    if (r.dkimResults.length > 1) this.multiSigned++;
    const i = this.count++;
    if (!this.ips || !this.flags) return;
    if (i >= DmarcRecordTally.MAX_FLAGGED) {
      this.ips = null;
      this.flags = null;
      return;
    }
    if (i >= this.flags.length) {
      const grown = new Uint8Array(this.flags.length * 2);
      grown.set(this.flags);
      this.flags = grown;
    }
    const first = !this.ips.has(r.sourceIp);
    if (first) this.ips.add(r.sourceIp);
    this.flags[i] = first ? 0x31 : 0x30;
  }

  /**
   * A byte per record in order, "1" for the first record of its source IP, else "0"; null when
   * not kept. A BLOB for SQLite, whose substr() reaches a byte of a BLOB at once but walks a TEXT
   * character by character from its start (a cost that grows with the square of the records).
   */
  firsts(): Buffer | null {
    return this.flags ? Buffer.from(this.flags.buffer, 0, this.count) : null;
  }
}

/** Bits of dmarc_daily.reporters: 0-61 one reporter each, 62 shared by any further ones. */
const LAST_BIT = 62;

const FORWARDED_SQL = `(d.reasons <> '[]' AND EXISTS (SELECT 1 FROM json_each(d.reasons) WHERE value ->> 'type' IN (${FORWARDED_REASONS.map((r) => `'${r}'`).join(', ')})))`;
const PASS_SQL = `(d.dkim_aligned = 'pass' OR d.spf_aligned = 'pass')`;

/**
 * How a stored name is keyed in the rollups: lower case (ASCII, as analyse/rollups.ts asciiLower),
 * '' when missing. Records written by this version are already lower case (parse/normalise.ts), so
 * ingest leaves lower() out (`stored` false); the migration keeps it for records of any age.
 */
function nameKey(expr: string, stored: boolean): string {
  return stored ? `lower(coalesce(${expr}, ''))` : `coalesce(${expr}, '')`;
}

/**
 * The columns of a dmarc_daily row from one stored record `d`, for the day and share given as
 * parameters; `first` says whether the record is its report's first from its source IP.
 */
function sourceRow(first: string, stored: boolean): string {
  const part = (cond: string) => `CASE WHEN ${cond} THEN d.count * @share ELSE 0 END`;
  return `@domain, @day, d.source_ip, ${nameKey('d.header_from', stored)}, d.count * @share, ${part(PASS_SQL)},
    ${part(`d.dkim_aligned = 'pass'`)}, ${part(`d.spf_aligned = 'pass'`)}, ${part(`NOT ${PASS_SQL} AND ${FORWARDED_SQL}`)},
    ${part(`d.disposition = 'quarantine'`)}, ${part(`d.disposition = 'reject'`)}, CASE WHEN @last AND ${first} THEN 1 ELSE 0 END, @bits`;
}

/** The records a writer has just written, by id (the report_id test is a check, not the index). */
const JUST_WRITTEN = `d.id BETWEEN @first_id AND @last_id AND +d.report_id = @id`;

const INTO_DKIM = `INSERT INTO dkim_daily (domain, day, source_ip, signing_domain, selector, result, messages)`;
const ON_DKIM = `ON CONFLICT (domain, day, source_ip, signing_domain, selector, result) DO UPDATE SET messages = messages + excluded.messages`;

/** dkim_daily rows of the first DKIM signature of the records `where` selects. */
function dkimFirst(where: string, stored: boolean): string {
  return `${INTO_DKIM}
    SELECT @domain, @day, d.source_ip, ${nameKey(`d.dkim_results ->> '$[0].domain'`, stored)},
      ${nameKey(`d.dkim_results ->> '$[0].selector'`, stored)}, coalesce(d.dkim_results ->> '$[0].result', 'none'), d.count * @share
    FROM dmarc_records d WHERE ${where} AND d.dkim_results <> '[]' AND NOT ${FORWARDED_SQL} ${ON_DKIM}`;
}

const SOURCE_SUMS = ['messages', 'dmarc_pass', 'dkim_aligned_pass', 'spf_aligned_pass', 'forwarded', 'quarantine', 'reject', 'reports'];

export class RollupWriter {
  private readonly s: Record<string, Statement>;

  constructor(private readonly db: Db) {
    const n = (col: string) => `${col} = ${col} + excluded.${col}`;
    const intoSources = `INSERT INTO dmarc_daily (domain, day, source_ip, header_from, ${SOURCE_SUMS.join(', ')}, reporters)`;
    const intoDkim = INTO_DKIM;
    const onDkim = ON_DKIM;
    const onSource = `ON CONFLICT (domain, day, source_ip, header_from) DO UPDATE SET ${SOURCE_SUMS.map(n).join(', ')},
      reporters = reporters | excluded.reporters`;
    // One row written per record (and per DKIM signature): SQLite merges rows with the same key
    // as it upserts them, which costs less than grouping them first.
    this.s = {
      bitOf: db.prepare(`SELECT bit FROM domain_reporters WHERE domain = ? AND reporter = ?`).pluck(),
      newBit: db
        .prepare(
          `INSERT INTO domain_reporters (domain, reporter, bit)
           SELECT @domain, @reporter, min(COUNT(*), ${LAST_BIT}) FROM domain_reporters WHERE domain = @domain RETURNING bit`,
        )
        .pluck(),
      // At ingest, the records just written are read by their ids (@first_id to @last_id, one
      // after the other), which costs less than through the report_id index; which record is the
      // first from its source IP comes from the flags the writer noted. Otherwise (the migration,
      // a report too big for the flags) through the index, with a window finding the first records.
      sourcesFlagged: db.prepare(`${intoSources}
        SELECT ${sourceRow(`substr(@firsts, d.id - @first_id + 1, 1) = x'31'`, false)}
        FROM dmarc_records d WHERE ${JUST_WRITTEN} ${onSource}`),
      sourcesWindowed: db.prepare(`${intoSources}
        SELECT ${sourceRow('d.first', true)}
        FROM (SELECT id, source_ip, header_from, count, dkim_aligned, spf_aligned, disposition, reasons,
                     id = min(id) OVER (PARTITION BY source_ip) AS first
                FROM dmarc_records WHERE report_id = @id) d
        WHERE true ${onSource}`),
      // Nearly every record has one or two signatures: the first is read straight from the JSON
      // text (parsed once per record), the others through json_each, only for records with more.
      dkimFirst: db.prepare(dkimFirst(`d.report_id = @id`, true)),
      dkimFirstWritten: db.prepare(dkimFirst(JUST_WRITTEN, false)),
      dkimMore: db.prepare(`${intoDkim}
        SELECT @domain, @day, d.source_ip, lower(coalesce(k.value ->> 'domain', '')), lower(coalesce(k.value ->> 'selector', '')),
          coalesce(k.value ->> 'result', 'none'), d.count * @share
        FROM dmarc_records d JOIN json_each(d.dkim_results) k
        WHERE d.report_id = @id AND d.dkim_results LIKE '[{%},{%' AND k.key > 0 AND NOT ${FORWARDED_SQL} ${onDkim}`),
      totals: db.prepare(`SELECT coalesce(SUM(d.count), 0) AS messages,
          coalesce(SUM(CASE WHEN ${PASS_SQL} THEN d.count END), 0) AS dmarcPass,
          coalesce(SUM(CASE WHEN d.dkim_aligned = 'pass' THEN d.count END), 0) AS dkimAlignedPass,
          coalesce(SUM(CASE WHEN d.spf_aligned = 'pass' THEN d.count END), 0) AS spfAlignedPass,
          coalesce(SUM(CASE WHEN NOT ${PASS_SQL} AND ${FORWARDED_SQL} THEN d.count END), 0) AS forwarded,
          coalesce(SUM(CASE WHEN d.disposition = 'quarantine' THEN d.count END), 0) AS quarantine,
          coalesce(SUM(CASE WHEN d.disposition = 'reject' THEN d.count END), 0) AS reject
        FROM dmarc_records d WHERE d.report_id = ?`),
      domainDay: db.prepare(`INSERT INTO domain_daily (day, domain, messages, dmarc_pass, dkim_aligned_pass, spf_aligned_pass, forwarded,
          quarantine, reject, dmarc_reports) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
        ON CONFLICT (day, domain) DO UPDATE SET ${['messages', 'dmarc_pass', 'dkim_aligned_pass', 'spf_aligned_pass', 'forwarded', 'quarantine', 'reject', 'dmarc_reports'].map(n).join(', ')}`),
      totalsDay: db.prepare(`INSERT INTO daily_totals (day, messages, dmarc_pass, dmarc_reports) VALUES (?, ?, ?, ?)
        ON CONFLICT (day) DO UPDATE SET ${['messages', 'dmarc_pass', 'dmarc_reports'].map(n).join(', ')}`),
      policyDay: db.prepare(`INSERT INTO policy_daily (domain, day, policy, weight, reports) VALUES (?, ?, ?, ?, ?)
        ON CONFLICT (domain, day, policy) DO UPDATE SET ${n('weight')}, ${n('reports')}`),
      coverage: db.prepare(`INSERT INTO report_daily (domain, kind, day, reporter, reports, last_end) VALUES (?, ?, ?, ?, 1, ?)
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
   * Adds an aggregate report, already stored with its records, to the rollups. Call inside the
   * transaction that stored it. `noted` is what its writer noted of the records as they passed,
   * with the ids its records were stored under; without it (the migration) SQLite works it out.
   */
  dmarc(r: DmarcRollupReport, noted?: { tally: DmarcRecordTally; firstId: number; lastId: number; records: number }): void {
    const s = this.s;
    const bits = 1n << BigInt(this.bitOf(r.domain, r.reporter));
    const totals = noted?.tally.totals ?? (s.totals!.get(r.id) as DmarcTotals);
    // The flags index records by id from the first: only when the ids follow one another.
    const flags = noted && noted.lastId - noted.firstId + 1 === noted.records ? noted.tally.firsts() : null;
    const shares = dayShares(r.begin, r.end);
    shares.forEach(([day, share], i) => {
      const last = i === shares.length - 1 ? 1 : 0;
      const p = { id: r.id, domain: r.domain, day, share, last, bits };
      if (flags !== null) {
        const ids = { first_id: noted!.firstId, last_id: noted!.lastId };
        s.sourcesFlagged!.run({ ...p, ...ids, firsts: flags });
        s.dkimFirstWritten!.run({ id: r.id, domain: r.domain, day, share, ...ids });
      } else {
        s.sourcesWindowed!.run(p);
        s.dkimFirst!.run({ id: r.id, domain: r.domain, day, share });
      }
      if (!noted || noted.tally.multiSigned > 0) s.dkimMore!.run({ id: r.id, domain: r.domain, day, share });
      s.domainDay!.run(
        day,
        r.domain,
        totals.messages * share,
        totals.dmarcPass * share,
        totals.dkimAlignedPass * share,
        totals.spfAlignedPass * share,
        totals.forwarded * share,
        totals.quarantine * share,
        totals.reject * share,
        last,
      );
      s.totalsDay!.run(day, totals.messages * share, totals.dmarcPass * share, last);
      if (r.policy !== null) s.policyDay!.run(r.domain, day, r.policy, share, last);
      if (last) s.coverage!.run(r.domain, 'dmarc', day, r.reporter, r.end);
    });
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
    s.coverage!.run(reportDomain, 'tlsrpt', day, r.reporter, r.end);
  }

  /** Adds a failure report to the rollups. */
  failure(r: FailureRollupReport): void {
    this.s.failure!.run(
      r.domain,
      countDay(r.begin, r.begin),
      r.sourceIp ?? '',
      asciiLower(r.dkimDomain ?? ''),
      asciiLower(r.dkimSelector ?? ''),
    );
  }

  private bitOf(domain: string, reporter: string): number {
    const known = this.s.bitOf!.get(domain, reporter) as number | undefined;
    return known ?? (this.s.newBit!.pluck().get({ domain, reporter }) as number);
  }
}

/** The effective policy of a stored or parsed policy_published, for policy_daily. */
export function policyText(p: Pick<DmarcPolicyPublished, 'p' | 'sp' | 'np' | 'pct' | 'adkim' | 'aspf'> | null | undefined): string | null {
  return p ? policyKey(effectivePolicy(p)) : null;
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

  // Read a page at a time: the connection cannot run the writes while a query is being iterated.
  const dmarc = db.prepare(
    `SELECT r.id, r.policy_domain AS domain, r.reporter, r.begin_ts AS begin, r.end_ts AS end,
            p.p, p.sp, p.np, p.pct, p.adkim, p.aspf, p.report_id AS has_policy
       FROM reports r LEFT JOIN dmarc_policies p ON p.report_id = r.id
      WHERE r.kind = 'dmarc' AND r.id > ? ORDER BY r.id LIMIT 1000`,
  );
  type Row = { id: number; domain: string; reporter: string; begin: number; end: number; has_policy: number | null };
  for (let last = 0; ;) {
    const page = dmarc.all(last) as (Row & Parameters<typeof effectivePolicy>[0])[];
    if (page.length === 0) break;
    for (const r of page) {
      writer.dmarc({
        id: r.id,
        domain: r.domain,
        reporter: r.reporter,
        begin: r.begin,
        end: r.end,
        policy: r.has_policy ? policyKey(effectivePolicy(r)) : null,
      });
    }
    tick(page.length);
    last = page[page.length - 1]!.id;
  }

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
