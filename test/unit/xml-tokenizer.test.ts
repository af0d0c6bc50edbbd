import assert from 'node:assert/strict';
import fs from 'node:fs';
import { describe, it } from 'node:test';
import { SaxesParser } from 'saxes';
import { XmlTextDecoder } from '../../src/parse/xml-text.js';
import { XmlTokenizer } from '../../src/parse/xml-tokenizer.js';
import { rng } from '../../devtools/corpus.js';
import { fixture, fixtureFiles } from '../helpers/common.js';

/**
 * The tokenizer against saxes, a general and strict XML parser: on every XML fixture, on thousands
 * of damaged copies of them, and fed in random chunk sizes, both must agree on well-formed or not,
 * and on the elements, attributes and text of what is well-formed.
 */

type Outcome = { ok: boolean; events: string[]; error?: string };

/** Events as one comparable list: text merged between markup, whitespace outside the root dropped. */
function collector() {
  const events: string[] = [];
  let text = '';
  let depth = 0;
  const flush = () => {
    if (text && (depth > 0 || text.trim())) events.push(`T${JSON.stringify(text)}`);
    text = '';
  };
  return {
    events,
    open(name: string, attrs: Record<string, string>) {
      flush();
      depth++;
      events.push(
        `<${name}${Object.keys(attrs)
          .sort()
          .map((k) => ` ${k}=${JSON.stringify(attrs[k])}`)
          .join('')}>`,
      );
    },
    text(t: string) {
      text += t;
    },
    close(name: string) {
      flush();
      depth--;
      events.push(`</${name}>`);
    },
    end: flush,
  };
}

function viaSaxes(doc: string): Outcome {
  const c = collector();
  const p = new SaxesParser({ xmlns: false });
  let failed = false;
  let error = '';
  p.on('error', (e) => {
    failed = true;
    error = e.message;
    throw new Error('stop');
  });
  p.on('doctype', () => {
    failed = true;
    throw new Error('stop');
  });
  p.on('opentag', (t) => c.open(t.name, t.attributes as Record<string, string>));
  p.on('text', (t) => c.text(t));
  p.on('cdata', (t) => c.text(t));
  p.on('closetag', (t) => c.close(t.name));
  try {
    p.write(doc).close();
  } catch {
    failed = true;
  }
  c.end();
  return { ok: !failed, events: c.events, error };
}

function viaTokenizer(doc: string, chunk?: () => number, skipsBlankText = false): Outcome {
  const c = collector();
  const t = new XmlTokenizer({ ...c, skipsBlankText });
  try {
    if (!chunk) t.write(doc);
    else
      for (let i = 0; i < doc.length;) {
        const n = chunk();
        t.write(doc.slice(i, i + n));
        i += n;
      }
    t.close();
  } catch (err) {
    const code = (err as { code?: string }).code;
    assert.ok(code === 'E_XML' || code === 'E_XML_DOCTYPE', `unexpected error ${String(err)}`);
    c.end();
    return { ok: false, events: c.events, error: String(err) };
  }
  c.end();
  return { ok: true, events: c.events };
}

function xmlFixtures(): { name: string; text: string }[] {
  const out: { name: string; text: string }[] = [];
  for (const name of fixtureFiles('.xml')) {
    const bytes = fs.readFileSync(fixture(name));
    try {
      const d = new XmlTextDecoder(bytes.subarray(0, 1024));
      out.push({ name, text: d.decode(bytes, true) });
    } catch {
      // Undecodable (a wrong declared encoding): a decoding test, not a tokenizer one.
    }
  }
  return out;
}

function agree(doc: string, what: string): void {
  const a = viaSaxes(doc);
  const b = viaTokenizer(doc);
  assert.equal(
    b.ok,
    a.ok,
    `${what}: saxes says ${a.ok ? 'well-formed' : `not well-formed (${a.error})`}, the tokenizer ${b.ok ? 'well-formed' : `not (${b.error})`}: ${JSON.stringify(doc.slice(0, 300))}`,
  );
  if (a.ok) assert.deepEqual(b.events, a.events, what);
  // A handler that skips blank text between tags sees the same document less its blank text.
  const c = viaTokenizer(doc, undefined, true);
  assert.equal(c.ok, a.ok, `${what}, skipping blank text: ${c.error ?? 'well-formed'}`);
  if (a.ok) assert.deepEqual(withoutBlankText(c.events), withoutBlankText(a.events), `${what}, skipping blank text`);
}

/** Events less whitespace-only text (which skipsBlankText may leave out): all else must agree. */
function withoutBlankText(events: string[]): string[] {
  return events.filter((e) => !/^T"(?:[ \t\n]|\\n|\\t)*"$/.test(e));
}

describe('XML tokenizer against saxes', () => {
  const docs = xmlFixtures();

  it('agrees on every XML fixture', () => {
    assert.ok(docs.length > 50, `${docs.length} fixtures`);
    for (const d of docs) agree(d.text, d.name);
  });

  it('gives the same events whatever the chunk boundaries', () => {
    const rand = rng(7);
    for (const d of docs) {
      const whole = viaTokenizer(d.text);
      for (const max of [1, 3, 17, 4096]) {
        assert.deepEqual(
          viaTokenizer(d.text, () => 1 + Math.floor(rand() * max)),
          whole,
          `${d.name} in chunks of up to ${max}`,
        );
      }
    }
  });

  it('agrees on thousands of damaged copies', () => {
    const rand = rng(42);
    const pieces = [
      '<',
      '>',
      '&',
      '"',
      "'",
      '/',
      '=',
      '\u0001',
      '\r',
      '\r\n',
      ']]>',
      '<!--x-->',
      '<!-- a -- b -->',
      '<![CDATA[a<b]]>',
      '&#0;',
      '&#x41;',
      '&#65;',
      '&amp;',
      '&lt;x',
      '&nbsp;',
      '<a/>',
      '</a>',
      '<a b="1" b="2">',
      '<a b=1>',
      '<a b="<">',
      '<?pi x?>',
      '<?xml version="1.0"?>',
      '<!DOCTYPE x>',
      'ü',
      '\uFFFE',
      ' ',
      '\t',
    ];
    let checked = 0;
    for (const d of docs) {
      const s = d.text;
      for (let k = 0; k < 50; k++) {
        const at = Math.floor(rand() * s.length);
        const r = rand();
        let doc: string;
        if (r < 0.3)
          doc = s.slice(0, at); // truncated
        else if (r < 0.6)
          doc = s.slice(0, at) + pieces[Math.floor(rand() * pieces.length)]! + s.slice(at); // inserted
        else if (r < 0.8)
          doc = s.slice(0, at) + s.slice(at + 1 + Math.floor(rand() * 8)); // bytes dropped
        else doc = s.slice(0, at) + pieces[Math.floor(rand() * pieces.length)]! + s.slice(at + 1); // replaced
        agree(doc, `${d.name} damaged at ${at}`);
        checked++;
      }
    }
    assert.ok(checked > 2000, `${checked} damaged documents`);
  });

  it('leaves out blank text between two tags only for a handler that asks', () => {
    const texts = (doc: string, skipsBlankText: boolean) => {
      const seen: string[] = [];
      const t = new XmlTokenizer({ skipsBlankText, open() {}, text: (x) => seen.push(x), close() {} });
      t.write(doc);
      t.close();
      return seen;
    };
    const doc = '<a>\r\n  <b> x </b>\n  <c/> <!--k--> <d>\t</d></a>';
    assert.deepEqual(texts(doc, false), ['\n  ', ' x ', '\n  ', ' ', ' ', '\t']);
    // Kept: text inside <b>, and the blank runs next to the comment.
    assert.deepEqual(texts(doc, true), [' x ', ' ', ' ']);
  });

  it('reports where the document breaks, by line and column', () => {
    assert.throws(() => viaTokenizerStrict('<a>\n  <b>\n</a>'), /end tag <\/a> does not match <b> \(line 3, column 1\)/);
    assert.throws(() => viaTokenizerStrict('<a>x &bogus; y</a>'), /undefined entity &bogus; \(line 1, column 6\)/);
    assert.throws(
      () => viaTokenizerStrict('<!DOCTYPE a [<!ENTITY x "y">]><a/>'),
      (e: Error & { code?: string }) => e.code === 'E_XML_DOCTYPE',
    );
  });
});

function viaTokenizerStrict(doc: string): void {
  const t = new XmlTokenizer({ open() {}, text() {}, close() {} });
  t.write(doc);
  t.close();
}
