import { isAscii, isUtf8 } from 'node:buffer';
import type { Mail, MailPart } from './mime.js';

/**
 * The mailparser release this reader was last compared with. mailparser is pinned to it in
 * package.json; test/unit/mime-simple.test.ts fails, saying what to do, when package-lock.json
 * installs another one.
 */
export const MAILPARSER_VERSION = '3.9.31';

/**
 * Fast path (ARCHITECTURE.md, "Fast paths"): a direct reading of the mail shapes report senders
 * use, in place of mailparser, which streams each part through several transforms and had been a
 * third of the time of `fetch` (docs/performance.md, "Mail"). The shapes: a single non-text body
 * (Google sends the zip as the whole mail), or multipart/mixed holding plain-text parts and
 * attachments, with ASCII headers and base64, 7bit, 8bit or binary bodies.
 * Invariant: whenever it returns a Mail, that Mail is exactly what mailparser MAILPARSER_VERSION
 * gives for the same bytes; otherwise it returns null and the caller uses mailparser.
 * Held by: test/unit/mime-simple.test.ts (every fixture mail, 2,400 generated variations, the
 * shapes normaliseMail makes plain, and the mailparser version).
 *
 * Anything else, or anything unexpected, returns null and the caller uses mailparser: encoded
 * words or 8-bit bytes in the headers read here, RFC 2231 parameters, nested multiparts, message/*
 * parts, HTML, quoted-printable, flowed text, other character sets, a missing closing boundary,
 * duplicate headers.
 */
export function parseSimpleMail(raw: Buffer): Mail | null {
  const s = raw.toString('latin1');
  // mailparser reads a lone CR in a way of its own (in a header, as a space); such mail is rare
  // enough to leave to it. (A mail whose every line ends in a bare CR is made CRLF before: mime.ts.)
  if (/\r(?!\n)/.test(s)) return null;
  const top = readHeaders(s, 0);
  if (!top) return null;
  const from = single(top.headers, 'from');
  const date = single(top.headers, 'date');
  const messageId = single(top.headers, 'message-id');
  const subject = single(top.headers, 'subject');
  if (from === undefined || date === undefined || messageId === undefined || subject === undefined) return null;
  const fromAddress = from === null ? null : plainAddress(from);
  if (fromAddress === undefined) return null;
  let when: Date | null = null;
  if (date !== null) {
    when = new Date(date);
    // mailparser would put the current time in place of a date it cannot read.
    if (Number.isNaN(when.getTime())) return null;
  }
  const type = contentType(top.headers);
  if (!type) return null;
  const mail: Mail = { fromAddress, messageId: messageIdFormat(messageId), date: when, subject: subject || null, text: '', parts: [] };
  if (type.value === 'multipart/mixed') {
    const boundary = type.params.get('boundary');
    if (!boundary) return null;
    const bodies = splitMultipart(s, top.end, boundary);
    if (!bodies) return null;
    const texts: string[] = [];
    for (const [start, end] of bodies) {
      const part = readHeaders(s, start, end);
      if (!part) return null;
      const ptype = contentType(part.headers);
      if (!ptype || !readPart(raw, s, part.headers, ptype, part.end, end, texts, mail.parts)) return null;
    }
    if (texts.length > 0) mail.text = texts.join('\n');
    return mail;
  }
  // A single body: only a report sent as the whole mail.
  if (type.value === 'text/plain') return null;
  return readPart(raw, s, top.headers, type, top.end, s.length, [], mail.parts) ? mail : null;
}

type Headers = Map<string, string[]>;

interface ContentType {
  value: string;
  params: Map<string, string>;
}

/**
 * The header block starting at `start`, unfolded, names in lower case; `end` is where the body
 * starts. Null for a block with no end or a line that is not a header.
 */
function readHeaders(s: string, start: number, limit = s.length): { headers: Headers; end: number } | null {
  const headers: Headers = new Map();
  let i = start;
  let name: string | null = null;
  let value = '';
  const flush = () => {
    if (name === null) return;
    const list = headers.get(name);
    if (list) list.push(value);
    else headers.set(name, [value]);
  };
  for (;;) {
    if (i >= limit) return null;
    let eol = s.indexOf('\n', i);
    if (eol < 0 || eol >= limit) eol = limit;
    const line = s.charCodeAt(eol - 1) === 13 && eol > i ? s.slice(i, eol - 1) : s.slice(i, eol);
    const next = Math.min(eol + 1, limit);
    if (line.length === 0) {
      flush();
      return { headers, end: next };
    }
    const first = line.charCodeAt(0);
    if (first === 32 || first === 9) {
      if (name === null) return null;
      // Unfolded as mailparser unfolds: the line break and the indent become one space.
      value += ` ${line.replace(/^[ \t]+/, '')}`;
    } else {
      flush();
      const colon = line.indexOf(':');
      if (colon <= 0) return null;
      name = line.slice(0, colon).trim().toLowerCase();
      value = line.slice(colon + 1);
    }
    if (eol >= limit) return null;
    i = next;
  }
}

/**
 * The value of a header that may appear once: trimmed, null when absent, undefined when repeated
 * or when it holds 8-bit bytes or encoded words (mailparser decodes those).
 */
function single(headers: Headers, name: string): string | null | undefined {
  const list = headers.get(name);
  if (!list) return null;
  if (list.length !== 1) return undefined;
  const v = list[0]!.trim();
  return /^[\t\x20-\x7e]*$/.test(v) && !v.includes('=?') ? v : undefined;
}

/** As mailparser gives it: in angle brackets, added where missing; null when empty. */
function messageIdFormat(v: string | null): string | null {
  if (!v) return null;
  return `${v.startsWith('<') ? '' : '<'}${v}${v.endsWith('>') ? '' : '>'}`;
}

/** "a@b.example" or "Name <a@b.example>", lower case; undefined for anything else. */
function plainAddress(v: string): string | null | undefined {
  const bare = /^([^\s"<>(),;:@\\[\]]+@[A-Za-z0-9.-]+)$/.exec(v);
  if (bare) return bare[1]!.toLowerCase();
  const named = /^(?:"[^"\\]*"|[A-Za-z0-9 .'_-]*)\s*<([^\s"<>(),;:@\\[\]]+@[A-Za-z0-9.-]+)>$/.exec(v);
  return named ? named[1]!.toLowerCase() : undefined;
}

/** Content-Type (text/plain when absent), or null when it cannot be read plainly. */
function contentType(headers: Headers): ContentType | null {
  const v = single(headers, 'content-type');
  if (v === undefined) return null;
  if (v === null) return { value: 'text/plain', params: new Map() };
  return headerWithParams(v);
}

/** "value; a=b; c=\"d\"": the value in lower case and the parameters; null for RFC 2231 or junk. */
function headerWithParams(v: string): ContentType | null {
  const semi = v.indexOf(';');
  const value = (semi < 0 ? v : v.slice(0, semi)).trim().toLowerCase();
  if (!/^[a-z0-9!#$&^_.+-]+(\/[a-z0-9!#$&^_.+-]+)?$/.test(value)) return null;
  const params = new Map<string, string>();
  if (semi < 0) return { value, params };
  const re = /\s*;\s*(?:([A-Za-z0-9!#$&^_.+-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s";]+))\s*)?/y;
  re.lastIndex = semi;
  let m: RegExpExecArray | null;
  while (re.lastIndex < v.length && (m = re.exec(v)) !== null) {
    if (m[0] === '') return null;
    if (m[1] === undefined) continue;
    const key = m[1].toLowerCase();
    if (key.endsWith('*') || params.has(key)) return null;
    params.set(key, m[2] !== undefined ? m[2].replace(/\\(.)/g, '$1') : m[3]!);
  }
  return re.lastIndex >= v.length || v.slice(re.lastIndex).trim() === '' ? { value, params } : null;
}

/**
 * The [start, end) of each part between the boundaries of a multipart body (RFC 2046 section
 * 5.1.1: the line break before a boundary line belongs to it), or null without a closing one or
 * with white space after a boundary.
 */
function splitMultipart(s: string, start: number, boundary: string): [number, number][] | null {
  const open = `--${boundary}`;
  const parts: [number, number][] = [];
  let partStart = -1;
  let i = start;
  while (i < s.length) {
    let eol = s.indexOf('\n', i);
    if (eol < 0) eol = s.length;
    if (s.startsWith(open, i)) {
      const rest = s.slice(i + open.length, eol).replace(/\r$/, '');
      // RFC 2046 allows white space after a boundary; mailparser does not see such a boundary.
      if (/^(--)?[ \t]+$/.test(rest)) return null;
      if (rest === '' || rest === '--') {
        if (partStart >= 0) {
          // The line break before the boundary line is the boundary's.
          let end = i;
          if (end > partStart && s.charCodeAt(end - 1) === 10) end--;
          if (end > partStart && s.charCodeAt(end - 1) === 13) end--;
          parts.push([partStart, end]);
        }
        if (rest === '--') return parts.length > 0 ? parts : null;
        partStart = Math.min(eol + 1, s.length);
      }
    }
    i = eol + 1;
  }
  return null;
}

const BASE64_BODY = /^[A-Za-z0-9+/\r\n\t ]*(?:=[\r\n\t ]*){0,2}$/;

/**
 * One leaf part: plain text into `texts`, anything else into `parts`. False when it is a kind this
 * reader leaves to mailparser.
 */
function readPart(
  raw: Buffer,
  s: string,
  headers: Headers,
  type: ContentType,
  start: number,
  end: number,
  texts: string[],
  parts: MailPart[],
): boolean {
  // Reports come as application/* (a zip, gzip, XML or JSON) next to plain text; mailparser has
  // its own rules for the rest (it reads "multipartX/..." as multipart, for one).
  if (!type.value.startsWith('application/') && type.value !== 'text/plain') return false;
  const cte = single(headers, 'content-transfer-encoding');
  const encoding = cte === null ? '7bit' : cte?.toLowerCase();
  if (encoding !== '7bit' && encoding !== '8bit' && encoding !== 'binary' && encoding !== 'base64') return false;
  const dispositionText = single(headers, 'content-disposition');
  if (dispositionText === undefined) return false;
  const disposition = dispositionText === null ? null : headerWithParams(dispositionText);
  if (dispositionText !== null && (!disposition || (disposition.value !== 'inline' && disposition.value !== 'attachment'))) return false;
  const filename = disposition?.params.get('filename') ?? type.params.get('name') ?? null;
  let content: Buffer;
  if (encoding === 'base64') {
    const body = s.slice(start, end);
    if (!BASE64_BODY.test(body)) return false;
    content = Buffer.from(body, 'base64');
  } else {
    content = raw.subarray(start, end);
  }
  if (type.value === 'text/plain' && disposition?.value !== 'attachment' && filename === null) {
    // mailparser joins the lines of flowed text (RFC 3676).
    const format = type.params.get('format');
    if (format !== undefined && format.toLowerCase() !== 'fixed') return false;
    const charset = (type.params.get('charset') ?? 'us-ascii').toLowerCase();
    if (charset === 'utf-8' || charset === 'utf8') {
      // Its decoder also drops a byte order mark.
      if (!isUtf8(content) || (content[0] === 0xef && content[1] === 0xbb && content[2] === 0xbf)) return false;
    } else if (charset !== 'us-ascii' || !isAscii(content)) {
      return false;
    }
    texts.push(content.toString('utf8').replace(/\r?\n/g, '\n'));
    return true;
  }
  if (type.value === 'text/plain') return false;
  const reported = type.value === 'application/octet-stream' && filename !== null ? typeByName(filename) : type.value;
  if (reported === null) return false;
  parts.push({ filename, contentType: reported, content });
  return true;
}

/**
 * mailparser replaces application/octet-stream by the type the file name suggests (libmime's
 * table, by the last dot-separated word). The names report files have are mapped here; any other
 * is left to mailparser.
 */
function typeByName(filename: string): string | null {
  const ext = filename.toLowerCase().replace(/\s/g, '').replace(/^\./, '').split('.').pop()!;
  switch (ext) {
    case 'gz':
      return 'application/x-gzip';
    case 'zip':
      return 'application/zip';
    case 'xml':
      return 'application/xml';
    case 'json':
      return 'application/json';
    default:
      return null;
  }
}
