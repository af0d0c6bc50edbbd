import { RuawatchError } from '../errors.js';

/**
 * Fast path (ARCHITECTURE.md, "Fast paths"): a streaming XML tokenizer for aggregate reports in
 * place of a general SAX parser, which spent a quarter of ingest time checking each character
 * (docs/performance.md, "No XML library at run time"); this one finds markup with indexOf and
 * hands text over in slices.
 * Invariant: whatever the input and however it is cut into chunks, the same verdict (well-formed
 * or not) and the same elements, attributes and text as saxes, a strict SAX parser kept as a dev
 * dependency for this comparison.
 * Held by: test/unit/xml-tokenizer.test.ts (every XML fixture, thousands of damaged copies, chunks
 * of 1 to 4,096 characters).
 *
 * Strict about well-formedness and about nothing else. What it accepts:
 * elements and attributes (entity references, character references), text, CDATA sections,
 * comments, processing instructions. What it refuses with E_XML: anything not well-formed
 * (mismatched or unclosed tags, a second root, text outside the root, an undefined entity, a bare
 * "&" or "<", duplicate attributes, characters XML does not allow); with E_XML_DOCTYPE: any DOCTYPE,
 * so no entity can ever be defined, expanded or fetched. Line endings are normalised as XML 1.0 section 2.11 says, and
 * attribute values as section 3.3.3 says.
 */
export interface XmlHandler {
  /**
   * Set when text made only of white space between two tags means nothing to the handler (it
   * trims its values and reads text only in leaf elements): such runs may then be left out.
   * Runs next to a comment, CDATA section or processing instruction are always delivered.
   */
  readonly skipsBlankText?: boolean;
  /** `attributes` is a shared frozen empty object when the tag has none. */
  open(name: string, attributes: Readonly<Record<string, string>>): void;
  text(text: string): void;
  close(name: string): void;
}

// The ranges are code points of the XML grammar, not characters to be joined; the rule does not apply.
const NAME =
  // eslint-disable-next-line no-misleading-character-class
  /^[A-Za-z_:\u00C0-\u02FF\u0370-\u037D\u037F-\u1FFF\u200C\u200D\u2070-\u218F\u2C00-\u2FEF\u3001-\uD7FF\uF900-\uFDCF\uFDF0-\uFFFD][-A-Za-z0-9._:\u00B7\u00C0-\u02FF\u0300-\u036F\u0370-\u037D\u037F-\u1FFF\u200C\u200D\u203F\u2040\u2070-\u218F\u2C00-\u2FEF\u3001-\uD7FF\uF900-\uFDCF\uFDF0-\uFFFD]*$/;
// XML 1.0 section 2.2: no C0 controls but tab, newline and carriage return; no U+FFFE/U+FFFF.
const BAD_CHAR = /[\u0000-\u0008\u000B\u000C\u000E-\u001F\uFFFE\uFFFF]/;
const ENTITY = /&(?:#x([0-9A-Fa-f]+)|#([0-9]+)|([A-Za-z_:][-A-Za-z0-9._:]*))?(;?)/g;
const PREDEFINED: Record<string, string> = { lt: '<', gt: '>', amp: '&', quot: '"', apos: "'" };
const WS = /^[ \t\r\n]*$/;
const NO_ATTRIBUTES: Readonly<Record<string, string>> = Object.freeze({});
/** What scan() finds in a text run: flags, none set when there is nothing to look at. */
const BLANK = 1;
const SPECIAL = 2;
// XML 1.0 section 2.8 and 4.3.3: version, then optional encoding and standalone, in that order.
const XML_DECL =
  /^<\?xml[ \t\r\n]+version[ \t\r\n]*=[ \t\r\n]*(["'])1\.[0-9]+\1(?:[ \t\r\n]+encoding[ \t\r\n]*=[ \t\r\n]*(["'])[A-Za-z][A-Za-z0-9._-]*\2)?(?:[ \t\r\n]+standalone[ \t\r\n]*=[ \t\r\n]*(["'])(?:yes|no)\3)?[ \t\r\n]*\?>$/;
/** Markup (a tag, comment, PI) longer than this without its end is refused rather than buffered. */
const MAX_MARKUP = 1 << 20;

export class XmlTokenizer {
  private buf = '';
  private pos = 0;
  /** Newlines in input already dropped from buf, for error positions. */
  private linesBefore = 0;
  private lastLineStartBefore = 0;
  private droppedChars = 0;
  private readonly stack: string[] = [];
  private sawRoot = false;
  private rootClosed = false;
  private pendingCr = false;
  /**
   * Tag names already checked against NAME (reports use a few dozen, over and over), each mapped
   * to one internalised copy: the handler's comparisons with string literals are then quick
   * (docs/performance.md, "Tag names": the parse costs about 3% more instructions without it).
   */
  private readonly names = new Map<string, string>();
  private readonly skipBlank: boolean;
  /** The last markup was a start or end tag (for skipsBlankText). */
  private afterTag = false;

  constructor(private readonly handler: XmlHandler) {
    this.skipBlank = handler.skipsBlankText === true;
  }

  write(chunk: string): void {
    if (this.pos > 0) this.drop();
    // "\r\n" split over two chunks: hold a trailing "\r" back until the next chunk decides.
    if (this.pendingCr) {
      chunk = `\r${chunk}`;
      this.pendingCr = false;
    }
    if (chunk.endsWith('\r')) {
      chunk = chunk.slice(0, -1);
      this.pendingCr = true;
    }
    this.buf = this.buf.length ? this.buf + chunk : chunk;
    this.run(false);
  }

  close(): void {
    if (this.pendingCr) {
      this.pendingCr = false;
      this.buf += '\r';
    }
    this.run(true);
    if (this.stack.length) this.fail(this.buf.length, `unclosed tag <${this.stack[this.stack.length - 1]}>: the document ends inside it`);
    if (!this.sawRoot) this.fail(this.buf.length, 'the document has no root element');
  }

  private drop(): void {
    const gone = this.buf.slice(0, this.pos);
    let nl = gone.indexOf('\n');
    while (nl !== -1) {
      this.linesBefore++;
      this.lastLineStartBefore = this.droppedChars + nl + 1;
      nl = gone.indexOf('\n', nl + 1);
    }
    this.droppedChars += this.pos;
    this.buf = this.buf.slice(this.pos);
    this.pos = 0;
  }

  private run(final: boolean): void {
    const s = this.buf;
    const n = s.length;
    let i = this.pos;
    while (i < n) {
      const lt = s.indexOf('<', i);
      if (lt === -1) {
        // Text to the end of what we have. Hold back a reference that may continue in the next chunk.
        let end = n;
        if (!final) {
          // Entity and character references are short; a longer tail is no reference and fails now.
          for (let k = n - 1; k >= i && k > n - 40; k--) {
            if (s.charCodeAt(k) !== 38 /* & */) continue;
            if (s.indexOf(';', k) === -1) end = k;
            break;
          }
        }
        if (end > i) this.textRun(s, i, end);
        i = end;
        break;
      }
      if (lt + 1 >= n) {
        if (lt > i) this.textRun(s, i, lt);
        i = lt;
        if (final) this.fail(i, 'the document ends with "<"');
        break;
      }
      const c = s.charCodeAt(lt + 1);
      const isTag = c !== 33 /* ! */ && c !== 63; /* ? */
      if (lt > i) this.textRun(s, i, lt, this.afterTag && isTag);
      i = lt;
      let next: number;
      if (c === 47 /* / */) next = this.endTag(s, i, final);
      else if (c === 33) next = this.bang(s, i, final);
      else if (c === 63) next = this.pi(s, i, final);
      else next = this.startTag(s, i, final);
      this.afterTag = isTag;
      if (next === -1) {
        if (n - i > MAX_MARKUP) this.fail(i, `markup longer than ${MAX_MARKUP} characters without its end`);
        break;
      }
      i = next;
    }
    this.pos = i;
  }

  private textRun(s: string, from: number, to: number, betweenTags = false): void {
    if (this.stack.length === 0) {
      if (!WS.test(s.slice(from, to))) this.fail(from, this.rootClosed ? 'text after the root element' : 'text before the root element');
      return;
    }
    const kind = scan(s, from, to);
    if (kind & BLANK && betweenTags && this.skipBlank) return;
    let t = s.slice(from, to);
    if (kind & SPECIAL) {
      if (BAD_CHAR.test(t)) this.fail(from + t.search(BAD_CHAR), 'a character XML does not allow');
      if (t.includes(']]>')) this.fail(from + t.indexOf(']]>'), '"]]>" in text');
      if (t.includes('&')) t = this.entities(t, from);
      if (t.includes('\r')) t = t.replace(/\r\n?/g, '\n');
    }
    this.handler.text(t);
  }

  private entities(t: string, at: number): string {
    return t.replace(
      ENTITY,
      (m: string, hex: string | undefined, dec: string | undefined, name: string | undefined, semi: string, offset: number) => {
        if (!semi || (!hex && !dec && !name)) this.fail(at + offset, 'a bare "&" (write &amp;)');
        if (name) {
          const v = PREDEFINED[name];
          if (v === undefined) this.fail(at + offset, `undefined entity &${name};`);
          return v!;
        }
        const code = hex ? parseInt(hex, 16) : Number(dec);
        if (!validCodePoint(code)) this.fail(at + offset, `character reference ${m} is not a character XML allows`);
        return String.fromCodePoint(code);
      },
    );
  }

  private endTag(s: string, i: number, final: boolean): number {
    const gt = s.indexOf('>', i + 2);
    if (gt === -1) {
      if (final) this.fail(i, 'the document ends inside an end tag');
      return -1;
    }
    const open = this.stack[this.stack.length - 1];
    // The common case, "</name>" matching the open element, needs no new string.
    if (open !== undefined && gt === i + 2 + open.length && s.startsWith(open, i + 2)) {
      this.stack.pop();
      if (this.stack.length === 0) this.rootClosed = true;
      this.handler.close(open);
      return gt + 1;
    }
    let name = s.slice(i + 2, gt);
    if (name !== open) name = name.replace(/[ \t\r\n]+$/, '');
    if (open === undefined) this.fail(i, `end tag </${name}> without a start tag`);
    if (name !== open) this.fail(i, `end tag </${name}> does not match <${open}>`);
    this.stack.pop();
    if (this.stack.length === 0) this.rootClosed = true;
    this.handler.close(name);
    return gt + 1;
  }

  private startTag(s: string, i: number, final: boolean): number {
    // The common case: a tag without attributes, e.g. "<source_ip>".
    const gt = s.indexOf('>', i + 1);
    if (gt !== -1) {
      const name = this.names.get(s.slice(i + 1, gt));
      if (name !== undefined) {
        if (this.rootClosed) this.fail(i, `a second root element <${name}>`);
        this.stack.push(name);
        this.handler.open(name, NO_ATTRIBUTES);
        return gt + 1;
      }
    }
    // Find the ">" that ends the tag, outside quoted attribute values.
    let j = i + 1;
    let quote = 0;
    const n = s.length;
    for (; j < n; j++) {
      const c = s.charCodeAt(j);
      if (quote) {
        if (c === quote) quote = 0;
        else if (c === 60 /* < */) this.fail(j, '"<" in an attribute value');
      } else if (c === 34 || c === 39) quote = c;
      else if (c === 62 /* > */) break;
      else if (c === 60) this.fail(j, '"<" inside a tag');
    }
    if (j >= n) {
      if (final) this.fail(i, 'the document ends inside a start tag');
      return -1;
    }
    let body = s.slice(i + 1, j);
    const selfClosing = body.endsWith('/');
    if (selfClosing) body = body.slice(0, -1);
    const m = /^[^ \t\r\n]+/.exec(body);
    let name = m?.[0] ?? '';
    const known = this.names.get(name);
    if (known !== undefined) name = known;
    else {
      if (!NAME.test(name)) this.fail(i, `"<${name.slice(0, 40)}" is not a valid tag`);
      // A property key is an internalised string.
      name = Object.keys({ [name]: 0 })[0]!;
      if (this.names.size < 1000) this.names.set(name, name);
    }
    if (this.rootClosed) this.fail(i, `a second root element <${name}>`);
    const attributes = name.length < body.length ? this.attributes(body, name.length, i + 1) : NO_ATTRIBUTES;
    this.sawRoot = true;
    this.stack.push(name);
    this.handler.open(name, attributes);
    if (selfClosing) {
      this.stack.pop();
      if (this.stack.length === 0) this.rootClosed = true;
      this.handler.close(name);
    }
    return j + 1;
  }

  private attributes(body: string, from: number, at: number): Record<string, string> {
    const out: Record<string, string> = {};
    let k = from;
    const n = body.length;
    while (k < n) {
      const ws = /^[ \t\r\n]*/.exec(body.slice(k))![0].length;
      if (k + ws >= n) break;
      if (ws === 0) this.fail(at + k, 'attributes must be separated by white space');
      k += ws;
      const m = /^([^\s=]+)[ \t\r\n]*=[ \t\r\n]*(["'])/.exec(body.slice(k));
      if (!m) this.fail(at + k, 'an attribute without a quoted value');
      const name = m![1]!;
      if (!NAME.test(name)) this.fail(at + k, `"${name.slice(0, 40)}" is not a valid attribute name`);
      const start = k + m![0].length;
      const end = body.indexOf(m![2]!, start);
      if (end === -1) this.fail(at + k, `attribute ${name} has no closing quote`);
      let v = body.slice(start, end);
      if (BAD_CHAR.test(v)) this.fail(at + start, 'a character XML does not allow');
      if (v.includes('&')) v = this.entities(v, at + start);
      // XML 1.0 section 3.3.3: each white-space character of the value becomes a space.
      if (/[\t\r\n]/.test(v)) v = v.replace(/\r\n/g, ' ').replace(/[\t\r\n]/g, ' ');
      if (Object.hasOwn(out, name)) this.fail(at + k, `attribute ${name} given twice`);
      out[name] = v;
      k = end + 1;
    }
    return out;
  }

  private bang(s: string, i: number, final: boolean): number {
    if (s.startsWith('<!--', i)) {
      const end = s.indexOf('-->', i + 4);
      if (end === -1) {
        if (final) this.fail(i, 'the document ends inside a comment');
        return -1;
      }
      const body = s.slice(i + 4, end);
      // XML 1.0 section 2.5: "--" may not occur inside a comment.
      if (body.includes('--') || body.endsWith('-')) this.fail(i, 'a malformed comment ("--" inside it)');
      if (BAD_CHAR.test(body)) this.fail(i, 'a character XML does not allow');
      return end + 3;
    }
    if (s.startsWith('<![CDATA[', i)) {
      const end = s.indexOf(']]>', i + 9);
      if (end === -1) {
        if (final) this.fail(i, 'the document ends inside a CDATA section');
        return -1;
      }
      if (this.stack.length === 0) this.fail(i, 'a CDATA section outside the root element');
      let t = s.slice(i + 9, end);
      if (BAD_CHAR.test(t)) this.fail(i, 'a character XML does not allow');
      if (t.includes('\r')) t = t.replace(/\r\n?/g, '\n');
      this.handler.text(t);
      return end + 3;
    }
    const rest = s.slice(i, i + 9);
    if (rest.toUpperCase() === '<!DOCTYPE') {
      throw new RuawatchError(
        'E_XML_DOCTYPE',
        'the XML has a DOCTYPE declaration; refused, since aggregate reports have none and DTDs enable entity expansion and external entity (XXE) attacks',
      );
    }
    // Too little in the buffer yet to tell which it is.
    if (!final && ['<!DOCTYPE', '<![CDATA[', '<!--'].some((p) => p.length > rest.length && p.startsWith(rest.toUpperCase()))) return -1;
    this.fail(i, 'markup starting "<!" that is not a comment or CDATA section');
  }

  private pi(s: string, i: number, final: boolean): number {
    const end = s.indexOf('?>', i + 2);
    if (end === -1) {
      if (final) this.fail(i, 'the document ends inside a processing instruction');
      return -1;
    }
    const target = /^[^ \t\r\n?]*/.exec(s.slice(i + 2, end))![0];
    if (BAD_CHAR.test(s.slice(i, end))) this.fail(i, 'a character XML does not allow');
    if (!NAME.test(target)) this.fail(i, 'a processing instruction without a valid target');
    if (target.toLowerCase() === 'xml') {
      if (this.droppedChars + i > 0 || target !== 'xml') this.fail(i, 'an XML declaration that is not at the very start of the document');
      if (!XML_DECL.test(s.slice(i, end + 2))) this.fail(i, 'a malformed XML declaration');
    }
    return end + 2;
  }

  private fail(at: number, why: string): never {
    const head = this.buf.slice(0, at);
    const nl = head.lastIndexOf('\n');
    let line = this.linesBefore + 1;
    for (let p = head.indexOf('\n'); p !== -1; p = head.indexOf('\n', p + 1)) line++;
    const column = nl === -1 ? this.droppedChars + at - this.lastLineStartBefore + 1 : at - nl;
    throw new RuawatchError('E_XML', `not well-formed XML: ${why} (line ${line}, column ${column})`);
  }
}

/**
 * What a text run holds, read once without copying it: BLANK when it is only spaces, tabs and
 * line ends; SPECIAL when it needs a closer look (a reference, CR, "]", a character XML forbids).
 */
function scan(s: string, from: number, to: number): number {
  let blank = BLANK;
  let special = 0;
  for (let k = from; k < to; k++) {
    const c = s.charCodeAt(k);
    if (c === 0x20 || c === 0x0a || c === 0x09) continue;
    if (c === 0x0d) special = SPECIAL;
    else if (c < 0x20 || c === 0x26 /* & */ || c === 0x5d /* ] */ || c >= 0xfffe) return SPECIAL;
    else blank = 0;
  }
  return blank | special;
}

function validCodePoint(c: number): boolean {
  return (
    c === 0x9 || c === 0xa || c === 0xd || (c >= 0x20 && c <= 0xd7ff) || (c >= 0xe000 && c <= 0xfffd) || (c >= 0x10000 && c <= 0x10ffff)
  );
}
