/**
 * Reports that cannot be true are refused whole at parse time, each with its code (parse/plausible.ts),
 * and nothing of them is stored.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Leaf } from '../../src/pipeline/ingest.js';
import { defaultLimits, type Limits } from '../../src/unpack/limits.js';
import { bufferInput, count, freshStore } from '../helpers/common.js';
import { dmarcXml, mail, record } from '../helpers/synth.js';

/** The ingest clock of these tests: 2023-11-20T00:00:00Z. */
const NOW = 1_700_438_400;
const DAY = 86_400;

async function ingest(name: string, bytes: string | Buffer, limits: Limits = defaultLimits) {
  const { db, ingestor } = freshStore(limits, () => NOW * 1000);
  const result = await ingestor.ingest(bufferInput(name, bytes));
  return { db, leaves: result.leaves, leaf: result.leaves[0]! };
}

function assertRefused(r: { db: ReturnType<typeof freshStore>['db']; leaves: Leaf[] }, code: string, error: RegExp): void {
  assert.equal(r.leaves.length, 1, JSON.stringify(r.leaves));
  const leaf = r.leaves[0]!;
  assert.equal(leaf.status, 'failed', JSON.stringify(leaf));
  if (leaf.status !== 'failed') return;
  assert.equal(leaf.code, code, leaf.error);
  assert.match(leaf.error, error);
  assert.equal(count(r.db, 'SELECT COUNT(*) FROM reports'), 0, 'nothing stored');
  assert.equal(count(r.db, 'SELECT COUNT(*) FROM dmarc_records'), 0, 'no records stored');
  assert.equal(count(r.db, 'SELECT COUNT(*) FROM tls_policies'), 0, 'no policies stored');
}

function assertStored(r: { leaves: Leaf[] }): void {
  assert.deepEqual(
    r.leaves.map((l) => l.status),
    ['stored'],
    JSON.stringify(r.leaves),
  );
}

/** A TLS report (RFC 8460 section 4.4) to vary. */
function tlsJson(o: { start?: unknown; end?: unknown; org?: string; extra?: Record<string, unknown>; summary?: unknown } = {}): string {
  return JSON.stringify({
    'organization-name': o.org ?? 'Receiver Inc.',
    'date-range': { 'start-datetime': o.start ?? '2023-11-18T00:00:00Z', 'end-datetime': o.end ?? '2023-11-18T23:59:59Z' },
    'contact-info': 'tlsrpt@receiver.example',
    'report-id': 'tls-1',
    policies: [
      {
        policy: { 'policy-type': 'sts', 'policy-string': ['version: STSv1', 'mode: enforce'], 'policy-domain': 'example.com' },
        summary: o.summary ?? { 'total-successful-session-count': 10, 'total-failure-session-count': 2 },
        'failure-details': [
          {
            'result-type': 'certificate-expired',
            'sending-mta-ip': '2001:db8::25',
            'receiving-mx-hostname': 'mx.example.com',
            'failed-session-count': 2,
            ...o.extra,
          },
        ],
      },
    ],
  });
}

const at = (t: number) => dmarcXml({ begin: t, end: t + DAY - 1 });

describe('plausible date ranges', () => {
  it('stores a day that ended yesterday, and one ending up to two days ahead of the clock', async () => {
    assertStored(await ingest('ok.xml', at(NOW - DAY)));
    assertStored(await ingest('ahead.xml', dmarcXml({ begin: NOW, end: NOW + 2 * DAY })));
  });

  it('refuses a report that begins after it ends', async () => {
    assertRefused(await ingest('r.xml', dmarcXml({ begin: NOW - DAY, end: NOW - 2 * DAY })), 'E_DATE_RANGE', /it begins after it ends/);
  });

  it('refuses 0 to 2^53 - 1, and anything before 2000-01-01', async () => {
    const huge = await ingest('r.xml', dmarcXml({ begin: 0, end: 9007199254740991 }));
    assertRefused(
      huge,
      'E_DATE_RANGE',
      /^the report has an implausible date range \(1970-01-01T00:00:00Z to 9007199254740991\): it begins before 2000-01-01$/,
    );
    assertRefused(await ingest('r.xml', at(946_684_800 - DAY)), 'E_DATE_RANGE', /before 2000-01-01/);
    assertStored(await ingest('r.xml', at(946_684_800)));
  });

  it('refuses a report in the future of the ingest clock, the year 10000 included', async () => {
    assertRefused(
      await ingest('r.xml', dmarcXml({ begin: NOW, end: NOW + 2 * DAY + 1 })),
      'E_DATE_RANGE',
      /it ends more than 2 days after now \(2023-11-20T00:00:00Z\)/,
    );
    // 10000-01-01T00:00:00Z
    assertRefused(await ingest('r.xml', at(253_402_300_800)), 'E_DATE_RANGE', /\+010000-01-01T00:00:00Z to .*more than 2 days after now/);
  });

  it('refuses a report covering more than [limits] max_report_days', async () => {
    assertStored(await ingest('month.xml', dmarcXml({ begin: NOW - 31 * DAY, end: NOW })));
    assertRefused(
      await ingest('r.xml', dmarcXml({ begin: NOW - 31 * DAY - 1, end: NOW })),
      'E_DATE_RANGE',
      /it covers more than 31 days \(limit: \[limits\] max_report_days\)$/,
    );
    const week = { ...defaultLimits, maxReportDays: 7 };
    assertRefused(await ingest('r.xml', dmarcXml({ begin: NOW - 8 * DAY, end: NOW }), week), 'E_DATE_RANGE', /more than 7 days/);
  });

  it('refuses dates that are not times in epoch seconds, and says which', async () => {
    const xml = dmarcXml()
      .replace(/<begin>\d+/, '<begin>-5')
      .replace(/<end>\d+/, '<end>1.7e9');
    assertRefused(await ingest('r.xml', xml), 'E_DATE_RANGE', /is not two times in epoch seconds \(begin "-5", end "1.7e9"\)/);
  });

  it('holds TLS reports to the same range, and refuses a date-time with a five-digit year', async () => {
    assertStored(await ingest('ok.json', tlsJson()));
    assertRefused(
      await ingest('r.json', tlsJson({ start: '0001-01-01T00:00:00Z', end: '9999-12-31T23:59:59Z' })),
      'E_DATE_RANGE',
      /before 2000-01-01/,
    );
    assertRefused(
      await ingest('r.json', tlsJson({ start: '2023-11-19T00:00:00Z', end: '2023-11-18T00:00:00Z' })),
      'E_DATE_RANGE',
      /begins after it ends/,
    );
    assertRefused(
      await ingest('r.json', tlsJson({ start: '10000-01-01T00:00:00Z', end: '10000-01-02T00:00:00Z' })),
      'E_DATE_RANGE',
      /"start-datetime" "10000-01-01T00:00:00Z" is not an RFC 3339 date-time/,
    );
  });
});

describe('plausible counts', () => {
  it('refuses a negative, fractional, exponent or word count instead of storing 0', async () => {
    for (const bad of ['-5', '1.5', '1e30', 'many']) {
      const xml = dmarcXml({ records: [record({}), record({}).replace(/<count>\d+/, `<count>${bad}`)] });
      assertRefused(
        await ingest('r.xml', xml),
        'E_COUNT',
        new RegExp(`^record 2: <count> is "${bad.replace('.', '\\.')}", not a whole number$`),
      );
    }
    const missing = dmarcXml({ records: [record({}).replace(/<count>\d+<\/count>/, '')] });
    assertRefused(await ingest('r.xml', missing), 'E_COUNT', /^record 1 has no <count>$/);
  });

  it('refuses a 29-digit count, and counts adding up past [limits] max_message_count', async () => {
    const big = dmarcXml({ records: [record({}).replace(/<count>\d+/, '<count>12345678901234567890123456789')] });
    assertRefused(
      await ingest('r.xml', big),
      'E_COUNT',
      /record 1: <count> is "12345678901234567890123456789", more than 1000000000000 \(limit: \[limits\] max_message_count\)/,
    );
    const many = dmarcXml({ records: [record({ count: 600_000_000_000 }), record({ count: 600_000_000_000 })] });
    assertRefused(await ingest('r.xml', many), 'E_COUNT', /the counts of the records add up to more than 1000000000000/);
    // Even with the limit raised past 2^53, sums past it are refused: they are no longer exact.
    const raised = { ...defaultLimits, maxMessageCount: Number.MAX_SAFE_INTEGER };
    const past = dmarcXml({ records: [record({ count: 2 ** 52 }), record({ count: 2 ** 52 }), record({ count: 2 ** 52 })] });
    assertRefused(await ingest('r.xml', past, raised), 'E_COUNT', /add up to more than/);
    assertStored(await ingest('r.xml', dmarcXml({ records: [record({ count: 500_000_000_000 }), record({ count: 500_000_000_000 })] })));
  });

  it('refuses TLS session counts of 1e30, negative or fractional, and totals past the limit', async () => {
    const summary = (s: number) => ({ 'total-successful-session-count': s, 'total-failure-session-count': 0 });
    assertRefused(
      await ingest('r.json', tlsJson({ summary: summary(1e30) })),
      'E_COUNT',
      /"policies\[0\]\.summary\.total-successful-session-count" is "1e\+30", more than 1000000000000/,
    );
    assertRefused(await ingest('r.json', tlsJson({ summary: summary(-1) })), 'E_COUNT', /is "-1", not a whole number/);
    assertRefused(await ingest('r.json', tlsJson({ extra: { 'failed-session-count': 2.5 } })), 'E_COUNT', /failed-session-count" is "2.5"/);
    assertRefused(
      await ingest('r.json', tlsJson({ summary: { 'total-successful-session-count': 9e11, 'total-failure-session-count': '9e11' } })),
      'E_COUNT',
      /total-failure-session-count" is "9e11", not a whole number/,
    );
    assertRefused(
      await ingest('r.json', tlsJson({ summary: { 'total-successful-session-count': 9e11, 'total-failure-session-count': 9e11 } })),
      'E_COUNT',
      /the session counts of the TLS report add up to more than 1000000000000/,
    );
    // Counts written as text, as some reporters do, are still read.
    const text = await ingest(
      'ok.json',
      tlsJson({ summary: { 'total-successful-session-count': '12', 'total-failure-session-count': '2' } }),
    );
    assertStored(text);
    assert.equal(count(text.db, 'SELECT message_count FROM reports'), 14);
  });
});

describe('plausible addresses and text', () => {
  it('refuses a source IP that is not an IP address: markup, 999.1.1.1, 60,000 characters', async () => {
    for (const [ip, shown] of <[string, string][]>[
      ['&lt;script&gt;alert(1)&lt;/script&gt;', '"<script>alert(1)</script>"'],
      ['999.1.1.1', '"999.1.1.1"'],
      ['a'.repeat(60_000), `"${'a'.repeat(40)}..." (60000 characters)`],
    ]) {
      const r = await ingest('r.xml', dmarcXml({ records: [record({}), record({ ip })] }));
      assertRefused(r, 'E_ADDRESS', new RegExp(`^record 2: <source_ip> ${shown.replace(/[.()[\]]/g, '\\$&')} is not an IP address$`));
    }
    // Canonical forms are stored.
    const v6 = await ingest('ok.xml', dmarcXml({ records: [record({ ip: '2001:DB8:0:0::1' }), record({ ip: '::ffff:192.0.2.7' })] }));
    assertStored(v6);
    assert.deepEqual(v6.db.prepare('SELECT source_ip FROM dmarc_records ORDER BY id').pluck().all(), ['2001:db8::1', '192.0.2.7']);
  });

  it('leaves out empty <record/> rows (no source IP, no messages), and refuses messages counted without a source IP', async () => {
    const empties = dmarcXml({
      records: [...Array<string>(1000).fill('<record/>'), record({}), '<record><row><count>0</count></row></record>'],
    });
    const r = await ingest('r.xml', empties);
    assertStored(r);
    assert.deepEqual(r.db.prepare('SELECT record_count, message_count FROM reports').get(), { record_count: 1, message_count: 3 });
    assert.equal(count(r.db, 'SELECT COUNT(*) FROM dmarc_records'), 1);
    const noIp = dmarcXml({ records: [record({}).replace(/<source_ip>[^<]*<\/source_ip>/, '<source_ip> </source_ip>')] });
    assertRefused(await ingest('r.xml', noIp), 'E_ADDRESS', /^record 1 counts 3 messages but has no <source_ip>$/);
  });

  it('refuses a refused record found after thousands of rows were written: the open transaction is rolled back', async () => {
    const rows = Array.from({ length: 7000 }, (_, i) => record({ ip: `10.0.${i >> 8}.${i & 255}` }));
    rows.push(record({ ip: '999.1.1.1' }));
    assertRefused(await ingest('big.xml', dmarcXml({ records: rows })), 'E_ADDRESS', /^record 7001: <source_ip> "999.1.1.1"/);
  });

  it('refuses NUL and other control characters, and broken Unicode, in any TLS report string', async () => {
    assertRefused(
      await ingest('r.json', tlsJson({ extra: { 'additional-information': 'bad\u0000data' } })),
      'E_TEXT',
      /^the TLS report's "policies\[0\]\.failure-details\[0\]\.additional-information" holds the control character U\+0000 \(at character 4\)$/,
    );
    assertRefused(
      await ingest('r.json', tlsJson({ org: 'Bell\u0007Corp' })),
      'E_TEXT',
      /"organization-name" holds the control character U\+0007/,
    );
    assertRefused(await ingest('r.json', tlsJson({ extra: { 'x-note': '\ud800' } })), 'E_TEXT', /a broken Unicode character/);
    // Tabs and line ends are text.
    assertStored(await ingest('ok.json', tlsJson({ extra: { 'additional-information': 'line one\n\tline two\r\n' } })));
  });

  it('refuses a TLS failure detail whose sending MTA IP is not an IP address', async () => {
    assertRefused(
      await ingest('r.json', tlsJson({ extra: { 'sending-mta-ip': '999.1.1.1' } })),
      'E_ADDRESS',
      /"policies\[0\]\.failure-details\[0\]\.sending-mta-ip" "999.1.1.1" is not an IP address/,
    );
  });

  it('refuses a failure report whose Source-IP is not an address, or whose arrival time is implausible', async () => {
    const arf = (fields: string) =>
      mail(
        [
          { headers: 'Content-Type: text/plain', body: 'An authentication failure report.' },
          {
            headers: 'Content-Type: message/feedback-report',
            body: `Feedback-Type: auth-failure\r\nVersion: 1\r\nAuth-Failure: dmarc\r\nReported-Domain: example.com\r\n${fields}`,
          },
          { headers: 'Content-Type: text/rfc822-headers', body: 'From: someone@example.com\r\nSubject: hi\r\n' },
        ],
        { boundary: 'arf' },
      ).replace('multipart/mixed', 'multipart/report; report-type=feedback-report');
    const ok = await ingest('ok.eml', arf('Source-IP: 192.0.2.9\r\nArrival-Date: Sun, 19 Nov 2023 10:00:00 +0000\r\n'));
    assert.deepEqual(
      ok.leaves.map((l) => [l.status, l.status === 'stored' ? l.kind : '']),
      [['stored', 'failure']],
    );
    assertRefused(
      await ingest('r.eml', arf('Source-IP: <script>\r\nArrival-Date: Sun, 19 Nov 2023 10:00:00 +0000\r\n')),
      'E_ADDRESS',
      /^the failure report's Source-IP "<script>" is not an IP address$/,
    );
    assertRefused(
      await ingest('r.eml', arf('Source-IP: 192.0.2.9\r\nArrival-Date: Mon, 1 Jan 1990 10:00:00 +0000\r\n')),
      'E_DATE_RANGE',
      /^the failure report's arrival time \(1990-01-01T10:00:00Z\) is before 2000-01-01$/,
    );
  });
});
