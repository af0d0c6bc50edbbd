/**
 * The direct reader of plain report mails (src/unpack/mime-simple.ts) against mailparser: on every
 * fixture mail and on variations of the ones it reads, whenever it gives a result, the result is
 * exactly mailparser's; otherwise it gives none and mailparser is used.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { emlMessage, rng } from '../../devtools/corpus.js';
import type { Mail } from '../../src/unpack/mime.js';
import { normaliseMail, parseMail, parseWithMailparser } from '../../src/unpack/mime.js';
import { MAILPARSER_VERSION, parseSimpleMail } from '../../src/unpack/mime-simple.js';
import { ROOT, fixture, fixtureFiles } from '../helpers/common.js';

function mailFixtures(): { name: string; raw: Buffer }[] {
  return fixtureFiles('.eml')
    .sort()
    .map((name) => ({ name, raw: fs.readFileSync(fixture(name)) }));
}

/** Mail as plain data, so deepEqual compares contents (a Buffer's backing store aside). */
function plain(m: Mail): unknown {
  return { ...m, date: m.date?.toISOString() ?? null, parts: m.parts.map((p) => ({ ...p, content: p.content.toString('base64') })) };
}

async function sameAsMailparser(raw: Buffer, what: string): Promise<boolean> {
  const simple = parseSimpleMail(raw);
  if (simple === null) return false;
  assert.deepEqual(plain(simple), plain(await parseWithMailparser(raw)), what);
  return true;
}

describe('plain report mails read directly', () => {
  const fixtures = mailFixtures();

  it('are compared with the mailparser release that package-lock.json installs', () => {
    const lock = JSON.parse(fs.readFileSync(path.join(ROOT, 'package-lock.json'), 'utf8')) as {
      packages: Record<string, { version?: string }>;
    };
    const locked = lock.packages['node_modules/mailparser']?.version;
    const installed = (JSON.parse(fs.readFileSync(path.join(ROOT, 'node_modules/mailparser/package.json'), 'utf8')) as { version: string })
      .version;
    const advice =
      'src/unpack/mime-simple.ts reads mail the way mailparser ' +
      `${MAILPARSER_VERSION} does. Read mailparser's changes since then, run this suite against the new release ` +
      "(the comparisons below), fix the direct reader where they differ, then set MAILPARSER_VERSION to it and pin it in package.json's dependencies.";
    assert.equal(locked, MAILPARSER_VERSION, `package-lock.json installs mailparser ${locked}. ${advice}`);
    assert.equal(installed, MAILPARSER_VERSION, `node_modules holds mailparser ${installed} (run npm ci). ${advice}`);
  });

  it('give what mailparser gives, for every fixture mail read this way', async () => {
    const direct: string[] = [];
    for (const f of fixtures) if (await sameAsMailparser(f.raw, f.name)) direct.push(f.name);
    // The shapes it is for: a zip or gzip as the whole mail (Google), multipart/mixed with a text
    // part and the report (Yahoo, Mail.ru, Amazon SES, AOL, XS4ALL...). Encoded-word subjects,
    // HTML bodies, ARF and RFC 2231 names go to mailparser.
    assert.ok(direct.length >= 16, `${direct.length} of ${fixtures.length} read directly: ${direct.join(', ')}`);
    for (const name of [
      'dmarc-eml/mox_mailru.eml',
      'dmarc-eml/mailauth_feedback_101.eml',
      'dmarc-eml/andreialecu_email-source-with-gz.eml',
    ]) {
      assert.ok(direct.includes(name), `${name} read directly`);
    }
    for (const name of ['failure/mailauth_arf_001.eml', 'dmarc-eml/freitagsrunde_fastmail.eml', 'dmarc-eml/freitagsrunde_outlook.eml']) {
      assert.ok(!direct.includes(name), `${name} left to mailparser`);
    }
  });

  it('give what mailparser gives for the benchmark mail', async () => {
    assert.ok(await sameAsMailparser(Buffer.from(emlMessage(7, 20)), 'benchmark mail'));
  });

  it('give what mailparser gives on 2,400 variations of the fixtures, or leave them to it', async () => {
    const rand = rng(2046);
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)]!;
    const bases = fixtures.filter((f) => parseSimpleMail(f.raw) !== null).map((f) => f.raw.toString('latin1'));
    bases.push(emlMessage(3, 5));
    const variations: ((s: string) => string)[] = [
      (s) => s.replace(/\r?\n/g, '\n'),
      (s) => s.replace(/\r?\n/g, '\r\n'),
      // Header names in other cases.
      (s) =>
        s.replace(/^(content-type|content-transfer-encoding|content-disposition|from|date|message-id|subject):/gim, (m) =>
          rand() < 0.5 ? m.toUpperCase() : m.toLowerCase(),
        ),
      // Folding: a parameter moved to a continuation line.
      (s) => s.replace(/; *(boundary|name|filename|charset)=/gi, (_m, p: string) => `;\r\n${pick([' ', '\t', '    '])}${p}=`),
      // Preamble and epilogue around the parts; white space after boundary lines.
      (s) => s.replace(/\r?\n\r?\n--/, '\r\n\r\nThis is a multi-part message in MIME format.\r\n\r\n--') + '\r\nepilogue\r\n',
      (s) => s.replace(/^(--[^\r\n]+?)(\r?\n)/gm, `$1${pick([' ', '\t', '  '])}$2`),
      // base64 rewrapped, or on one line.
      (s) =>
        s.replace(
          /^([A-Za-z0-9+/]{40,}=*\r?\n)+/gm,
          (b) => b.replace(/\r?\n/g, '').replace(new RegExp(`.{${pick([60, 64, 72, 76, 1000])}}`, 'g'), '$&\r\n') + '\r\n',
        ),
      // Damage: a character changed, inserted or dropped anywhere.
      (s) => {
        const at = Math.floor(rand() * s.length);
        return s.slice(0, at) + pick(['', '=', '-', '\r\n', ':', '"', ';', '\u00e9', 'A']) + s.slice(at + (rand() < 0.5 ? 1 : 0));
      },
      // Truncated.
      (s) => s.slice(0, Math.floor(rand() * s.length)),
    ];
    let direct = 0;
    for (let n = 0; n < 2400; n++) {
      let s = pick(bases);
      const steps = 1 + Math.floor(rand() * 3);
      for (let k = 0; k < steps; k++) s = pick(variations)(s);
      if (await sameAsMailparser(Buffer.from(s, 'latin1'), `variation ${n}`)) direct++;
    }
    assert.ok(direct > 600, `${direct} of 2,400 variations read directly`);
  });

  it('leave to mailparser what they do not read, so parseMail gives its result', async () => {
    const arf = fixtures.find((f) => f.name === 'failure/mailauth_arf_001.eml')!;
    assert.equal(parseSimpleMail(arf.raw), null);
    assert.deepEqual(plain(await parseMail(arf.raw)), plain(await parseWithMailparser(arf.raw)));
    const left: Record<string, string> = {
      'no closing boundary': emlMessage(1, 3).replace(/--bench--\r\n$/, ''),
      'flowed text': emlMessage(1, 3).replace('Content-Type: text/plain', 'Content-Type: text/plain; format=flowed'),
      'a byte order mark': emlMessage(1, 3).replace(
        'Content-Type: text/plain\r\n\r\n',
        'Content-Type: text/plain; charset=utf-8\r\n\r\n\ufeff',
      ),
      'an encoded-word subject': emlMessage(1, 3).replace(/^Subject: .*$/m, 'Subject: =?utf-8?q?R=C3=A9port?='),
      'a nested multipart': emlMessage(1, 3).replace('Content-Type: text/plain', 'Content-Type: multipart/alternative; boundary=inner'),
    };
    for (const [what, text] of Object.entries(left)) {
      const raw = Buffer.from(text, 'utf8');
      assert.notEqual(text, emlMessage(1, 3), `${what}: the variation applies`);
      assert.equal(parseSimpleMail(raw), null, what);
      assert.deepEqual(plain(await parseMail(raw)), plain(await parseWithMailparser(raw)), what);
    }
  });

  it('agree on the shapes made plain before either reads them: blank lines first, white space ending part headers, bare CRs', async () => {
    // Mail of the usual shapes is left exactly as it is (the same buffer: nothing copied).
    for (const f of fixtures) assert.equal(normaliseMail(f.raw), f.raw, f.name);
    const shapes: [string, (s: string) => string][] = [
      ['255 spaces first', (s) => `${' '.repeat(255)}\r\nDelivered-To: dmarc@example.com\r\n${s}`],
      ['blank lines first', (s) => `\r\n \t\r\n\n${s}`],
      [
        'a space ending part headers',
        (s) => s.replace(/^(--[^\r\n]+\r?\n(?:[!-9;-~]+:[^\r\n]*\r?\n(?:[ \t][^\r\n]*\r?\n)*)+)\r?\n/gm, '$1 \r\n'),
      ],
      [
        'a tab ending part headers',
        (s) => s.replace(/^(--[^\r\n]+\r?\n(?:[!-9;-~]+:[^\r\n]*\r?\n(?:[ \t][^\r\n]*\r?\n)*)+)\r?\n/gm, '$1\t\n'),
      ],
      ['bare CR line ends', (s) => s.replace(/\r?\n/g, '\r')],
    ];
    let direct = 0;
    for (const f of fixtures) {
      for (const [what, shape] of shapes) {
        const text = shape(f.raw.toString('latin1'));
        if (text === f.raw.toString('latin1')) continue;
        const raw = Buffer.from(text, 'latin1');
        const plainer = normaliseMail(raw);
        assert.notEqual(plainer, raw, `${f.name}, ${what}: made plain`);
        if (await sameAsMailparser(plainer, `${f.name}, ${what}`)) direct++;
        assert.deepEqual(plain(await parseMail(raw)), plain(await parseWithMailparser(plainer)), `${f.name}, ${what}`);
        // Made plain, the mail has the parts the original has (line ends aside: bare CRs become CRLF).
        const parts = async (m: Buffer) =>
          (await parseMail(m)).parts.map((p) => ({ ...p, content: p.content.toString('latin1').replace(/\r\n?/g, '\n') }));
        assert.deepEqual(await parts(raw), await parts(f.raw), `${f.name}, ${what}: the same parts as the original`);
      }
    }
    assert.ok(direct > 30, `${direct} read directly`);
  });
});
