import type { Statement } from 'better-sqlite3';
import type { DmarcHeader, DmarcRecord, FailureReport, ReportKey, TlsReport } from '../parse/types.js';
import type { Db } from './db.js';

export interface StoredMeta {
  input: string;
  sha256: string;
  size: number;
}

/**
 * Writes reports. Each report and all its rows go in one transaction; the natural key
 * (kind, reporter, report id, policy domain, begin, end) makes a second copy a no-op.
 */
export class ReportStore {
  private readonly findKey: Statement;
  private readonly insertReport: Statement;
  private readonly finishReport: Statement;
  private readonly insertPolicy: Statement;
  private readonly insertRecord: Statement;
  private readonly insertTlsPolicy: Statement;
  private readonly insertTlsFailure: Statement;
  private readonly insertFailureReport: Statement;
  private readonly insertIngestFailure: Statement;

  constructor(private readonly db: Db) {
    this.findKey = db.prepare(
      `SELECT id FROM reports WHERE kind = ? AND reporter = ? AND report_id = ? AND policy_domain = ? AND begin_ts = ? AND end_ts = ?`,
    );
    this.insertReport = db.prepare(`INSERT INTO reports
      (kind, reporter, reporter_email, report_id, policy_domain, begin_ts, end_ts, schema_version, version_text,
       generator, contact_info, errors, raw_sha256, raw_size, input, ingested_at)
      VALUES (@kind, @reporter, @reporterEmail, @reportId, @policyDomain, @begin, @end, @schema, @version,
       @generator, @contactInfo, @errors, @sha256, @size, @input, @now)
      ON CONFLICT DO NOTHING`);
    this.finishReport = db.prepare(
      `UPDATE reports SET record_count = ?, message_count = ?, raw_sha256 = ?, raw_size = ? WHERE id = ?`,
    );
    this.insertPolicy = db.prepare(`INSERT INTO dmarc_policies
      (report_id, domain, adkim, aspf, p, sp, np, pct, fo, testing, discovery_method)
      VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`);
    this.insertRecord = db.prepare(`INSERT INTO dmarc_records
      (report_id, source_ip, count, disposition, dkim_aligned, spf_aligned, header_from, envelope_from, envelope_to,
       reasons, dkim_results, spf_results)
      VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`);
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
  }

  exists(key: ReportKey): boolean {
    return this.findKey.get(key.kind, key.reporter, key.reportId, key.policyDomain, key.begin, key.end) !== undefined;
  }

  /**
   * Starts storing an aggregate report whose records are still being parsed: opens the
   * transaction and writes the report row. Returns null when the report is already stored.
   */
  beginDmarc(h: DmarcHeader, input: string): DmarcWriter | null {
    if (this.exists(h)) return null;
    this.db.exec('BEGIN IMMEDIATE');
    try {
      const id = this.insertReportRow(h, {
        schema: h.schema,
        version: h.version,
        generator: h.generator,
        contactInfo: h.extraContactInfo,
        reporterEmail: h.reporterEmail,
        errors: h.errors.length ? JSON.stringify(h.errors) : null,
        input,
      });
      if (id === null) {
        this.db.exec('ROLLBACK');
        return null;
      }
      const p = h.policy;
      this.insertPolicy.run(id, p.domain, p.adkim, p.aspf, p.p, p.sp, p.np, p.pct, p.fo, p.testing, p.discoveryMethod);
      return new DmarcWriter(this, id);
    } catch (err) {
      this.db.exec('ROLLBACK');
      throw err;
    }
  }

  /** @internal used by DmarcWriter */
  writeRecord(reportId: number, r: DmarcRecord): void {
    this.insertRecord.run(
      reportId, r.sourceIp, r.count, r.disposition, r.dkim, r.spf, r.headerFrom, r.envelopeFrom, r.envelopeTo,
      r.reasons.length ? JSON.stringify(r.reasons) : '[]',
      r.dkimResults.length
        ? JSON.stringify(r.dkimResults.map((d) => ({ domain: d.domain, selector: d.selector, result: d.result, human_result: d.humanResult })))
        : '[]',
      r.spfResults.length
        ? JSON.stringify(r.spfResults.map((x) => ({ domain: x.domain, scope: x.scope, result: x.result, human_result: x.humanResult })))
        : '[]',
    );
  }

  /** @internal used by DmarcWriter */
  endDmarc(reportId: number, records: number, messages: number, sha256: string, size: number, commit: boolean): void {
    if (!commit) {
      this.db.exec('ROLLBACK');
      return;
    }
    this.finishReport.run(records, messages, sha256, size, reportId);
    this.db.exec('COMMIT');
  }

  /** Stores a TLS report in one transaction; false when it was already stored. */
  storeTls(r: TlsReport, meta: StoredMeta): boolean {
    return this.db.transaction(() => {
      const id = this.insertReportRow(r, { contactInfo: r.contactInfo, input: meta.input });
      if (id === null) return false;
      let sessions = 0;
      for (const p of r.policies) {
        const pid = this.insertTlsPolicy.run(
          id, p.policyType, p.policyDomain, JSON.stringify(p.policyStrings), JSON.stringify(p.mxHosts), p.successful, p.failed,
        ).lastInsertRowid;
        sessions += p.successful + p.failed;
        for (const f of p.failures) {
          this.insertTlsFailure.run(
            pid, f.resultType, f.sendingMtaIp, f.receivingMxHostname, f.receivingMxHelo, f.receivingIp, f.failedSessions,
            f.additionalInformation, f.failureReasonCode,
          );
        }
      }
      this.finishReport.run(r.policies.length, sessions, meta.sha256, meta.size, id);
      return true;
    })();
  }

  /** Stores a failure report summary in one transaction; false when it was already stored. */
  storeFailure(r: FailureReport, meta: StoredMeta): boolean {
    return this.db.transaction(() => {
      const id = this.insertReportRow(r, { reporterEmail: r.reporterEmail, input: meta.input });
      if (id === null) return false;
      this.insertFailureReport.run({ ...r, id });
      this.finishReport.run(1, 1, meta.sha256, meta.size, id);
      return true;
    })();
  }

  recordIngestFailure(
    input: string,
    outcome: 'failed' | 'skipped',
    code: string,
    message: string,
    sha256: string | null,
    size: number | null,
  ): void {
    this.insertIngestFailure.run(input, outcome, code, message, sha256, size, Math.floor(Date.now() / 1000));
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
  ): number | null {
    const res = this.insertReport.run({
      kind: key.kind,
      reporter: key.reporter,
      reportId: key.reportId,
      policyDomain: key.policyDomain,
      begin: key.begin,
      end: key.end,
      schema: extra.schema ?? null,
      version: extra.version ?? null,
      generator: extra.generator ?? null,
      contactInfo: extra.contactInfo ?? null,
      reporterEmail: extra.reporterEmail ?? null,
      errors: extra.errors ?? null,
      sha256: '',
      size: 0,
      input: extra.input,
      now: Math.floor(Date.now() / 1000),
    });
    return res.changes === 0 ? null : Number(res.lastInsertRowid);
  }
}

/** An aggregate report being written record by record inside its transaction. */
export class DmarcWriter {
  records = 0;
  messages = 0;
  private open = true;
  constructor(
    private readonly store: ReportStore,
    private readonly id: number,
  ) {}
  record(r: DmarcRecord): void {
    this.store.writeRecord(this.id, r);
    this.records++;
    this.messages += r.count;
  }
  commit(sha256: string, size: number): void {
    if (!this.open) return;
    this.open = false;
    this.store.endDmarc(this.id, this.records, this.messages, sha256, size, true);
  }
  rollback(): void {
    if (!this.open) return;
    this.open = false;
    this.store.endDmarc(this.id, 0, 0, '', 0, false);
  }
}
