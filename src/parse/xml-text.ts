import { isUtf8 } from 'node:buffer';
import { TextDecoder } from 'node:util';
import { RuawatchError } from '../errors.js';

/**
 * Character decoding for XML documents. The encoding comes from the byte order mark or the XML
 * declaration (XML 1.0 section 4.3.3); UTF-8 is decoded strictly, so a stray windows-1252 byte in
 * a document that claims UTF-8 is reported with its offset instead of silently becoming U+FFFD.
 *
 * Fast path (ARCHITECTURE.md, "Fast paths"): UTF-8, nearly every report, is checked with Node's
 * isUtf8 and decoded without a TextDecoder, carrying a character cut by the end of a chunk over to
 * the next one; other encodings go through TextDecoder.
 * Invariant: the same text as TextDecoder with `fatal: true`, and a failure at the same byte
 * offset, whatever the chunk boundaries.
 * Held by: test/unit/xml-text.test.ts (3,000 cut sequences, failing offsets, a split byte order mark).
 */
export class XmlTextDecoder {
  /** For encodings other than UTF-8; UTF-8 (nearly every report) takes Node's faster validator. */
  private readonly decoder: TextDecoder | null;
  readonly encoding: string;
  private offset = 0;
  private first = true;
  /** UTF-8: the start of a character cut by the end of the previous chunk. */
  private carry: Buffer | null = null;

  constructor(head: Uint8Array) {
    const label = detectEncoding(head);
    let decoder: TextDecoder;
    try {
      decoder = new TextDecoder(label, { fatal: true });
    } catch {
      throw new RuawatchError('E_ENCODING', `the XML declares the character set "${label}", which is not supported`);
    }
    this.encoding = decoder.encoding;
    this.decoder = this.encoding === 'utf-8' ? null : decoder;
  }

  decode(chunk: Uint8Array, last = false): string {
    let text: string;
    if (this.decoder === null) {
      text = this.utf8(chunk, last);
    } else {
      try {
        text = this.decoder.decode(chunk, { stream: !last });
      } catch {
        throw this.invalid(-1, chunk);
      }
      this.offset += chunk.length;
    }
    if (this.first && text.length) {
      // A few reporters put whitespace before "<?xml"; strict parsers refuse it, we drop it.
      text = text.replace(/^[\s\uFEFF]+/, '');
      if (text.length) this.first = false;
    }
    return text;
  }

  /**
   * Strict UTF-8 (no U+FFFD substitutes, no surrogates or overlong forms, as TextDecoder's fatal
   * mode), with a character cut by a chunk boundary carried over to the next chunk.
   */
  private utf8(chunk: Uint8Array, last: boolean): string {
    const bytes = this.carry ? Buffer.concat([this.carry, chunk]) : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.length);
    const end = last ? bytes.length : completeUtf8(bytes);
    const body = bytes.subarray(0, end);
    if (!isUtf8(body)) throw this.invalid(firstInvalidUtf8(body), body);
    this.carry = end < bytes.length ? Buffer.from(bytes.subarray(end)) : null;
    this.offset += end;
    // A byte order mark comes out as U+FEFF, which decode() drops with leading white space.
    return body.toString('utf8');
  }

  private invalid(at: number, bytes: Uint8Array): RuawatchError {
    const where = at >= 0 ? ` at byte ${this.offset + at} (0x${bytes[at]!.toString(16).padStart(2, '0')})` : '';
    return new RuawatchError('E_ENCODING', `invalid ${this.encoding} byte sequence${where}; the document declares ${this.encoding}`);
  }
}

/** Length of the part of `b` that does not end inside a UTF-8 sequence (what to decode now). */
function completeUtf8(b: Uint8Array): number {
  const n = b.length;
  // The last lead byte, at most 3 bytes back; continuation bytes after it are its own.
  for (let i = n - 1; i >= 0 && i >= n - 4; i--) {
    const c = b[i]!;
    if ((c & 0xc0) === 0x80) continue;
    const need = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc0 ? 2 : 1;
    return i + need > n ? i : n;
  }
  return n;
}

function detectEncoding(head: Uint8Array): string {
  if (head[0] === 0xef && head[1] === 0xbb && head[2] === 0xbf) return 'utf-8';
  if (head[0] === 0xff && head[1] === 0xfe) return 'utf-16le';
  if (head[0] === 0xfe && head[1] === 0xff) return 'utf-16be';
  const start = Buffer.from(head.buffer, head.byteOffset, Math.min(head.length, 512)).toString('latin1');
  const m = /^\s*<\?xml[^>]*?\bencoding\s*=\s*["']([A-Za-z0-9._:-]+)["']/.exec(start);
  return m ? m[1]!.toLowerCase() : 'utf-8';
}

/** Index of the first byte that breaks UTF-8 (RFC 3629), or -1. A sequence cut at the end is fine. */
function firstInvalidUtf8(b: Uint8Array): number {
  for (let i = 0; i < b.length;) {
    const c = b[i]!;
    let n = 0;
    if (c < 0x80) n = 0;
    else if (c >= 0xc2 && c <= 0xdf) n = 1;
    else if (c >= 0xe0 && c <= 0xef) n = 2;
    else if (c >= 0xf0 && c <= 0xf4) n = 3;
    else return i;
    for (let k = 1; k <= n; k++) {
      if (i + k >= b.length) return -1;
      if ((b[i + k]! & 0xc0) !== 0x80) return i;
    }
    i += n + 1;
  }
  return -1;
}
