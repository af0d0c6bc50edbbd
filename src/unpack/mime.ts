import type { AddressObject } from 'mailparser';
import { RuawatchError, errorMessage } from '../errors.js';
import { parseSimpleMail } from './mime-simple.js';

export interface MailPart {
  /** File name from Content-Disposition / Content-Type (RFC 2231 continuations joined), if any. */
  filename: string | null;
  contentType: string;
  content: Buffer;
}

export interface Mail {
  fromAddress: string | null;
  messageId: string | null;
  date: Date | null;
  subject: string | null;
  text: string;
  /** Every non-body part: attachments, a non-text whole body, message/* parts. */
  parts: MailPart[];
}

/**
 * Parses an RFC 5322 message held in memory (its size already capped by the caller). The usual
 * shapes of report mail are read directly (mime-simple.ts); the rest by mailparser, which decodes
 * every transfer encoding and RFC 2231 / RFC 2047 file names. A report that is the whole body
 * (Google sends application/zip as the only part) comes back as an attachment too. Both readers
 * see the mail after normaliseMail, so they agree on it.
 */
export async function parseMail(raw: Buffer): Promise<Mail> {
  raw = normaliseMail(raw);
  let simple: Mail | null = null;
  try {
    simple = parseSimpleMail(raw);
  } catch {
    // Whatever the direct reader cannot take, mailparser reads.
  }
  return simple ?? parseWithMailparser(raw);
}

/** The mailparser path alone (exported for the test that holds both paths to the same result). */
export async function parseWithMailparser(raw: Buffer): Promise<Mail> {
  // Loaded on first use: mailparser and its dependencies take a while to load (docs/performance.md,
  // "Mail"), and a run over plain report files never needs them.
  const { simpleParser } = await import('mailparser');
  let m;
  try {
    m = await simpleParser(raw, { skipHtmlToText: true, skipTextToHtml: true, skipImageLinks: true, maxHtmlLengthToParse: 1 });
  } catch (err) {
    throw new RuawatchError('E_MAIL', `the mail could not be parsed: ${errorMessage(err)}`, { cause: err });
  }
  return {
    fromAddress: firstAddress(m.from),
    messageId: m.messageId?.trim() || null,
    date: m.date && !Number.isNaN(m.date.getTime()) ? m.date : null,
    subject: m.subject ?? null,
    text: m.text ?? '',
    parts: m.attachments.map((a) => ({
      filename: a.filename ?? null,
      contentType: (a.contentType || 'application/octet-stream').toLowerCase(),
      content: a.content,
    })),
  };
}

function firstAddress(a: AddressObject | AddressObject[] | undefined): string | null {
  const obj = Array.isArray(a) ? a[0] : a;
  return obj?.value?.[0]?.address?.toLowerCase() ?? null;
}

const SP = 0x20;
const TAB = 0x09;
const CR = 0x0d;
const LF = 0x0a;

/**
 * Three shapes found in real report mail that neither reader takes as intended, made plain before
 * either reads the mail (the bytes are returned as they are when none applies):
 *
 * - Blank lines (nothing but spaces or tabs) before the headers, as some mail stores write them
 *   (one line of 255 spaces has been seen): dropped.
 * - Every line ending in a bare CR and none in LF (old Mac line ends, or a tool that dropped the
 *   LFs; RFC 5322 section 2.3 wants CRLF): the CRs become CRLF. Read as it was, the whole mail
 *   would be one header line holding no report.
 * - A line of spaces or tabs between a MIME part's headers and its body: it ends the headers, as
 *   the empty line it stands for, unless the next line continues a folded header (then it is the
 *   obsolete folding of RFC 5322 section 4.2). Otherwise the part's body is read as more of its
 *   headers, and an ARF failure report loses every field of its report part. The top-level
 *   headers are left alone: ending them early would lose the mail's Content-Type.
 */
export function normaliseMail(raw: Buffer): Buffer {
  let out = raw;
  const c0 = out[0];
  if (c0 === SP || c0 === TAB || c0 === CR || c0 === LF) out = out.subarray(leadingBlankLines(out));
  if (out.indexOf(LF) < 0 && out.indexOf(CR) >= 0) out = Buffer.from(out.toString('latin1').replace(/\r/g, '\r\n'), 'latin1');
  return endPartHeadersAtBlankLines(out);
}

/** Bytes taken by whole lines of spaces and tabs at the start (the line ends included). */
function leadingBlankLines(b: Buffer): number {
  let end = 0;
  for (let i = 0; i < b.length; i++) {
    const c = b[i];
    if (c === SP || c === TAB) continue;
    if (c === LF) end = i + 1;
    else if (c === CR) end = b[i + 1] === LF ? ++i + 1 : i + 1;
    else break;
  }
  return end;
}

const BOUNDARY_PARAM = /\bboundary\s*=\s*(?:"([^"\r\n]+)"|([^\s;"]+))/gi;
const HEADER_LINE = /^[!-9;-~]+[ \t]*:/;

/** Whether some line holds nothing but spaces and tabs (found with the byte search; most mail has none). */
function hasWhiteLine(b: Buffer): boolean {
  for (const start of ['\n ', '\n\t']) {
    for (let i = b.indexOf(start); i >= 0; i = b.indexOf(start, i + 1)) {
      let j = i + 1;
      while (b[j] === SP || b[j] === TAB) j++;
      if (b[j] === LF || (b[j] === CR && b[j + 1] === LF)) return true;
    }
  }
  return false;
}

function endPartHeadersAtBlankLines(raw: Buffer): Buffer {
  if (!hasWhiteLine(raw)) return raw;
  const s = raw.toString('latin1');
  const boundaries = new Set<string>();
  for (const m of s.matchAll(BOUNDARY_PARAM)) boundaries.add(`--${m[1] ?? m[2]}`);
  if (boundaries.size === 0) return raw;
  const lines = s.split('\n');
  let changed = false;
  // Whether the line being read is in a part's headers: after its boundary line, up to the empty line.
  let inHeaders = false;
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.replace(/\r$/, '');
    if (!inHeaders) {
      inHeaders = boundaries.has(line.replace(/[ \t]+$/, ''));
      continue;
    }
    if (line === '') {
      inHeaders = false;
    } else if (/^[ \t]+$/.test(line)) {
      const next = (lines[i + 1] ?? '').replace(/\r$/, '');
      if (!/^[ \t]/.test(next) || /^[ \t]*$/.test(next)) {
        lines[i] = lines[i]!.endsWith('\r') ? '\r' : '';
        changed = true;
        inHeaders = false;
      }
    } else if (!HEADER_LINE.test(line) && !/^[ \t]/.test(line)) {
      inHeaders = false;
    }
  }
  return changed ? Buffer.from(lines.join('\n'), 'latin1') : raw;
}
