import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { rng } from '../../devtools/corpus.js';
import { canonicalIp, emailDomain, normaliseDomain, normaliseReportId, normaliseResult, parseCount } from '../../src/parse/normalise.js';
import { uidSet } from '../../src/sources/imap.js';
import { sniff } from '../../src/unpack/sniff.js';

describe('canonicalIp', () => {
  const cases: [string, string | null][] = [
    ['192.0.2.1', '192.0.2.1'],
    [' 192.0.2.1\t', '192.0.2.1'],
    ['010.001.002.003', '10.1.2.3'],
    ['256.1.1.1', null],
    ['2001:DB8:0:0:0:0:0:1', '2001:db8::1'],
    ['2001:0db8:0000:0000:0001:0000:0000:0001', '2001:db8::1:0:0:1'],
    ['2001:db8:0:0:1:0:0:1', '2001:db8::1:0:0:1'],
    ['2001:db8::0:1', '2001:db8::1'],
    ['2001:db8:0:1:1:1:1:1', '2001:db8:0:1:1:1:1:1'],
    ['::1', '::1'],
    ['::', '::'],
    ['fe80::1%eth0', 'fe80::1'],
    ['[2001:db8::5]', '2001:db8::5'],
    ['::ffff:192.0.2.1', '192.0.2.1'],
    ['::FFFF:c000:0201', '192.0.2.1'],
    ['64:ff9b::192.0.2.33', '64:ff9b::c000:221'],
    ['2a02:2770:3:0:21a:4aff:fea1:8a7b', '2a02:2770:3:0:21a:4aff:fea1:8a7b'],
    ['1:2:3:4:5:6:7:8:9', null],
    ['2001:db8:::1', null],
    ['not-an-ip', null],
    ['', null],
  ];
  for (const [input, want] of cases) it(`${JSON.stringify(input)} -> ${want}`, () => assert.equal(canonicalIp(input), want));

  /**
   * The WHATWG URL parser, which Node implements natively, reads IPv6 as RFC 4291 writes it (1-4
   * hex digits a group, "::" for one or more zero groups, a dotted IPv4 tail without leading
   * zeros) and writes it as RFC 5952 does; it spells IPv4-mapped addresses in hex, which
   * canonicalIp turns into plain IPv4.
   */
  function viaUrl(s: string): string | null {
    let host: string;
    try {
      host = new URL(`http://[${s}]/`).hostname.slice(1, -1);
    } catch {
      return null;
    }
    const mapped = /^::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/.exec(host);
    if (!mapped) return host;
    const [hi, lo] = [Number.parseInt(mapped[1]!, 16), Number.parseInt(mapped[2]!, 16)];
    return `${hi >> 8}.${hi & 255}.${lo >> 8}.${lo & 255}`;
  }

  it('reads 20,000 generated IPv6 texts, valid and not, as the URL parser does', () => {
    const rand = rng(5952);
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)]!;
    const hex = '0123456789abcdefABCDEF';
    const group = () => {
      const len = rand() < 0.04 ? pick([0, 5]) : pick([1, 1, 2, 3, 4, 4, 4]);
      let g = '';
      for (let k = 0; k < len; k++) g += rand() < 0.3 ? '0' : pick([...hex]);
      return g;
    };
    const v4 = () =>
      Array.from({ length: pick([3, 4, 4, 4, 5]) }, () => String(pick([0, 1, 9, 10, 99, 100, 192, 255, 256, 999])))
        .map((p) => (rand() < 0.05 ? `0${p}` : p))
        .join('.');
    let valid = 0;
    for (let n = 0; n < 20_000; n++) {
      const groups = Array.from({ length: pick([2, 3, 5, 6, 7, 8, 8, 8, 9]) }, group);
      if (rand() < 0.3) groups.splice(pick([0, 1, groups.length - 1, groups.length]), 0, '');
      let s = groups.join(':');
      if (s.startsWith(':') && !s.startsWith('::')) s = `:${s}`;
      if (s.endsWith(':') && !s.endsWith('::')) s = `${s}:`;
      if (rand() < 0.15) s = `${s.slice(0, s.lastIndexOf(':') + 1)}${v4()}`;
      if (rand() < 0.1) {
        const at = Math.floor(rand() * (s.length + 1));
        s = s.slice(0, at) + pick([':', '::', '.', 'g', '-', '']) + s.slice(at + (rand() < 0.5 ? 1 : 0));
      }
      // Without a colon it is not IPv6 text (canonicalIp reads it as IPv4 or nothing).
      if (!s.includes(':')) continue;
      const want = viaUrl(s);
      if (want !== null) valid++;
      assert.equal(canonicalIp(s), want, JSON.stringify(s));
    }
    // Both kinds are well represented.
    assert.ok(valid > 4_000 && valid < 16_000, `${valid} of 20,000 valid`);
  });
});

describe('normalisers', () => {
  it('results in RFC spelling', () => {
    assert.equal(normaliseResult(' Pass '), 'pass');
    assert.equal(normaliseResult('hardfail'), 'fail');
    assert.equal(normaliseResult('SoftFail'), 'softfail');
    assert.equal(normaliseResult('temp_error'), 'temperror');
    assert.equal(normaliseResult('PermError'), 'permerror');
    assert.equal(normaliseResult('weird'), 'weird');
    assert.equal(normaliseResult('  '), null);
  });
  it('domains, report ids, counts, e-mail domains', () => {
    assert.equal(normaliseDomain(' Example.COM. '), 'example.com');
    assert.equal(normaliseReportId(' <abc@host.example> '), 'abc@host.example');
    assert.equal(normaliseReportId('a<b>'), 'a<b>');
    assert.equal(parseCount(' 12 '), 12);
    assert.equal(parseCount('12.0'), 12);
    assert.equal(parseCount('-1'), null);
    assert.equal(parseCount('1e3'), null);
    assert.equal(emailDomain('DMARC Reports <noreply@Reports.Example.org>'), 'reports.example.org');
    assert.equal(emailDomain('mailto:tlsrpt@example.net'), 'example.net');
    assert.equal(emailDomain('nobody'), null);
  });
});

describe('sniff decides by bytes', () => {
  const b = (s: string | number[]) => (typeof s === 'string' ? Buffer.from(s) : Buffer.from(s));
  const cases: [string, Buffer, string][] = [
    ['gzip', b([0x1f, 0x8b, 8, 0]), 'gzip'],
    ['zip', b('PK\x03\x04rest'), 'zip'],
    ['empty zip', b('PK\x05\x06'), 'zip'],
    ['zlib', b([0x78, 0x9c, 1, 2]), 'zlib'],
    ['xml with BOM', b('\uFEFF<?xml version="1.0"?><feedback/>'), 'xml'],
    ['xml after spaces', b('  \r\n<feedback>'), 'xml'],
    ['json', b('\n {"policies": []}'), 'json'],
    ['mbox', b('From MAILER-DAEMON Thu Jan  1 00:00:00 2024\nReturn-Path: <x@y>\n'), 'mbox'],
    ['mail', b('Received: from a by b\r\nFrom: x@y\r\n\r\nbody'), 'mail'],
    ['mail with unusual first header', b('X-Custom: 1\nSubject: hi\n\nbody'), 'mail'],
    ['prose is not mail', b('Note: this is a sentence.\nAnd another line.'), 'other'],
    ['text starting with x^', b('x^2 + y^2'), 'other'],
    ['binary', b([0x89, 0x50, 0x4e, 0x47, 0, 1]), 'other'],
    ['utf-16 xml', Buffer.from('\uFEFF<feedback/>', 'utf16le'), 'xml'],
    ['empty', b(''), 'empty'],
    ['whitespace only', b('  \n'), 'empty'],
  ];
  for (const [name, bytes, want] of cases) it(name, () => assert.equal(sniff(bytes), want));
});

describe('uidSet', () => {
  it('writes runs of UIDs as ranges', () => {
    assert.equal(uidSet([1, 2, 3, 5, 7, 8, 9, 10, 20]), '1:3,5,7:10,20');
    assert.equal(uidSet([4]), '4');
    assert.equal(uidSet(Array.from({ length: 5000 }, (_, i) => i + 1)), '1:5000');
  });
});
