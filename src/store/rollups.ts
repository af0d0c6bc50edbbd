import type { Statement } from 'better-sqlite3';
import {
  asciiLower,
  boundTlsReport,
  countDay,
  effectivePolicy,
  FORWARDED_REASONS,
  MAX_REPORT_ROLLUP_ROWS,
  MAX_TLS_REPORT_ROWS,
  policyKey,
  reportShares,
  rollupTls,
  takeSpread,
} from '../analyse/rollups.js';
import type { TlsRow } from '../analyse/types.js';
import { v4Number } from '../parse/normalise.js';
import type { DmarcRecord } from '../parse/types.js';
import type { Db } from './db.js';

/**
 * Writes the daily rollups (migrations/0004). A TLS or failure report adds to its rollups inside
 * its own transaction. An aggregate report is queued inside its own (rollup_pending, migrations
 * 0010: a report rolled back or a duplicate, which stores nothing, queues nothing) and settled
 * later, many at a time: one transaction adds a batch of queued reports to the rollups, by one
 * grouped statement per table over their stored records, and takes them off the queue, so each
 * report is added once, whole. The same statements build the rollups of an existing database
 * (buildRollups, the migration).
 */

/** The rollup rows the reports of one input made so far (unpack/limits.ts InputBudget; analyse/rollups.ts INPUT_SPREAD_ROWS). */
export interface SpreadBudget {
  rollupRows: number;
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
  /** DKIM signatures past the first of each record (most records have one or none). */
  extraSignatures = 0;
  private ips: Set<number | string> | null = new Set();
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
    if (r.dkimResults.length > 1) this.extraSignatures += r.dkimResults.length - 1;
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
    const key = ipKey(r.sourceIp);
    const first = !this.ips.has(key);
    if (first) this.ips.add(key);
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

const IPV4 = /^(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?:\.(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;

/**
 * What a tally keeps of a source address: an IPv4 address as its number, else a string of its own.
 * The parser's strings can be slices of the chunk of XML they were read from, which a slice keeps
 * alive: kept as they came, the 50,000 addresses of a large report held every chunk they came from
 * (a report of 200,000 records peaked at 203-205 MiB instead of 154). A copy of every address costs
 * more time than a number (about 0.7 s per 100,000 records through JSON).
 */
function ipKey(ip: string): number | string {
  // Dotted decimal without leading zeros (as parse/normalise.ts writes it): one text per number, so
  // two addresses never share a key.
  return IPV4.test(ip) ? v4Number(ip) : (JSON.parse(JSON.stringify(ip)) as string);
}

/** Bits of dmarc_daily.reporters: 0-61 one reporter each, 62 shared by any further ones. */
const LAST_BIT = 62;

/**
 * Reports are added to the rollups (settled) in batches of about this many rows, a record counted
 * once for each day its report is shared out over (each is read and sorted once per day): enough
 * that each rollup page is written once for many reports, few enough that what SQLite sorts to
 * group them stays bounded and the write lock is held for about a second at most (2,000 reports of
 * 50 records over two days: 1.2 s). A store settles once it has committed this many records.
 */
export const SETTLE_ROWS = 200_000;

/**
 * The page cache of a settle, in KiB (PRAGMA cache_size, negative): SQLite also sizes the runs of
 * its sorts by it. A batch of 100,000 records settled in the same time with 4 MiB as with the
 * default 16 and peaked 24 MiB lower; on a report of 200,000 records, what ingest holds already
 * and a settle's caches add up.
 */
const SETTLE_CACHE_KIB = 4000;

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

/** What `sourcesFrom` reads of each record of a batch on each day it is shared out over. */
const SOURCE_ROW = `s.domain, s.day, s.share, s.last, s.bits, d.source_ip, d.header_from, d.count, d.dkim_aligned, d.spf_aligned,
  d.disposition, d.reasons`;

/**
 * dmarc_daily rows grouped from `rows`: a query giving each record of a batch on each day it is
 * shared out over (SOURCE_ROW, and `first`: whether the record is its report's first from its
 * source IP, as a report counts once per source IP, on its last day). A group's reporters are the
 * sum of its distinct reporter bits, each a power of two: their bitwise OR. `rows` ends in LIMIT
 * -1 so that SQLite runs it as it stands instead of folding it into the grouping: folded, the
 * sort behind GROUP BY carried every column the flags were read from, so the whole flags BLOB of
 * a report with each of its records (50,000 records: 2.5 GB of temporary files).
 */
function sourcesFrom(rows: string, stored: boolean): string {
  const part = (cond: string) => `SUM(CASE WHEN ${cond} THEN d.count * d.share ELSE 0 END)`;
  return `SELECT d.domain, d.day, d.source_ip, ${nameKey('d.header_from', stored)}, SUM(d.count * d.share), ${part(PASS_SQL)},
    ${part(`d.dkim_aligned = 'pass'`)}, ${part(`d.spf_aligned = 'pass'`)}, ${part(`NOT ${PASS_SQL} AND ${FORWARDED_SQL}`)},
    ${part(`d.disposition = 'quarantine'`)}, ${part(`d.disposition = 'reject'`)}, SUM(d.last AND d.first), SUM(DISTINCT d.bits)
    FROM (${rows} LIMIT -1) d GROUP BY 1, 2, 3, 4`;
}

const SOURCE_SUMS = ['messages', 'dmarc_pass', 'dkim_aligned_pass', 'spf_aligned_pass', 'forwarded', 'quarantine', 'reject', 'reports'];
const TOTALS = ['messages', 'dmarc_pass', 'dkim_aligned_pass', 'spf_aligned_pass', 'forwarded', 'quarantine', 'reject'];

/** A queued report, with what settling it needs (see migrations/0010). */
type PolicyColumns = Parameters<typeof effectivePolicy>[0];
interface Queued extends PolicyColumns {
  id: number;
  domain: string;
  reporter: string;
  begin: number;
  end: number;
  records: number;
  /** DKIM signatures past each record's first, as its writer counted them (1 when not counted). */
  extra: number;
  /** Rows it may spread over days (reportShares `spread`); null: REPORT_SPREAD_ROWS. */
  spread: number | null;
  has_policy: number | null;
  messages: number | null;
}

export class RollupWriter {
  private readonly s: Record<string, Statement>;

  private readonly batchRows: number;
  private readonly maxReportRows: number;

  /**
   * `queue` is the table of reports waiting to be settled: rollup_pending, or the migration's
   * temporary list of every stored report (buildRollups), whose records may be older than
   * lower-case names (`stored`). `batchRows`: rows per batch (SETTLE_ROWS); `maxReportRows`: rows
   * one report may make (MAX_REPORT_ROLLUP_ROWS, reportShares).
   */
  constructor(
    private readonly db: Db,
    opts: { queue?: string; stored?: boolean; batchRows?: number; maxReportRows?: number } = {},
  ) {
    const queue = opts.queue ?? 'rollup_pending';
    const stored = opts.stored ?? false;
    this.batchRows = opts.batchRows ?? SETTLE_ROWS;
    this.maxReportRows = opts.maxReportRows ?? MAX_REPORT_ROLLUP_ROWS;
    const n = (col: string) => `${col} = ${col} + excluded.${col}`;
    const intoSources = `INSERT INTO dmarc_daily (domain, day, source_ip, header_from, ${SOURCE_SUMS.join(', ')}, reporters)`;
    const onSource = `ON CONFLICT (domain, day, source_ip, header_from) DO UPDATE SET ${SOURCE_SUMS.map(n).join(', ')},
      reporters = reporters | excluded.reporters`;
    const intoDkim = `INSERT INTO dkim_daily (domain, day, source_ip, signing_domain, selector, result, messages)`;
    const onDkim = `ON CONFLICT (domain, day, source_ip, signing_domain, selector, result) DO UPDATE SET messages = messages + excluded.messages`;
    db.exec(`CREATE TEMP TABLE IF NOT EXISTS rollup_shares (
      report_id INTEGER NOT NULL, day INTEGER NOT NULL, share REAL NOT NULL, last INTEGER NOT NULL,
      domain TEXT NOT NULL, bits INTEGER NOT NULL, PRIMARY KEY (report_id, day)) WITHOUT ROWID`);
    // Each statement of a batch reads the batch's records once, through their reports' day shares
    // (temp.rollup_shares, a row per report and day), and adds each group of rows with one key
    // once: SQLite sorts them by key first, so the rollup tables are written in key order.
    this.s = {
      queued: db.prepare(
        `SELECT q.report_id AS id, r.policy_domain AS domain, r.reporter, r.begin_ts AS begin, r.end_ts AS end,
                r.record_count AS records, q.multi_signed AS extra, q.spread_rows AS spread, q.messages, q.dmarc_pass AS dmarcPass, q.dkim_aligned_pass AS dkimAlignedPass,
                q.spf_aligned_pass AS spfAlignedPass, q.forwarded, q.quarantine, q.reject,
                p.p, p.sp, p.np, p.pct, p.adkim, p.aspf, p.report_id AS has_policy
           FROM ${queue} q JOIN reports r ON r.id = q.report_id LEFT JOIN dmarc_policies p ON p.report_id = q.report_id
          ORDER BY q.report_id LIMIT 2000`,
      ),
      anyQueued: db.prepare(`SELECT EXISTS (SELECT 1 FROM ${queue})`).pluck(),
      queue: db.prepare(`INSERT INTO ${queue} (report_id, first_id, firsts, multi_signed, spread_rows, ${TOTALS.join(', ')})
        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`),
      unqueue: db.prepare(`DELETE FROM ${queue} WHERE report_id IN (SELECT report_id FROM temp.rollup_shares)`),
      clearShares: db.prepare(`DELETE FROM temp.rollup_shares`),
      share: db.prepare(`INSERT INTO temp.rollup_shares (report_id, day, share, last, domain, bits) VALUES (?, ?, ?, ?, ?, ?)`),
      bitOf: db.prepare(`SELECT bit FROM domain_reporters WHERE domain = ? AND reporter = ?`).pluck(),
      newBit: db
        .prepare(
          `INSERT INTO domain_reporters (domain, reporter, bit)
           SELECT @domain, @reporter, min(COUNT(*), ${LAST_BIT}) FROM domain_reporters WHERE domain = @domain RETURNING bit`,
        )
        .pluck(),
      // Reports whose writer noted which records come first from their source IP: their records
      // are read by id (first_id on, one after the other), which costs less than through the
      // report_id index. The others (the migration, a report too big for the flags) through the
      // index, with a window finding the first records.
      sourcesFlagged: db.prepare(`${intoSources}
        ${sourcesFrom(
          `SELECT ${SOURCE_ROW}, substr(q.firsts, d.id - q.first_id + 1, 1) = x'31' AS first
           FROM temp.rollup_shares s CROSS JOIN ${queue} q ON q.report_id = s.report_id
             CROSS JOIN dmarc_records d ON d.id BETWEEN q.first_id AND q.first_id + length(q.firsts) - 1 AND +d.report_id = s.report_id
           WHERE q.firsts IS NOT NULL`,
          stored,
        )} ${onSource}`),
      sourcesWindowed: db.prepare(`${intoSources}
        ${sourcesFrom(
          `SELECT ${SOURCE_ROW}, d.first
           FROM (SELECT id, report_id, source_ip, header_from, count, dkim_aligned, spf_aligned, disposition, reasons,
                        id = min(id) OVER (PARTITION BY report_id, source_ip) AS first
                   FROM dmarc_records WHERE report_id IN (
                     SELECT q.report_id FROM temp.rollup_shares s CROSS JOIN ${queue} q ON q.report_id = s.report_id
                      WHERE s.last AND q.firsts IS NULL)) d
             CROSS JOIN temp.rollup_shares s ON s.report_id = d.report_id`,
          stored,
        )} ${onSource}`),
      // Forwarded and mailing-list records are left out of dkim_daily. Nearly every record has one
      // or two signatures: the first is read straight from the JSON text, the others through
      // json_each, only for records with more, of reports whose writer saw any (or did not count).
      dkimFirst: db.prepare(`${intoDkim}
        SELECT s.domain, s.day, d.source_ip, ${nameKey(`d.dkim_results ->> '$[0].domain'`, stored)},
          ${nameKey(`d.dkim_results ->> '$[0].selector'`, stored)}, coalesce(d.dkim_results ->> '$[0].result', 'none'), SUM(d.count * s.share)
        FROM temp.rollup_shares s CROSS JOIN dmarc_records d ON d.report_id = s.report_id
        WHERE d.dkim_results <> '[]' AND NOT ${FORWARDED_SQL} GROUP BY 1, 2, 3, 4, 5, 6 ${onDkim}`),
      dkimMore: db.prepare(`${intoDkim}
        SELECT s.domain, s.day, d.source_ip, lower(coalesce(k.value ->> 'domain', '')), lower(coalesce(k.value ->> 'selector', '')),
          coalesce(k.value ->> 'result', 'none'), SUM(d.count * s.share)
        FROM temp.rollup_shares s CROSS JOIN ${queue} q ON q.report_id = s.report_id AND q.multi_signed > 0
          CROSS JOIN dmarc_records d ON d.report_id = s.report_id JOIN json_each(d.dkim_results) k
        WHERE d.dkim_results LIKE '[{%},{%' AND k.key > 0 AND NOT ${FORWARDED_SQL} GROUP BY 1, 2, 3, 4, 5, 6 ${onDkim}`),
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
        ON CONFLICT (day, domain) DO UPDATE SET ${[...TOTALS, 'dmarc_reports'].map(n).join(', ')}`),
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
   * Queues an aggregate report, just stored with its records, for the rollups (settle). Call
   * inside the transaction that stored it. `noted` is what its writer noted of the records as they
   * passed, with the ids its records were stored under; without it SQLite works it out.
   */
  queue(id: number, noted?: { tally: DmarcRecordTally; firstId: number; lastId: number; records: number; spread?: number }): void {
    // The flags index records by id from the first: only when the ids follow one another.
    const flags = noted && noted.lastId - noted.firstId + 1 === noted.records ? noted.tally.firsts() : null;
    const t = noted?.tally.totals;
    this.s.queue!.run(
      id,
      flags ? noted!.firstId : null,
      flags,
      noted ? noted.tally.extraSignatures : 1,
      noted?.spread ?? null,
      t?.messages ?? null,
      t?.dmarcPass ?? null,
      t?.dkimAlignedPass ?? null,
      t?.spfAlignedPass ?? null,
      t?.forwarded ?? null,
      t?.quarantine ?? null,
      t?.reject ?? null,
    );
  }

  /** Whether any report is queued: read without taking the write lock. */
  anyQueued(): boolean {
    return this.s.anyQueued!.get() === 1;
  }

  /**
   * Adds the next batch of queued reports (up to batchRows rows, at least one report) to
   * the rollups and takes them off the queue. Call inside a write transaction; returns
   * how many reports it settled (0: the queue is empty).
   */
  settle(): number {
    const s = this.s;
    const page = s.queued!.all() as (Queued & DmarcTotals)[];
    if (page.length === 0) return 0;
    const cache = this.db.pragma('cache_size', { simple: true }) as number;
    this.db.pragma(`cache_size = -${SETTLE_CACHE_KIB}`);
    try {
      return this.settleBatch(page);
    } finally {
      this.db.pragma(`cache_size = ${cache}`);
    }
  }

  private settleBatch(page: (Queued & DmarcTotals)[]): number {
    const s = this.s;
    s.clearShares!.run();
    let rows = 0;
    let taken = 0;
    for (const r of page) {
      // A day's rows of a report: one per record, and one per DKIM signature past a record's first.
      const perDay = r.records + r.extra;
      const shares = reportShares(r.begin, r.end, perDay, this.maxReportRows, r.spread ?? undefined);
      const weight = perDay * shares.length;
      if (taken > 0 && rows + weight > this.batchRows) break;
      rows += weight;
      taken++;
      const bits = 1n << BigInt(this.bitOf(r.domain, r.reporter));
      const totals = r.messages === null ? (s.totals!.get(r.id) as DmarcTotals) : r;
      const policy = r.has_policy === null ? null : policyKey(effectivePolicy(r));
      shares.forEach(([day, share], i) => {
        const last = i === shares.length - 1 ? 1 : 0;
        s.share!.run(r.id, day, share, last, r.domain, bits);
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
        if (policy !== null) s.policyDay!.run(r.domain, day, policy, share, last);
        if (last) s.coverage!.run(r.domain, 'dmarc', day, r.reporter, r.end);
      });
    }
    s.sourcesFlagged!.run();
    s.sourcesWindowed!.run();
    s.dkimFirst!.run();
    s.dkimMore!.run();
    s.unqueue!.run();
    s.clearShares!.run();
    return taken;
  }

  /** Adds a TLS report to the rollups; `budget`: the rollup rows of its input (INPUT_SPREAD_ROWS). */
  tls(r: TlsRollupReport, budget?: SpreadBudget): void {
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
    const bounded = boundTlsReport(rows);
    if (budget && bounded.length) {
      const spread = takeSpread(budget, r.begin, r.end, bounded[0]!.reportRows!, MAX_TLS_REPORT_ROWS);
      for (const b of bounded) b.spreadRows = spread;
    }
    const { tls, tlsFailures } = rollupTls(bounded);
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

/**
 * Settles every queued report (RollupWriter.settle), a batch per write transaction; for callers
 * without a ReportStore (the alert evaluation, retention). Returns the number of reports settled.
 */
export function settleRollups(db: Db, batchRows = SETTLE_ROWS): number {
  // Usually nothing is queued (the command that stored the reports settled them): then no
  // statements are prepared for nothing.
  if (queuedReports(db) === 0) return 0;
  const writer = new RollupWriter(db, { batchRows });
  let settled = 0;
  for (let n = 1; n > 0 && writer.anyQueued(); settled += n) n = db.transaction(() => writer.settle()).immediate();
  return settled;
}

/** Aggregate reports stored and not yet added to the rollups. */
export function queuedReports(db: Db): number {
  return db.prepare(`SELECT COUNT(*) FROM rollup_pending`).pluck().get() as number;
}

/**
 * A value that changes whenever the rollups may have: when a report is stored (report ids only
 * grow: reports are never deleted) and when queued reports are settled (the queue shrinks, and
 * only a new report adds to it). For caches of what is read from the rollups.
 */
export function rollupsVersion(db: Db): string {
  const [top, queued] = db.prepare(`SELECT (SELECT max(id) FROM reports), (SELECT COUNT(*) FROM rollup_pending)`).raw(true).get() as [
    number | null,
    number,
  ];
  return `${top ?? 0}/${queued}`;
}

/**
 * Fills the rollups from the reports already in the database: the step of migration 0004 that
 * SQL alone cannot do with progress. DMARC reports go through the same statements as at ingest,
 * a batch of reports (about 200,000 records) at a time; TLS and failure reports one by one.
 * `progress` is called with (done, total) reports now and then.
 */
export function buildRollups(db: Db, progress?: (done: number, total: number) => void): void {
  const total = db.prepare(`SELECT COUNT(*) FROM reports`).pluck().get() as number;
  let done = 0;
  const tick = (n: number) => {
    done += n;
    progress?.(done, total);
  };

  // Every aggregate report is queued, in a list of this connection's own, and settled as at ingest,
  // with nothing noted of its records (SQLite works it out) and names lower-cased (older records).
  db.exec(`CREATE TEMP TABLE rollup_build (report_id INTEGER PRIMARY KEY, first_id INTEGER, firsts BLOB,
    multi_signed INTEGER NOT NULL DEFAULT 1, spread_rows INTEGER, messages REAL, dmarc_pass REAL, dkim_aligned_pass REAL, spf_aligned_pass REAL,
    forwarded REAL, quarantine REAL, reject REAL)`);
  db.exec(`INSERT INTO temp.rollup_build (report_id) SELECT id FROM reports WHERE kind = 'dmarc'`);
  const writer = new RollupWriter(db, { queue: 'temp.rollup_build', stored: true });
  for (let n; (n = writer.settle()) > 0;) tick(n);

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
  db.exec(`DROP TABLE temp.rollup_build`);
  progress?.(total, total);
}
