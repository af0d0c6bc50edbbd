import type { Statement } from 'better-sqlite3';
import { RuawatchError } from '../errors.js';
import type { DmarcHeader, DmarcRecord, FailureReport, ReportKey, TlsReport } from '../parse/types.js';
import type { Db } from './db.js';
import { noLock, type WriteLock } from './lock.js';
import { takeSpread } from '../analyse/rollups.js';
import { DmarcRecordTally, RollupWriter, SETTLE_ROWS, type SpreadBudget } from './rollups.js';

/**
 * Records of an aggregate report are held in memory (as ready-made rows) up to this many, and the
 * write transaction opens only when the report is complete: other threads writing to the same
 * database wait for the short insert, not for the parse. A bigger report opens its transaction
 * here and streams the rest, so memory stays bounded.
 */
const BUFFERED_RECORDS = 5000;

/**
 * Records are inserted this many to a statement (a multi-row VALUES): each run of a statement has
 * a fixed cost (the call into the driver, starting and halting the SQLite program) that a row
 * inserted alone pays in full. Measured under callgrind on 15,000 records: 36,000 instructions a
 * record one at a time, 27,700 ten at a time, 29,100 twenty-five at a time (bigger statements
 * bind as many values and compile to longer programs).
 */
const RECORDS_PER_INSERT = 10;
const RECORD_COLUMNS = 12;

export interface StoredMeta {
  input: string;
  sha256: string;
  size: number;
}

export interface ReportTotals {
  records: number;
  messages: number;
  sha256: string;
  size: number;
}

/**
 * Writes reports. Each report and all its rows go in one transaction; the natural key
 * (kind, reporter, report id, policy domain, begin, end) makes a second copy a no-op.
 */
export class ReportStore {
  private readonly findKey: Statement;
  private readonly findCopy: Statement;
  private readonly insertReport: Statement;
  private readonly finishReport: Statement;
  private readonly insertPolicy: Statement;
  private readonly insertRecord: Statement;
  private readonly insertRecords: Statement;
  /**
   * Values of RECORDS_PER_INSERT rows, reused from one statement run to the next, and passed spread
   * out: the driver reads arguments at once but an array element by element through the engine's
   * property lookup (30 million more instructions on 15,000 records).
   */
  private readonly batch: unknown[] = new Array<unknown>(RECORDS_PER_INSERT * RECORD_COLUMNS);
  private readonly insertTlsPolicy: Statement;
  private readonly insertTlsFailure: Statement;
  private readonly insertFailureReport: Statement;
  private readonly insertIngestFailure: Statement;
  private readonly rollups: RollupWriter;
  /** Records this store committed since it last settled. */
  private unsettled = 0;

  constructor(
    private readonly db: Db,
    /** Taken around every write transaction; see lock.ts. */
    private readonly lock: WriteLock = noLock,
    /** Settles once this many records were committed since the last settle (in batches of as many rows: SETTLE_ROWS). */
    private readonly settleEvery = SETTLE_ROWS,
  ) {
    this.findKey = db.prepare(
      `SELECT id FROM reports WHERE kind = ? AND reporter = ? AND report_id = ? AND policy_domain = ? AND begin_ts = ? AND end_ts = ?`,
    );
    this.findCopy = db.prepare(
      `SELECT raw_sha256 AS sha256, input FROM reports WHERE kind = ? AND reporter = ? AND report_id = ? AND policy_domain = ? AND begin_ts = ? AND end_ts = ?`,
    );
    this.insertReport = db.prepare(`INSERT INTO reports
      (kind, reporter, reporter_email, report_id, policy_domain, begin_ts, end_ts, schema_version, version_text,
       generator, contact_info, errors, record_count, message_count, raw_sha256, raw_size, input, ingested_at)
      VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
      ON CONFLICT DO NOTHING`);
    this.finishReport = db.prepare(`UPDATE reports SET record_count = ?, message_count = ?, raw_sha256 = ?, raw_size = ? WHERE id = ?`);
    this.insertPolicy = db.prepare(`INSERT INTO dmarc_policies
      (report_id, domain, adkim, aspf, p, sp, np, pct, fo, testing, discovery_method)
      VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`);
    const recordInsert = (rows: number) => `INSERT INTO dmarc_records
      (report_id, source_ip, count, disposition, dkim_aligned, spf_aligned, header_from, envelope_from, envelope_to,
       reasons, dkim_results, spf_results)
      VALUES ${new Array<string>(rows).fill(`(${new Array<string>(RECORD_COLUMNS).fill('?').join(', ')})`).join(', ')}`;
    this.insertRecord = db.prepare(recordInsert(1));
    this.insertRecords = db.prepare(recordInsert(RECORDS_PER_INSERT));
    this.insertTlsPolicy = db.prepare(`INSERT INTO tls_policies
      (report_id, policy_type, policy_domain, policy_strings, mx_hosts, successful, failed) VALUES (?, ?, ?, ?, ?, ?, ?)`);
    this.insertTlsFailure = db.prepare(`INSERT INTO tls_failures
      (policy_id, result_type, sending_mta_ip, receiving_mx_hostname, receiving_mx_helo, receiving_ip, failed_sessions,
       additional_information, failure_reason_code) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`);
    this.insertFailureReport = db.prepare(`INSERT INTO failure_reports
      (report_id, format, feedback_type, source_ip, reported_domain, original_mail_from, original_rcpt_to, header_from,
       auth_failure, delivery_result, dkim_domain, dkim_selector, spf_dns, identity_alignment, authentication_results)
      VALUES (@id, @format, @feedbackType, @sourceIp, @reportedDomain, @originalMailFrom, @originalRcptTo, @headerFrom,
       @authFailure, @deliveryResult, @dkimDomain, @dkimSelector, @spfDns, @identityAlignment, @authenticationResults)`);
    this.insertIngestFailure = db.prepare(`INSERT INTO ingest_failures
      (input, outcome, error_code, message, sha256, size, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)`);
    this.rollups = new RollupWriter(db, { batchRows: settleEvery });
  }

  exists(key: ReportKey): boolean {
    return this.findKey.get(key.kind, key.reporter, key.reportId, key.policyDomain, key.begin, key.end) !== undefined;
  }

  /** The stored report with this key: the SHA-256 of its bytes and the input it came from. */
  storedCopy(key: ReportKey): { sha256: string; input: string } | null {
    const row = this.findCopy.get(key.kind, key.reporter, key.reportId, key.policyDomain, key.begin, key.end) as
      { sha256: string; input: string } | undefined;
    return row ?? null;
  }

  /**
   * Starts storing an aggregate report whose records are still being parsed. Returns null when the
   * report is already stored; a copy stored meanwhile by another thread is found on commit.
   */
  beginDmarc(h: DmarcHeader, input: string, budget?: SpreadBudget): DmarcWriter | null {
    if (this.exists(h)) return null;
    return new DmarcWriter(this, h, input, budget);
  }

  /**
   * @internal used by DmarcWriter: takes the lock, opens the transaction and writes the report row
   * and its policy. Returns the new report's id, or null (lock released, nothing written) when the
   * report is already stored.
   */
  openDmarc(h: DmarcHeader, input: string, final: ReportTotals | null): number | null {
    this.lock.acquire();
    try {
      this.db.exec('BEGIN IMMEDIATE');
    } catch (err) {
      this.lock.release();
      throw err;
    }
    try {
      const id = this.insertReportRow(
        h,
        {
          schema: h.schema,
          version: h.version,
          generator: h.generator,
          contactInfo: h.extraContactInfo,
          reporterEmail: h.reporterEmail,
          errors: h.errors.length ? JSON.stringify(h.errors) : null,
          input,
        },
        final,
      );
      if (id !== null) {
        const p = h.policy;
        this.insertPolicy.run(id, p.domain, p.adkim, p.aspf, p.p, p.sp, p.np, p.pct, p.fo, p.testing, p.discoveryMethod);
        return id;
      }
    } catch (err) {
      this.endDmarc(0, null, false);
      throw err;
    }
    this.endDmarc(0, null, false);
    return null;
  }

  /** @internal used by DmarcWriter: a record as the values of its row, report id left out. */
  recordRow(r: DmarcRecord): unknown[] {
    return [
      r.sourceIp,
      r.count,
      r.disposition,
      r.dkim,
      r.spf,
      r.headerFrom,
      r.envelopeFrom,
      r.envelopeTo,
      r.reasons.length ? JSON.stringify(r.reasons) : '[]',
      // The stored form (migrations/0001): [{"domain", "selector" or "scope", "result", "human_result"}].
      JSON.stringify(r.dkimResults.map((d) => ({ domain: d.domain, selector: d.selector, result: d.result, human_result: d.humanResult }))),
      JSON.stringify(r.spfResults.map((d) => ({ domain: d.domain, scope: d.scope, result: d.result, human_result: d.humanResult }))),
    ];
  }

  /**
   * @internal used by DmarcWriter, inside the transaction: writes the rows in order, several
   * to a statement, and returns the id of the last. Rows written by one statement get consecutive
   * ids (SQLite gives each the largest id in use plus one), so a report's records are numbered in
   * order, as the flags the rollups read by id expect (RollupWriter.settle).
   */
  writeRows(reportId: number, rows: unknown[][]): number {
    const to = rows.length;
    let i = 0;
    let last = 0;
    for (; i + RECORDS_PER_INSERT <= to; i += RECORDS_PER_INSERT) {
      const b = this.batch;
      for (let k = 0; k < RECORDS_PER_INSERT; k++) {
        const row = rows[i + k]!;
        const o = k * RECORD_COLUMNS;
        b[o] = reportId;
        for (let c = 1; c < RECORD_COLUMNS; c++) b[o + c] = row[c - 1];
      }
      last = Number(this.insertRecords.run(...b).lastInsertRowid);
    }
    for (; i < to; i++) last = Number(this.insertRecord.run(reportId, ...rows[i]!).lastInsertRowid);
    return last;
  }

  /**
   * @internal used by DmarcWriter: commits (setting the totals of a report opened without them,
   * and queueing the report for the daily rollups) when `commit`, else rolls back; and releases
   * the lock. Once this store has committed settleEvery records since it last settled, it
   * settles (a long ingest keeps the rollups up to date as it goes).
   */
  endDmarc(
    reportId: number,
    totals: ReportTotals | null,
    commit: boolean,
    noted?: { tally: DmarcRecordTally; firstId: number; lastId: number; records: number; spread?: number },
  ): void {
    try {
      if (commit) {
        if (totals) this.finishReport.run(totals.records, totals.messages, totals.sha256, totals.size, reportId);
        this.rollups.queue(reportId, noted);
        this.db.exec('COMMIT');
        this.unsettled += noted?.records ?? 0;
      } else if (this.db.inTransaction) {
        // SQLite may have rolled back by itself (SQLITE_FULL, an I/O error): then there is nothing
        // to roll back, and "no transaction is active" must not hide the error that caused it.
        this.db.exec('ROLLBACK');
      }
    } catch (err) {
      if (this.db.inTransaction) this.db.exec('ROLLBACK');
      throw err;
    } finally {
      this.lock.release();
    }
    if (this.unsettled < this.settleEvery) return;
    try {
      this.settle();
    } catch {
      // The report is stored and stays queued: the settle its command ends with does it, and
      // reports the error if it persists.
    }
  }

  /**
   * Adds the aggregate reports stored but not yet in the daily rollups (by any thread or process)
   * to them, a batch of about settleEvery rows per transaction (RollupWriter.settle). Every
   * command that stores reports calls it before it ends; readers that must see every stored report
   * (the alert evaluation, retention) before they read. Returns the number of reports settled.
   */
  settle(): number {
    let settled = 0;
    for (let n; (n = this.settleBatch()) > 0;) settled += n;
    return settled;
  }

  /** Settles one batch (one transaction); 0 when nothing is queued. */
  settleBatch(): number {
    this.unsettled = 0;
    // Nothing queued (only duplicates stored, or a report that failed): no write lock taken.
    return this.rollups.anyQueued() ? this.locked(() => this.rollups.settle()) : 0;
  }

  /**
   * Stores a TLS report in one transaction; false when it was already stored. `budget`: the
   * rollup rows of its input (INPUT_SPREAD_ROWS).
   */
  storeTls(r: TlsReport, meta: StoredMeta, budget?: SpreadBudget): boolean {
    return this.locked(() => {
      const sessions = r.policies.reduce((n, p) => n + p.successful + p.failed, 0);
      const totals = { records: r.policies.length, messages: sessions, sha256: meta.sha256, size: meta.size };
      const id = this.insertReportRow(r, { contactInfo: r.contactInfo, input: meta.input }, totals);
      if (id === null) return false;
      for (const p of r.policies) {
        const pid = this.insertTlsPolicy.run(
          id,
          p.policyType,
          p.policyDomain,
          JSON.stringify(p.policyStrings),
          JSON.stringify(p.mxHosts),
          p.successful,
          p.failed,
        ).lastInsertRowid;
        for (const f of p.failures) {
          this.insertTlsFailure.run(
            pid,
            f.resultType,
            f.sendingMtaIp,
            f.receivingMxHostname,
            f.receivingMxHelo,
            f.receivingIp,
            f.failedSessions,
            f.additionalInformation,
            f.failureReasonCode,
          );
        }
      }
      this.rollups.tls(
        {
          domain: r.policyDomain,
          reporter: r.reporter,
          begin: r.begin,
          end: r.end,
          policies: r.policies.map((p) => ({
            policyDomain: p.policyDomain,
            mxHosts: p.mxHosts,
            successful: p.successful,
            failed: p.failed,
            failures: p.failures.map((f) => ({ resultType: f.resultType, mx: f.receivingMxHostname, sessions: f.failedSessions })),
          })),
        },
        budget,
      );
      return true;
    });
  }

  /** Stores a failure report summary in one transaction; false when it was already stored. */
  storeFailure(r: FailureReport, meta: StoredMeta): boolean {
    return this.locked(() => {
      const id = this.insertReportRow(
        r,
        { reporterEmail: r.reporterEmail, input: meta.input },
        { records: 1, messages: 1, sha256: meta.sha256, size: meta.size },
      );
      if (id === null) return false;
      this.insertFailureReport.run({ ...r, id });
      this.rollups.failure({
        domain: r.policyDomain,
        begin: r.begin,
        sourceIp: r.sourceIp,
        dkimDomain: r.dkimDomain,
        dkimSelector: r.dkimSelector,
      });
      return true;
    });
  }

  recordIngestFailure(
    input: string,
    outcome: 'failed' | 'skipped',
    code: string,
    message: string,
    sha256: string | null,
    size: number | null,
  ): void {
    this.locked(() => this.insertIngestFailure.run(input, outcome, code, message, sha256, size, Math.floor(Date.now() / 1000)));
  }

  /** Runs fn in one write transaction, holding the lock. */
  private locked<T>(fn: () => T): T {
    this.lock.acquire();
    try {
      return this.db.transaction(fn).immediate();
    } finally {
      this.lock.release();
    }
  }

  private insertReportRow(
    key: ReportKey,
    extra: {
      schema?: string;
      version?: string | null;
      generator?: string | null;
      contactInfo?: string | null;
      reporterEmail?: string | null;
      errors?: string | null;
      input: string;
    },
    /** Counts and hash, when known before the rows are written; else finishReport sets them. */
    final: ReportTotals | null,
  ): number | null {
    const res = this.insertReport.run(
      key.kind,
      key.reporter,
      extra.reporterEmail ?? null,
      key.reportId,
      key.policyDomain,
      key.begin,
      key.end,
      extra.schema ?? null,
      extra.version ?? null,
      extra.generator ?? null,
      extra.contactInfo ?? null,
      extra.errors ?? null,
      final?.records ?? 0,
      final?.messages ?? 0,
      final?.sha256 ?? '',
      final?.size ?? 0,
      extra.input,
      Math.floor(Date.now() / 1000),
    );
    return res.changes === 0 ? null : Number(res.lastInsertRowid);
  }
}

/**
 * An aggregate report being written as it is parsed: records are buffered until the report ends
 * (one short transaction) or until BUFFERED_RECORDS, after which the transaction stays open and
 * the rest is written as it comes.
 */
export class DmarcWriter {
  records = 0;
  messages = 0;
  private buffer: unknown[][] = [];
  /** What the daily rollups need to know of the records, noted as they come. */
  private readonly tally = new DmarcRecordTally();
  /** Ids of the first and last records written. */
  private firstId = 0;
  private lastId = 0;
  /** Report id once the transaction is open; null before; 'duplicate' when another copy won. */
  private id: number | 'duplicate' | null = null;
  private open = true;
  constructor(
    private readonly store: ReportStore,
    private readonly header: DmarcHeader,
    private readonly input: string,
    /** The rollup rows of the report's input (INPUT_SPREAD_ROWS); none: the report alone. */
    private readonly budget?: SpreadBudget,
  ) {}

  record(r: DmarcRecord): void {
    this.records++;
    this.messages += r.count;
    if (this.id === 'duplicate') return;
    this.tally.add(r);
    this.buffer.push(this.store.recordRow(r));
    if (this.id !== null) {
      // The transaction is open: records are written as they come, a statement's worth at a time.
      if (this.buffer.length >= RECORDS_PER_INSERT) this.flush(this.id);
      return;
    }
    if (this.buffer.length >= BUFFERED_RECORDS) this.begin();
  }

  /** Commits; false when the report turned out to be stored already (by another thread). */
  commit(sha256: string, size: number): boolean {
    if (!this.open) throw new RuawatchError('E_INTERNAL', 'report writer already closed');
    const totals = { records: this.records, messages: this.messages, sha256, size };
    // Still all in memory: the report row is written complete, with its totals.
    const opened = this.id !== null;
    if (!opened) this.begin(totals);
    else if (typeof this.id === 'number') {
      try {
        this.flush(this.id);
      } catch (err) {
        this.rollback();
        throw err;
      }
    }
    this.open = false;
    if (this.id === 'duplicate') return false;
    // What the input's earlier reports left of INPUT_SPREAD_ROWS, and what this one takes of it.
    const h = this.header;
    const spread = this.budget ? takeSpread(this.budget, h.begin, h.end, this.records + this.tally.extraSignatures) : undefined;
    this.store.endDmarc(this.id as number, opened ? totals : null, true, {
      tally: this.tally,
      firstId: this.firstId,
      lastId: this.lastId,
      records: this.records,
      spread,
    });
    return true;
  }

  rollback(): void {
    if (!this.open) return;
    this.open = false;
    if (typeof this.id === 'number') this.store.endDmarc(this.id, null, false);
  }

  /** Writes the buffered records (inside the open transaction). */
  private flush(id: number): void {
    const n = this.buffer.length;
    if (n === 0) return;
    const last = this.store.writeRows(id, this.buffer);
    if (this.firstId === 0) this.firstId = last - n + 1;
    this.lastId = last;
    this.buffer = [];
  }

  private begin(totals: ReportTotals | null = null): void {
    const id = this.store.openDmarc(this.header, this.input, totals);
    if (id === null) {
      this.id = 'duplicate';
      this.buffer = [];
      return;
    }
    this.id = id;
    try {
      this.flush(id);
    } catch (err) {
      this.rollback();
      throw err;
    }
  }
}
