/**
 * Decide what a blob is from its first bytes. Names and Content-Type headers lie (reporters send
 * gzip as text/plain and XML as .txt), bytes do not.
 */
export type ContentKind = 'empty' | 'gzip' | 'zip' | 'zlib' | 'xml' | 'json' | 'mbox' | 'mail' | 'html' | 'pdf' | 'other';

export const SNIFF_BYTES = 4096;

export function sniff(head: Uint8Array): ContentKind {
  if (head.length === 0) return 'empty';
  const b0 = head[0]!;
  const b1 = head[1];
  if (b0 === 0x1f && b1 === 0x8b) return 'gzip';
  // Local file header, or the end-of-central-directory record of an empty archive.
  if (b0 === 0x50 && b1 === 0x4b && (head[2] === 0x03 || head[2] === 0x05) && (head[3] === 0x04 || head[3] === 0x06)) {
    return 'zip';
  }
  // RFC 1950 with a 32K window and the levels writers use (fastest, default, best). The header
  // for levels 2-5 is "x^", too likely as the start of a text file to be taken for zlib.
  if (b0 === 0x78 && (b1 === 0x01 || b1 === 0x9c || b1 === 0xda)) return 'zlib';
  // ISO 32000-1 section 7.5.2: a PDF file starts with its header line, "%PDF-1.n".
  if (b0 === 0x25 && b1 === 0x50 && head[2] === 0x44 && head[3] === 0x46 && head[4] === 0x2d) return 'pdf';

  const text = leadingText(head);
  if (text === null) return 'other';
  const t = text.replace(/^[\s\uFEFF]+/, '');
  if (t.length === 0) return head.length < SNIFF_BYTES ? 'empty' : 'other';
  // A web page saved next to the reports (an HTML document is rarely well-formed XML anyway).
  if (HTML.test(t)) return 'html';
  if (t.startsWith('<')) return 'xml';
  if (t.startsWith('{') || t.startsWith('[')) return 'json';
  if (/^From [^\r\n]*\r?\n/.test(text)) return 'mbox';
  // Some mail stores write a line of spaces before the headers; such lines are not part of them.
  if (looksLikeMailHeader(text.replace(/^([ \t]*(\r\n|\r|\n))+/, ''))) return 'mail';
  return 'other';
}

/**
 * The start of an HTML document: its doctype, or the html, head or body element, after an XML
 * declaration (XHTML) and comments.
 */
const HTML = /^(<\?xml[^>]*\?>\s*)?(<!--[\s\S]*?-->\s*)*<(!doctype\s+html|html|head|body)[\s>]/i;

/** Decodes the head as text if it plausibly is text (UTF-8, UTF-16 with BOM, or 8-bit). */
function leadingText(head: Uint8Array): string | null {
  if (head[0] === 0xff && head[1] === 0xfe) return new TextDecoder('utf-16le').decode(head);
  if (head[0] === 0xfe && head[1] === 0xff) return new TextDecoder('utf-16be').decode(head);
  if (head[0] === 0xef && head[1] === 0xbb && head[2] === 0xbf) head = head.subarray(3);
  let controls = 0;
  const n = Math.min(head.length, 512);
  for (let i = 0; i < n; i++) {
    const c = head[i]!;
    if (c === 0) return null;
    if (c < 0x20 && c !== 0x09 && c !== 0x0a && c !== 0x0d) controls++;
  }
  if (controls > n / 10) return null;
  return Buffer.from(head.buffer, head.byteOffset, head.length).toString('latin1');
}

/**
 * RFC 5322 section 2.2: a header field is a name of printable characters, a colon, a body. Lines
 * may end in a bare CR (mail written with old Mac line ends; unpack/mime.ts reads it).
 */
function looksLikeMailHeader(text: string): boolean {
  const lines = text.split(/\r\n|\r|\n/, 8);
  const first = lines[0] ?? '';
  if (!/^[!-9;-~]+:/.test(first)) return false;
  // One header line could be anything ("Note: ..."); want a second header or a known name.
  if (
    /^(received|return-path|from|to|subject|date|message-id|mime-version|content-type|delivered-to|x-[^:]*|dkim-signature|arc-[^:]*|authentication-results):/i.test(
      first,
    )
  ) {
    return true;
  }
  return lines.slice(1).some((l) => /^[!-9;-~]+:/.test(l));
}
