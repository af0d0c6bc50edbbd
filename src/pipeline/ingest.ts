import { createHash } from 'node:crypto';
import type { Logger } from 'pino';
import { RuawatchError, errorCode, errorMessage, isInfrastructure } from '../errors.js';
import { parseDmarcXml } from '../parse/dmarc-xml.js';
import { parseFailureReport } from '../parse/failure.js';
import { parseTlsReport } from '../parse/tlsrpt-json.js';
import type { ReportKey, ReportKind } from '../parse/types.js';
import { splitMbox, type MboxItem } from '../unpack/mbox.js';
import type { DmarcWriter, ReportStore } from '../store/reports.js';
import { inflate, listZip } from '../unpack/archive.js';
import { fromBuffer, peek, readAll, type ByteStream } from '../unpack/bytes.js';
import { BudgetExceeded, InputBudget, overLimit, type Limits } from '../unpack/limits.js';
import { parseMail } from '../unpack/mime.js';
import { SNIFF_BYTES, sniff, type ContentKind } from '../unpack/sniff.js';
import type { IngestRunner, PortableInput } from './pool.js';

/** One thing to ingest: a file, stdin, or a message from a mailbox. */
export interface IngestInput {
  name: string;
  /** The input's bytes. May be called again to hash a failed input; may throw the second time (stdin). */
  open(): ByteStream;
  /** The same input in a form a worker thread can take (absent for standard input). */
  portable?: PortableInput;
}

/**
 * What became of one report-sized piece of an input. A conflict is a report whose natural key is
 * already stored with other bytes (see Ingestor): the stored one stands. A failure with scope
 * 'input' refused the whole input (a budget ran out): what was stored before it stays stored, and
 * a mail goes to the Invalid folder all the same.
 */
export type Leaf =
  | { input: string; status: 'stored'; kind: ReportKind; records: number }
  | { input: string; status: 'duplicate'; kind: ReportKind }
  | { input: string; status: 'conflict'; kind: ReportKind; storedInput: string; reporter: string; reportId: string }
  | { input: string; status: 'failed'; code: string; error: string; scope?: 'input' }
  | { input: string; status: 'none'; reason: string };

export interface InputResult {
  input: string;
  leaves: Leaf[];
}

export interface IngestSummary {
  inputs: number;
  reports: Record<ReportKind, number>;
  records: number;
  duplicates: number;
  /** Reports not stored because another with the same key and other bytes came first. */
  conflicts: { input: string; stored_input: string; kind: ReportKind; reporter: string; report_id: string }[];
  failed: { input: string; error: string; code: string }[];
  skipped: { input: string; reason: string }[];
}

export function emptySummary(): IngestSummary {
  return { inputs: 0, reports: { dmarc: 0, tlsrpt: 0, failure: 0 }, records: 0, duplicates: 0, conflicts: [], failed: [], skipped: [] };
}

/** Adds one input's outcome to a summary (the JSON contract of `ruawatch ingest --json`). */
export function addToSummary(summary: IngestSummary, result: InputResult): void {
  summary.inputs++;
  for (const leaf of result.leaves) {
    switch (leaf.status) {
      case 'stored':
        summary.reports[leaf.kind]++;
        summary.records += leaf.records;
        break;
      case 'duplicate':
        summary.duplicates++;
        break;
      case 'conflict':
        summary.conflicts.push({
          input: leaf.input,
          stored_input: leaf.storedInput,
          kind: leaf.kind,
          reporter: leaf.reporter,
          report_id: leaf.reportId,
        });
        break;
      case 'failed':
        summary.failed.push({ input: leaf.input, error: leaf.error, code: leaf.code });
        break;
      case 'none':
        summary.skipped.push({ input: leaf.input, reason: leaf.reason });
        break;
    }
  }
}

interface Context {
  depth: number;
  /** The report mail's sender, for reports that name no reporter of their own. */
  fromAddress: string | null;
  /** What the input (or the mbox message) being read may still use; see limits.ts. */
  budget: InputBudget;
}

/**
 * "This piece holds no report", with the reason: an outcome (skipped), not a failure. The parsers
 * say the same of well-formed XML or JSON that is not a report, with the same code.
 */
function notReport(reason: string): RuawatchError {
  return new RuawatchError('E_NOT_REPORT', reason);
}

/**
 * source -> unpack -> parse -> store, for one input at a time. Everything below an input is
 * decided by content (magic bytes), never by file name or MIME type. A failure in one report
 * never stops the others in the same input or batch; a budget of the input running out stops
 * the input (limits.ts).
 *
 * Two reports with one natural key (kind, reporter, report id, policy domain, begin, end): the
 * first stored stands. A later copy with the same bytes (the SHA-256 of the report itself) is a
 * duplicate; one with other bytes is a conflict, listed with the input that was stored. Inputs
 * commit in input order, on one thread or many (pool.ts), so which copy stands never depends on
 * timing.
 */
export class Ingestor implements IngestRunner {
  readonly inFlight = 1;

  constructor(
    private readonly store: ReportStore,
    private readonly limits: Limits,
    private readonly log: Logger,
    /** The ingest clock, in milliseconds: reports' dates are judged by it. */
    private readonly clock: () => number = Date.now,
  ) {}

  async ingest(input: IngestInput): Promise<InputResult> {
    const leaves: Leaf[] = [];
    await this.bounded(input.name, leaves, (budget) =>
      this.handle(input.name, input.open(), { depth: 0, fromAddress: null, budget }, leaves, true),
    );
    const troubled = leaves.some((l) => l.status === 'failed' || l.status === 'none');
    const digest = troubled ? await hashInput(input) : null;
    for (const leaf of leaves) this.record(leaf, digest);
    return { input: input.name, leaves };
  }

  /**
   * Runs a whole input (or one message of an mbox) under a budget of its own. Past the budget the
   * input is refused: one failed leaf for it with scope 'input', after what was stored before.
   */
  private async bounded(name: string, leaves: Leaf[], fn: (budget: InputBudget) => Promise<void>): Promise<void> {
    const budget = new InputBudget(this.limits);
    try {
      await this.guarded(name, leaves, () => fn(budget));
    } catch (err) {
      if (!(err instanceof BudgetExceeded)) throw err;
      leaves.push({ input: name, status: 'failed', code: err.code, error: err.message, scope: 'input' });
    }
  }

  /** Runs one piece, turning its error into a leaf so that siblings carry on (not past a budget). */
  private async guarded(name: string, leaves: Leaf[], fn: () => Promise<void>): Promise<void> {
    try {
      await fn();
    } catch (err) {
      if (err instanceof BudgetExceeded) throw err;
      if (errorCode(err) === 'E_NOT_REPORT') leaves.push({ input: name, status: 'none', reason: errorMessage(err) });
      else leaves.push({ input: name, status: 'failed', code: errorCode(err), error: errorMessage(err) });
    }
  }

  private record(leaf: Leaf, digest: { sha256: string; size: number } | null): void {
    const log = this.log.child({ stage: 'ingest', input: leaf.input });
    if (leaf.status === 'stored') log.info({ kind: leaf.kind, records: leaf.records }, 'report stored');
    else if (leaf.status === 'duplicate') log.info({ kind: leaf.kind }, 'report already stored');
    else if (leaf.status === 'conflict') {
      // Info: the summary lists conflicts (ingest, fetch), run warns of each after the poll.
      log.info(
        { kind: leaf.kind, reporter: leaf.reporter, reportId: leaf.reportId, storedInput: leaf.storedInput },
        'a different report with the same key is already stored; this one is not stored',
      );
    } else {
      const outcome = leaf.status === 'failed' ? 'failed' : 'skipped';
      const code = leaf.status === 'failed' ? leaf.code : 'E_NOT_REPORT';
      const message = leaf.status === 'failed' ? leaf.error : leaf.reason;
      // Info, not warn: the caller reports every failed input (ingest and fetch in their summary,
      // run in a warning of its own); a second warning here would only repeat it.
      log.info({ code }, `input ${outcome}: ${message}`);
      // An infrastructure failure (the database itself) cannot be recorded in the database.
      if (!isInfrastructure(code)) {
        try {
          this.store.recordIngestFailure(leaf.input, outcome, code, message, digest?.sha256 ?? null, digest?.size ?? null);
        } catch (err) {
          log.error({ err }, 'could not record the ingest failure');
        }
      }
    }
  }

  private async handle(name: string, src: ByteStream, ctx: Context, leaves: Leaf[], topLevel: boolean): Promise<void> {
    if (ctx.depth > this.limits.maxNesting) {
      throw overLimit('maxNesting', `containers nested more than ${this.limits.maxNesting} deep`);
    }
    const { head, stream } = await peek(src, SNIFF_BYTES);
    const kind = sniff(head);
    const inner = { ...ctx, depth: ctx.depth + 1 };
    switch (kind) {
      case 'empty':
        if (topLevel) throw new RuawatchError('E_EMPTY', 'the input is empty (0 bytes)');
        throw notReport('an empty part');
      case 'gzip':
      case 'zlib':
        return this.handle(
          name,
          inflate(stream, kind, this.limits, kind === 'gzip' ? 'the gzip data' : 'the zlib data', ctx.budget),
          inner,
          leaves,
          topLevel,
        ).catch((err: unknown) => {
          if (errorCode(err) === 'E_NOT_REPORT') throw notReport(`${kind} holding ${errorMessage(err)}`);
          throw err;
        });
      case 'zip':
        return this.handleZip(name, stream, inner, leaves);
      case 'xml':
        leaves.push(await this.storeDmarc(name, stream, head, ctx));
        return;
      case 'json':
        leaves.push(await this.storeTls(name, stream, ctx));
        return;
      case 'mbox':
        return this.handleMbox(name, stream, inner, leaves);
      case 'mail': {
        const raw = await readAll(stream, this.limits, 'maxMessageBytes', 'the mail');
        return this.handleMail(name, raw, inner, leaves);
      }
      case 'html':
        throw notReport('an HTML document, not a report');
      case 'pdf':
        throw notReport('a PDF document, not a report');
      case 'other':
        throw notReport(describeOther(head));
    }
  }

  private async handleZip(name: string, src: ByteStream, ctx: Context, leaves: Leaf[]): Promise<void> {
    const buf = await readAll(src, this.limits, 'maxArchiveBytes', 'the zip archive');
    const entries = listZip(buf, this.limits, 'the zip archive', ctx.budget);
    ctx.budget.addLeaves(entries.length, `a zip archive of ${entries.length} entries`);
    if (entries.length === 0) throw notReport('an empty zip archive');
    const before = leaves.length;
    const empty: string[] = [];
    for (const entry of entries) {
      const entryName = `${name}#${entry.path}`;
      const sub: Leaf[] = [];
      try {
        await this.guarded(entryName, sub, () => this.handle(entryName, entry.open(), ctx, sub, false));
      } finally {
        // Entries that hold nothing (a README next to the report) are noted only if nothing else
        // is found. What was stored is kept in the result even when a budget runs out.
        for (const l of sub) {
          if (l.status === 'none') empty.push(`${entry.path}: ${l.reason}`);
          else leaves.push(l);
        }
      }
    }
    if (leaves.length === before) throw notReport(`a zip archive with no report (${empty.join('; ')})`);
  }

  private async handleMbox(name: string, src: ByteStream, ctx: Context, leaves: Leaf[]): Promise<void> {
    // One message held back, so a file holding a single message keeps its plain name.
    let held: { index: number; item: MboxItem } | null = null;
    let index = 0;
    // Each message is a mail of its own, with a budget of its own: an mbox is a folder of mail.
    const run = async (itemName: string, item: MboxItem) => {
      const sub: Leaf[] = [];
      await this.bounded(itemName, sub, async (budget) => {
        if (!item.ok) throw item.error;
        await this.handleMail(itemName, item.message, { ...ctx, budget }, sub);
      });
      leaves.push(...sub);
    };
    for await (const item of splitMbox(src, this.limits.maxMessageBytes)) {
      index++;
      if (held) await run(`${name}#${held.index}`, held.item);
      held = { index, item };
    }
    if (held) await run(index === 1 ? name : `${name}#${held.index}`, held.item);
  }

  private async handleMail(name: string, raw: Buffer, ctx: Context, leaves: Leaf[]): Promise<void> {
    const mail = await parseMail(raw);
    ctx.budget.addLeaves(mail.parts.length, `a mail of ${mail.parts.length} parts`);
    const mctx: Context = { ...ctx, fromAddress: mail.fromAddress ?? ctx.fromAddress };
    const failure = parseFailureReport(mail, { now: this.now() });
    if (failure) {
      if ('notFailure' in failure) throw notReport(failure.notFailure);
      leaves.push(this.storeFailure(name, failure.report, raw, ctx.budget));
      return;
    }
    const candidates = mail.parts.filter((p) => p.contentType !== 'text/rfc822-headers' && p.content.length > 0);
    const found: Leaf[] = [];
    const notes: string[] = [];
    try {
      for (const [i, part] of candidates.entries()) {
        const label = part.filename ?? `part${i + 1}`;
        const partName = candidates.length > 1 ? `${name}#${label}` : name;
        const sub: Leaf[] = [];
        try {
          if (part.contentType === 'message/rfc822') {
            await this.guarded(partName, sub, () => this.handleMail(partName, part.content, { ...mctx, depth: mctx.depth + 1 }, sub));
          } else {
            const kind = sniff(part.content.subarray(0, SNIFF_BYTES));
            if (!isReportish(kind)) {
              notes.push(`${label} (${part.contentType}) is ${describeKind(kind)}`);
              continue;
            }
            await this.guarded(partName, sub, () => this.handle(partName, fromBuffer(part.content), mctx, sub, false));
          }
        } finally {
          for (const l of sub) {
            if (l.status === 'none') notes.push(`${label}: ${l.reason}`);
            else found.push(l);
          }
        }
      }
    } finally {
      // What was stored is kept in the result even when a budget runs out.
      leaves.push(...found);
    }
    if (found.length === 0) {
      const what = candidates.length === 0 ? 'no attachment' : notes.join('; ');
      throw notReport(`a mail with no report in it (${what})`);
    }
  }

  private now(): number {
    return Math.floor(this.clock() / 1000);
  }

  private async storeDmarc(name: string, src: ByteStream, head: Uint8Array, ctx: Context): Promise<Leaf> {
    ctx.budget.addReport();
    const tap = new Tap(src);
    const bytes = tap.stream()[Symbol.asyncIterator]();
    // The parser stops reading early (a copy already stored, text after </feedback>); the stream
    // it reads cannot be closed by it, so that the rest is still read here: a report is hashed
    // whole, to tell a copy from a conflicting report.
    const unclosable: ByteStream = { [Symbol.asyncIterator]: () => ({ next: () => bytes.next() }) };
    let writer: DmarcWriter | null = null;
    try {
      const res = await parseDmarcXml(
        unclosable,
        head,
        { limits: this.limits, fallbackReporterEmail: ctx.fromAddress, now: this.now() },
        {
          header: (h) => {
            writer = this.store.beginDmarc(h, name, ctx.budget);
            return writer ? 'continue' : 'stop';
          },
          record: (r) => writer!.record(r),
        },
      );
      while (!(await bytes.next()).done) {
        // only hashing
      }
      const digest = tap.sha256();
      const w = writer as DmarcWriter | null;
      if (!w || !w.commit(digest, tap.size)) return this.notStored(name, res.header, digest);
      this.log.debug(
        { stage: 'store', input: name, reporter: res.header.reporter, reportId: res.header.reportId },
        'aggregate report committed',
      );
      return { input: name, status: 'stored', kind: 'dmarc', records: w.records };
    } catch (err) {
      (writer as DmarcWriter | null)?.rollback();
      await bytes.return?.();
      throw err;
    }
  }

  private async storeTls(name: string, src: ByteStream, ctx: Context): Promise<Leaf> {
    ctx.budget.addReport();
    const raw = await readAll(src, this.limits, 'maxJsonBytes', 'the JSON document');
    const report = parseTlsReport(raw, { limits: this.limits, fallbackReporterEmail: ctx.fromAddress, now: this.now() });
    const digest = sha256(raw);
    const stored = this.store.storeTls(report, { input: name, sha256: digest, size: raw.length }, ctx.budget);
    return stored
      ? { input: name, status: 'stored', kind: 'tlsrpt', records: report.policies.length }
      : this.notStored(name, report, digest);
  }

  private storeFailure(name: string, report: Parameters<ReportStore['storeFailure']>[0], raw: Buffer, budget: InputBudget): Leaf {
    budget.addReport();
    const digest = sha256(raw);
    const stored = this.store.storeFailure(report, { input: name, sha256: digest, size: raw.length });
    return stored ? { input: name, status: 'stored', kind: 'failure', records: 1 } : this.notStored(name, report, digest);
  }

  /** A report whose key is stored already: a duplicate when the bytes are the same, else a conflict. */
  private notStored(name: string, key: ReportKey, digest: string): Leaf {
    const stored = this.store.storedCopy(key);
    if (!stored || stored.sha256 === digest) return { input: name, status: 'duplicate', kind: key.kind };
    return { input: name, status: 'conflict', kind: key.kind, storedInput: stored.input, reporter: key.reporter, reportId: key.reportId };
  }
}

function isReportish(kind: ContentKind): boolean {
  return kind === 'gzip' || kind === 'zip' || kind === 'zlib' || kind === 'xml' || kind === 'json' || kind === 'mail';
}

function describeKind(kind: ContentKind): string {
  switch (kind) {
    case 'other':
      return 'neither XML, JSON nor an archive';
    case 'html':
      return 'an HTML document';
    case 'pdf':
      return 'a PDF document';
    default:
      return kind;
  }
}

/** Plain text is quoted from its first characters that are not blank. */
function describeOther(head: Uint8Array): string {
  const all = Buffer.from(head).toString('latin1');
  const text = all.slice(all.length - all.trimStart().length).slice(0, 40);
  const printable = /^[\x20-\x7e\t\r\n]*$/.test(text);
  return printable
    ? `plain text, not a report (starts "${text.replace(/\s+/g, ' ').trim().slice(0, 30)}")`
    : 'binary data that is neither gzip, zip, XML nor JSON';
}

/** SHA-256 of a whole input, read again from its source, so a failure can be matched to its bytes. */
async function hashInput(input: IngestInput): Promise<{ sha256: string; size: number } | null> {
  try {
    const tap = new Tap(input.open());
    for await (const _ of tap.stream()) {
      // only hashing
    }
    return { sha256: tap.sha256(), size: tap.size };
  } catch {
    return null;
  }
}

function sha256(b: Uint8Array): string {
  return createHash('sha256').update(b).digest('hex');
}

/** Hashes and counts the bytes of a stream as they pass through. */
class Tap {
  private readonly hash = createHash('sha256');
  size = 0;
  constructor(private readonly src: ByteStream) {}
  async *stream(): ByteStream {
    for await (const chunk of this.src) {
      this.hash.update(chunk);
      this.size += chunk.length;
      yield chunk;
    }
  }
  sha256(): string {
    return this.hash.digest('hex');
  }
}
