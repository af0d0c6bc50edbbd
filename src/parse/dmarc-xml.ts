import { RuawatchError, errorMessage } from '../errors.js';
import type { ByteStream } from '../unpack/bytes.js';
import { overLimit, type Limits } from '../unpack/limits.js';
import {
  clean,
  emailDomain,
  normaliseDomain,
  normaliseReportId,
  normaliseResult,
  normaliseSelector,
  normaliseWord,
  parseCount,
} from './normalise.js';
import { checkDateRange, checkTotal, nowSeconds, quote, readCount, readIp } from './plausible.js';
import type { DmarcHeader, DmarcRecord } from './types.js';
import { XmlTextDecoder } from './xml-text.js';
import { XmlTokenizer } from './xml-tokenizer.js';

/**
 * Receives a report as it is parsed. `header` comes once, before any record; returning 'stop'
 * (the report is already stored) ends parsing early.
 */
export interface DmarcSink {
  header(h: DmarcHeader): 'continue' | 'stop';
  record(r: DmarcRecord): void;
}

export interface DmarcParseOptions {
  limits: Limits;
  /** The reporter's address from the mail, used when org_name and email are both empty. */
  fallbackReporterEmail?: string | null;
  /** The ingest clock in epoch seconds, which the date range is judged by (default: now). */
  now?: number;
}

export interface DmarcParseResult {
  header: DmarcHeader;
  records: number;
  stopped: boolean;
}

const NS_DMARC_2 = 'urn:ietf:params:xml:ns:dmarc-2.0';
/** Records held back while a (non-conforming) report puts records before its metadata. */
const MAX_PENDING_RECORDS = 10_000;
/**
 * <error> elements of report_metadata kept (stored with the report); the rest are counted. Real
 * reports list none or one; 1.8 million in a 13 MB gzip held 400 MiB and stored 20 MB of JSON.
 */
const MAX_REPORT_ERRORS = 20;

/**
 * Streams a DMARC aggregate report (RFC 7489 appendix C, RFC 9990, the pre-RFC draft) through a
 * strict streaming tokenizer (xml-tokenizer.ts), handing each <record> to the sink as soon as it closes, so memory stays
 * flat whatever the report's size. DOCTYPE declarations are refused outright: no entity is ever
 * defined, expanded or fetched (XXE, billion laughs).
 *
 * Implausible content refuses the whole report (plausible.ts): a date range that cannot be a
 * report's (E_DATE_RANGE), a count that is not a whole number up to [limits] max_message_count or
 * counts that add up past it (E_COUNT), a source IP that is not an IP address, or messages
 * counted without one (E_ADDRESS). A record with neither a source IP nor messages says nothing
 * and is left out. Errors thrown by the sink (the store's) pass through as they are.
 */
export async function parseDmarcXml(
  src: ByteStream,
  head: Uint8Array,
  opts: DmarcParseOptions,
  sink: DmarcSink,
): Promise<DmarcParseResult> {
  const state = new DmarcState(opts, sink);
  const decoder = new XmlTextDecoder(head);
  const parser = new XmlTokenizer(state);

  try {
    for await (const chunk of src) {
      parser.write(decoder.decode(chunk));
      if (state.stopped || state.feedbackClosed) break;
    }
    if (!state.stopped && !state.feedbackClosed) {
      parser.write(decoder.decode(new Uint8Array(0), true));
      parser.close();
    }
  } catch (err) {
    // The sink's own failures (the database busy or full) are not the document's: relabelled as
    // E_XML they would send a good report to the Invalid folder instead of being tried again.
    if (err instanceof RuawatchError || state.isSinkError(err)) throw err;
    throw new RuawatchError('E_XML', `not well-formed XML: ${errorMessage(err)}`, { cause: err });
  }
  if (!state.sawRoot) throw new RuawatchError('E_XML', 'the XML document has no root element');
  return { header: state.finish(), records: state.recordCount, stopped: state.stopped };
}

/** A record as read, before normalisation: the same fields, with source IP and count still text. */
type PartialRecord = Omit<DmarcRecord, 'sourceIp' | 'count'> & { sourceIp: string | null; count: string | null };

class DmarcState {
  /** Values are trimmed and read from leaf elements only: blank runs between tags are noise. */
  readonly skipsBlankText = true;
  /** Local names of the open elements. */
  private readonly stack: string[] = [];
  private buf = '';
  private readonly meta: Record<string, string | null> = {};
  private readonly policy: Record<string, string | null> = {};
  private readonly errors: string[] = [];
  /** <error> elements past MAX_REPORT_ERRORS, counted and not kept. */
  private moreErrors = 0;
  private version: string | null = null;
  private namespace2 = false;
  private rec: PartialRecord | null = null;
  private pending: DmarcRecord[] = [];
  private metaDone = false;
  private policyDone = false;
  private header: DmarcHeader | null = null;
  /** Depth of the <extension> element we are inside, 0 when outside (RFC 9990 section 4.2). */
  private extensionDepth = 0;
  sawRoot = false;
  stopped = false;
  /**
   * Set when </feedback> closes inside a wrapper element. One real reporter (ikea.com) wraps the
   * report in an <xs:schema> start tag that is never closed; the report itself is complete, so it
   * is taken and whatever follows </feedback> is ignored.
   */
  feedbackClosed = false;
  private wrapped = false;
  recordCount = 0;
  /** Messages counted by the records so far. */
  private messages = 0;
  /** What the sink threw, if it did. */
  private sinkError: { error: unknown } | null = null;

  constructor(
    private readonly opts: DmarcParseOptions,
    private readonly sink: DmarcSink,
  ) {}

  open(tagName: string, attributes: Readonly<Record<string, string>>): void {
    const name = localName(tagName);
    const parent = this.stack[this.stack.length - 1];
    this.stack.push(name);
    this.buf = '';
    if (this.stack.length > this.opts.limits.maxXmlDepth) {
      throw overLimit('maxXmlDepth', `XML nesting deeper than ${this.opts.limits.maxXmlDepth} elements`);
    }
    if (this.stack.length === 1 && name === 'schema' && parent === undefined) {
      this.sawRoot = true;
      this.wrapped = true;
      return;
    }
    if (this.stack.length === (this.wrapped ? 2 : 1)) {
      this.sawRoot = true;
      if (name !== 'feedback') {
        throw new RuawatchError('E_NOT_REPORT', `XML whose root element is <${tagName}>, not <feedback>: not a DMARC aggregate report`);
      }
      for (const [k, v] of Object.entries(attributes)) {
        if ((k === 'xmlns' || k.startsWith('xmlns:')) && String(v).trim() === NS_DMARC_2) this.namespace2 = true;
      }
      return;
    }
    if (this.extensionDepth || name === 'extension') {
      this.extensionDepth++;
      return;
    }
    switch (name) {
      case 'record':
        if (parent === 'feedback') {
          this.rec = emptyRecord();
          if (++this.recordCount > this.opts.limits.maxRecordsPerReport) {
            throw overLimit('maxRecordsPerReport', `the report has more than ${this.opts.limits.maxRecordsPerReport} records`);
          }
        }
        break;
      case 'reason':
        if (parent === 'policy_evaluated' && this.rec) this.addResult(this.rec.reasons, { type: null, comment: null });
        break;
      case 'dkim':
        if (parent === 'auth_results' && this.rec)
          this.addResult(this.rec.dkimResults, { domain: null, selector: null, result: null, humanResult: null });
        break;
      case 'spf':
        if (parent === 'auth_results' && this.rec)
          this.addResult(this.rec.spfResults, { domain: null, scope: null, result: null, humanResult: null });
        break;
    }
  }

  /** Adds a DKIM or SPF result or an override reason to the record being read, within the limit. */
  private addResult<T>(list: T[], entry: T): void {
    const r = this.rec!;
    const max = this.opts.limits.maxRecordResults;
    if (r.dkimResults.length + r.spfResults.length + r.reasons.length >= max) {
      throw overLimit('maxRecordResults', `record ${this.recordCount} lists more than ${max} DKIM and SPF results and override reasons`);
    }
    list.push(entry);
  }

  text(t: string): void {
    this.buf += t;
    if (this.buf.length > this.opts.limits.maxXmlTextChars) {
      throw overLimit('maxXmlTextChars', `an XML element holds more than ${this.opts.limits.maxXmlTextChars} characters of text`);
    }
  }

  close(): void {
    // The tokenizer has checked that this end tag matches the element opened last.
    const name = this.stack.pop()!;
    const parent = this.stack[this.stack.length - 1];
    const value = this.buf;
    this.buf = '';
    if (this.extensionDepth) {
      this.extensionDepth--;
      return;
    }
    const rec = this.rec;
    if (name === 'feedback' && this.wrapped && this.stack.length === 1) {
      this.feedbackClosed = true;
      return;
    }
    switch (parent) {
      case 'feedback':
        if (name === 'version') this.version = clean(value);
        else if (name === 'report_metadata') this.metaDone = true;
        else if (name === 'policy_published') this.policyDone = true;
        else if (name === 'record' && rec) {
          this.rec = null;
          const r = this.finishRecord(rec);
          if (r) this.emit(r);
        }
        if (this.metaDone && this.policyDone && !this.header) this.flushPending();
        return;
      case 'report_metadata':
        if (name === 'error') {
          const e = clean(value);
          if (e && this.errors.length < MAX_REPORT_ERRORS) this.errors.push(e);
          else if (e) this.moreErrors++;
        } else if (name === 'version') this.version = clean(value);
        else this.meta[name] = value;
        return;
      case 'date_range':
        this.meta[name] = value;
        return;
      case 'policy_published':
        this.policy[name] = value;
        return;
    }
    if (!rec) return;
    switch (parent) {
      case 'row':
        if (name === 'source_ip') rec.sourceIp = value;
        else if (name === 'count') rec.count = value;
        return;
      case 'policy_evaluated':
        if (name === 'disposition') rec.disposition = value;
        else if (name === 'dkim') rec.dkim = value;
        else if (name === 'spf') rec.spf = value;
        return;
      case 'reason': {
        const r = rec.reasons[rec.reasons.length - 1];
        if (r && (name === 'type' || name === 'comment')) r[name] = value;
        return;
      }
      case 'identifiers':
        if (name === 'header_from') rec.headerFrom = value;
        else if (name === 'envelope_from') rec.envelopeFrom = value;
        else if (name === 'envelope_to') rec.envelopeTo = value;
        return;
      case 'dkim': {
        const d = rec.dkimResults[rec.dkimResults.length - 1];
        if (!d) return;
        if (name === 'domain') d.domain = value;
        else if (name === 'selector') d.selector = value;
        else if (name === 'result') d.result = value;
        else if (name === 'human_result') d.humanResult = value;
        return;
      }
      case 'spf': {
        const s = rec.spfResults[rec.spfResults.length - 1];
        if (!s) return;
        if (name === 'domain') s.domain = value;
        else if (name === 'scope') s.scope = value;
        else if (name === 'result') s.result = value;
        else if (name === 'human_result') s.humanResult = value;
        return;
      }
    }
  }

  isSinkError(err: unknown): boolean {
    return this.sinkError !== null && this.sinkError.error === err;
  }

  /** Calls the sink, noting what it throws so that it is not taken for an XML error. */
  private toSink<T>(fn: () => T): T {
    try {
      return fn();
    } catch (err) {
      this.sinkError = { error: err };
      throw err;
    }
  }

  /** A record normalised and checked (see parseDmarcXml), or null when it holds nothing at all. */
  private finishRecord(r: PartialRecord): DmarcRecord | null {
    const n = this.recordCount;
    const limits = this.opts.limits;
    const count = readCount(r.count, () => `record ${n}: <count>`, limits);
    const ipText = clean(r.sourceIp);
    if (ipText === null) {
      if (!count) return null;
      throw new RuawatchError('E_ADDRESS', `record ${n} counts ${count} messages but has no <source_ip>`);
    }
    const sourceIp = readIp(ipText, () => `record ${n}: <source_ip>`);
    if (count === null) throw new RuawatchError('E_COUNT', `record ${n} has no <count>`);
    this.messages += count;
    checkTotal(this.messages, 'the counts of the records', limits);
    return normaliseRecord(r, sourceIp, count);
  }

  private emit(r: DmarcRecord): void {
    if (this.stopped) return;
    if (this.header) {
      // As toSink, without a closure per record.
      try {
        this.sink.record(r);
      } catch (err) {
        this.sinkError = { error: err };
        throw err;
      }
      return;
    }
    this.pending.push(r);
    if (this.pending.length > MAX_PENDING_RECORDS) {
      throw new RuawatchError('E_REPORT', `more than ${MAX_PENDING_RECORDS} records before <report_metadata> and <policy_published>`);
    }
  }

  private flushPending(): void {
    const header = this.buildHeader();
    this.header = header;
    if (this.toSink(() => this.sink.header(header)) === 'stop') {
      this.stopped = true;
      this.pending = [];
      return;
    }
    for (const r of this.pending) this.toSink(() => this.sink.record(r));
    this.pending = [];
  }

  finish(): DmarcHeader {
    if (!this.header && !this.stopped) this.flushPending();
    return this.header!;
  }

  private buildHeader(): DmarcHeader {
    const m = this.meta;
    const reporterEmail = clean(m.email);
    const reporter = clean(m.org_name) ?? emailDomain(reporterEmail) ?? emailDomain(this.opts.fallbackReporterEmail ?? null);
    if (!reporter) throw new RuawatchError('E_REPORT', 'the report names no reporter: <org_name> and <email> are both empty');
    const reportId = normaliseReportId(m.report_id);
    if (!reportId) throw new RuawatchError('E_REPORT', 'the report has no <report_id>');
    const beginText = clean(m.begin);
    const endText = clean(m.end);
    if (beginText === null || endText === null) {
      throw new RuawatchError('E_REPORT', `the report has no <date_range> (begin "${beginText ?? ''}", end "${endText ?? ''}")`);
    }
    const begin = parseCount(beginText);
    const end = parseCount(endText);
    if (begin === null || end === null) {
      throw new RuawatchError(
        'E_DATE_RANGE',
        `the report's <date_range> is not two times in epoch seconds (begin ${quote(beginText)}, end ${quote(endText)})`,
      );
    }
    checkDateRange(begin, end, nowSeconds(this.opts.now), this.opts.limits);
    const p = this.policy;
    const domain = normaliseDomain(p.domain);
    if (!domain) throw new RuawatchError('E_REPORT', 'the report has no <policy_published><domain>');
    const generator = clean(m.generator);
    const is2 =
      this.namespace2 ||
      this.version === '2.0' ||
      generator !== null ||
      p.np !== undefined ||
      p.testing !== undefined ||
      p.discovery_method !== undefined;
    return {
      kind: 'dmarc',
      reporter,
      reportId,
      policyDomain: domain,
      begin,
      end,
      schema: is2 ? '2.0' : '1.0',
      version: this.version,
      reporterEmail,
      extraContactInfo: clean(m.extra_contact_info),
      generator,
      errors: this.moreErrors ? [...this.errors, `(${this.moreErrors} more errors not kept)`] : this.errors,
      policy: {
        domain,
        adkim: normaliseWord(p.adkim),
        aspf: normaliseWord(p.aspf),
        p: normaliseWord(p.p),
        sp: normaliseWord(p.sp),
        np: normaliseWord(p.np),
        pct: parseCount(p.pct),
        fo: clean(p.fo),
        testing: normaliseWord(p.testing),
        discoveryMethod: normaliseWord(p.discovery_method),
      },
    };
  }
}

function localName(name: string): string {
  const i = name.indexOf(':');
  return i < 0 ? name : name.slice(i + 1);
}

function emptyRecord(): PartialRecord {
  return {
    sourceIp: null,
    count: null,
    disposition: null,
    dkim: null,
    spf: null,
    reasons: [],
    headerFrom: null,
    envelopeFrom: null,
    envelopeTo: null,
    dkimResults: [],
    spfResults: [],
  };
}

function normaliseRecord(r: PartialRecord, sourceIp: string, count: number): DmarcRecord {
  return {
    sourceIp,
    count,
    disposition: normaliseWord(r.disposition),
    dkim: normaliseResult(r.dkim),
    spf: normaliseResult(r.spf),
    reasons: r.reasons
      .map((x) => ({ type: normaliseWord(x.type), comment: clean(x.comment) }))
      .filter((x) => x.type !== null || x.comment !== null),
    headerFrom: normaliseDomain(r.headerFrom),
    envelopeFrom: normaliseDomain(r.envelopeFrom),
    envelopeTo: normaliseDomain(r.envelopeTo),
    dkimResults: r.dkimResults.map((d) => ({
      domain: normaliseDomain(d.domain),
      selector: normaliseSelector(d.selector),
      result: normaliseResult(d.result),
      humanResult: clean(d.humanResult),
    })),
    spfResults: r.spfResults.map((s) => ({
      domain: normaliseDomain(s.domain),
      scope: normaliseWord(s.scope),
      result: normaliseResult(s.result),
      humanResult: clean(s.humanResult),
    })),
  };
}
