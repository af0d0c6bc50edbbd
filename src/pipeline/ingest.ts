import { createHash } from 'node:crypto';
import type { Logger } from 'pino';
import { RuawatchError, errorCode, errorMessage, isInfrastructure } from '../errors.js';
import { parseDmarcXml } from '../parse/dmarc-xml.js';
import { parseFailureReport } from '../parse/failure.js';
import { parseTlsReport } from '../parse/tlsrpt-json.js';
import type { ReportKind } from '../parse/types.js';
import { splitMbox, type MboxItem } from '../unpack/mbox.js';
import type { DmarcWriter, ReportStore } from '../store/reports.js';
import { inflate, listZip } from '../unpack/archive.js';
import { fromBuffer, peek, readAll, type ByteStream } from '../unpack/bytes.js';
import { overLimit, type Limits } from '../unpack/limits.js';
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

/** What became of one report-sized piece of an input. */
export type Leaf =
  | { input: string; status: 'stored'; kind: ReportKind; records: number }
  | { input: string; status: 'duplicate'; kind: ReportKind }
  | { input: string; status: 'failed'; code: string; error: string }
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
  failed: { input: string; error: string; code: string }[];
  skipped: { input: string; reason: string }[];
}

export function emptySummary(): IngestSummary {
  return { inputs: 0, reports: { dmarc: 0, tlsrpt: 0, failure: 0 }, records: 0, duplicates: 0, failed: [], skipped: [] };
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
}

/** Thrown inside a container to say "this piece holds no report", with the reason. */
class NoReport extends Error {}

/**
 * source -> unpack -> parse -> store, for one input at a time. Everything below an input is
 * decided by content (magic bytes), never by file name or MIME type. A failure in one report
 * never stops the others in the same input or batch.
 */
export class Ingestor implements IngestRunner {
  readonly inFlight = 1;

  constructor(
    private readonly store: ReportStore,
    private readonly limits: Limits,
    private readonly log: Logger,
  ) {}

  async ingest(input: IngestInput): Promise<InputResult> {
    const leaves: Leaf[] = [];
    await this.guarded(input.name, leaves, () => this.handle(input.name, input.open(), { depth: 0, fromAddress: null }, leaves, true));
    const troubled = leaves.some((l) => l.status === 'failed' || l.status === 'none');
    const digest = troubled ? await hashInput(input) : null;
    for (const leaf of leaves) this.record(leaf, digest);
    return { input: input.name, leaves };
  }

  /** Runs one piece, turning its error into a leaf so that siblings carry on. */
  private async guarded(name: string, leaves: Leaf[], fn: () => Promise<void>): Promise<void> {
    try {
      await fn();
    } catch (err) {
      if (err instanceof NoReport) leaves.push({ input: name, status: 'none', reason: err.message });
      else leaves.push({ input: name, status: 'failed', code: errorCode(err), error: errorMessage(err) });
    }
  }

  private record(leaf: Leaf, digest: { sha256: string; size: number } | null): void {
    const log = this.log.child({ stage: 'ingest', input: leaf.input });
    if (leaf.status === 'stored') log.info({ kind: leaf.kind, records: leaf.records }, 'report stored');
    else if (leaf.status === 'duplicate') log.info({ kind: leaf.kind }, 'report already stored');
    else {
      const outcome = leaf.status === 'failed' ? 'failed' : 'skipped';
      const code = leaf.status === 'failed' ? leaf.code : 'E_NO_REPORT';
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
        throw new NoReport('an empty part');
      case 'gzip':
      case 'zlib':
        return this.handle(
          name,
          inflate(stream, kind, this.limits, kind === 'gzip' ? 'the gzip data' : 'the zlib data'),
          inner,
          leaves,
          topLevel,
        ).catch((err: unknown) => {
          if (err instanceof NoReport) throw new NoReport(`${kind} holding ${err.message}`);
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
      case 'other':
        throw new NoReport(describeOther(head));
    }
  }

  private async handleZip(name: string, src: ByteStream, ctx: Context, leaves: Leaf[]): Promise<void> {
    const buf = await readAll(src, this.limits, 'maxArchiveBytes', 'the zip archive');
    const entries = listZip(buf, this.limits, 'the zip archive');
    if (entries.length === 0) throw new NoReport('an empty zip archive');
    const before = leaves.length;
    const empty: string[] = [];
    for (const entry of entries) {
      const entryName = `${name}#${entry.path}`;
      const sub: Leaf[] = [];
      await this.guarded(entryName, sub, () => this.handle(entryName, entry.open(), ctx, sub, false));
      // Entries that hold nothing (a README next to the report) are noted only if nothing else is found.
      for (const l of sub) {
        if (l.status === 'none') empty.push(`${entry.path}: ${l.reason}`);
        else leaves.push(l);
      }
    }
    if (leaves.length === before) throw new NoReport(`a zip archive with no report (${empty.join('; ')})`);
  }

  private async handleMbox(name: string, src: ByteStream, ctx: Context, leaves: Leaf[]): Promise<void> {
    // One message held back, so a file holding a single message keeps its plain name.
    let held: { index: number; item: MboxItem } | null = null;
    let index = 0;
    const run = async (itemName: string, item: MboxItem) => {
      const sub: Leaf[] = [];
      await this.guarded(itemName, sub, async () => {
        if (!item.ok) throw item.error;
        await this.handleMail(itemName, item.message, ctx, sub);
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
    const mctx: Context = { ...ctx, fromAddress: mail.fromAddress ?? ctx.fromAddress };
    const failure = parseFailureReport(mail);
    if (failure) {
      if ('notFailure' in failure) throw new NoReport(failure.notFailure);
      leaves.push(this.storeFailure(name, failure.report, raw));
      return;
    }
    const candidates = mail.parts.filter((p) => p.contentType !== 'text/rfc822-headers' && p.content.length > 0);
    const found: Leaf[] = [];
    const notes: string[] = [];
    for (const [i, part] of candidates.entries()) {
      const label = part.filename ?? `part${i + 1}`;
      const partName = candidates.length > 1 ? `${name}#${label}` : name;
      const sub: Leaf[] = [];
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
      for (const l of sub) {
        if (l.status === 'none') notes.push(`${label}: ${l.reason}`);
        else found.push(l);
      }
    }
    if (found.length === 0) {
      const what = candidates.length === 0 ? 'no attachment' : notes.join('; ');
      throw new NoReport(`a mail with no report in it (${what})`);
    }
    leaves.push(...found);
  }

  private async storeDmarc(name: string, src: ByteStream, head: Uint8Array, ctx: Context): Promise<Leaf> {
    const tap = new Tap(src);
    let writer: DmarcWriter | null = null;
    let duplicate = false;
    try {
      const res = await parseDmarcXml(
        tap.stream(),
        head,
        { limits: this.limits, fallbackReporterEmail: ctx.fromAddress },
        {
          header: (h) => {
            writer = this.store.beginDmarc(h, name);
            if (writer) return 'continue';
            duplicate = true;
            return 'stop';
          },
          record: (r) => writer!.record(r),
        },
      );
      if (duplicate) return { input: name, status: 'duplicate', kind: 'dmarc' };
      const w = writer as DmarcWriter | null;
      if (!w) throw new RuawatchError('E_REPORT', 'the report ended before its metadata');
      if (!w.commit(tap.sha256(), tap.size)) return { input: name, status: 'duplicate', kind: 'dmarc' };
      this.log.debug(
        { stage: 'store', input: name, reporter: res.header.reporter, reportId: res.header.reportId },
        'aggregate report committed',
      );
      return { input: name, status: 'stored', kind: 'dmarc', records: w.records };
    } catch (err) {
      (writer as DmarcWriter | null)?.rollback();
      throw err;
    }
  }

  private async storeTls(name: string, src: ByteStream, ctx: Context): Promise<Leaf> {
    const raw = await readAll(src, this.limits, 'maxJsonBytes', 'the JSON document');
    const report = parseTlsReport(raw, { limits: this.limits, fallbackReporterEmail: ctx.fromAddress });
    const stored = this.store.storeTls(report, { input: name, sha256: sha256(raw), size: raw.length });
    return stored
      ? { input: name, status: 'stored', kind: 'tlsrpt', records: report.policies.length }
      : { input: name, status: 'duplicate', kind: 'tlsrpt' };
  }

  private storeFailure(name: string, report: Parameters<ReportStore['storeFailure']>[0], raw: Buffer): Leaf {
    const stored = this.store.storeFailure(report, { input: name, sha256: sha256(raw), size: raw.length });
    return stored ? { input: name, status: 'stored', kind: 'failure', records: 1 } : { input: name, status: 'duplicate', kind: 'failure' };
  }
}

function isReportish(kind: ContentKind): boolean {
  return kind === 'gzip' || kind === 'zip' || kind === 'zlib' || kind === 'xml' || kind === 'json' || kind === 'mail';
}

function describeKind(kind: ContentKind): string {
  return kind === 'other' ? 'neither XML, JSON nor an archive' : kind === 'empty' ? 'empty' : kind;
}

function describeOther(head: Uint8Array): string {
  const text = Buffer.from(head.subarray(0, 40)).toString('latin1');
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
