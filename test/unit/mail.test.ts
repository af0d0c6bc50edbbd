import assert from 'node:assert/strict';
import fs from 'node:fs';
import { describe, it } from 'node:test';
import { bufferInput, count, fixture, freshStore } from '../helpers/common.js';
import { base64Lines, dmarcXml, gzip, mail, zip } from '../helpers/synth.js';

const PNG = Buffer.from('89504e470d0a1a0a0000000d49484452', 'hex');

async function ingest(name: string, text: string | Buffer) {
  const { db, ingestor } = freshStore();
  const result = await ingestor.ingest(bufferInput(name, text));
  return { db, result };
}

describe('report mails', () => {
  it('joins RFC 2231 continued file names and ignores the logo next to the report', async () => {
    const m = mail([
      {
        headers: 'Content-Type: image/png\r\nContent-Transfer-Encoding: base64\r\nContent-Disposition: inline; filename="logo.png"',
        body: base64Lines(PNG),
      },
      {
        headers: [
          'Content-Type: application/gzip',
          'Content-Transfer-Encoding: base64',
          "Content-Disposition: attachment; filename*0*=UTF-8''receiver.example!exam; filename*1*=ple.com!1700000000!1700086399.xml.gz",
        ].join('\r\n'),
        body: base64Lines(gzip(dmarcXml())),
      },
    ]);
    const { result } = await ingest('in.eml', m);
    assert.deepEqual(
      result.leaves.map((l) => [l.input, l.status]),
      [['in.eml#receiver.example!example.com!1700000000!1700086399.xml.gz', 'stored']],
    );
  });

  it('finds the report whatever the Content-Type says: text/plain carrying gzip, octet-stream carrying zip', async () => {
    const asText = mail([
      {
        headers:
          'Content-Type: text/plain; name="report.txt"\r\nContent-Disposition: attachment; filename="report.txt"\r\nContent-Transfer-Encoding: base64',
        body: base64Lines(gzip(dmarcXml({ reportId: 't' }))),
      },
    ]);
    assert.equal((await ingest('a.eml', asText)).result.leaves[0]!.status, 'stored');
    const asOctets = mail([
      {
        headers: 'Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64',
        body: base64Lines(zip({ report: dmarcXml({ reportId: 'o' }) })),
      },
    ]);
    const r = (await ingest('b.eml', asOctets)).result;
    assert.deepEqual(
      r.leaves.map((l) => [l.input, l.status]),
      [['b.eml#report', 'stored']],
    );
  });

  it('reads a report that is the whole body', async () => {
    const whole = [
      'From: noreply@receiver.example',
      'Subject: Report',
      'MIME-Version: 1.0',
      'Content-Type: text/xml; charset=utf-8',
      '',
      dmarcXml({ reportId: 'body' }),
    ].join('\r\n');
    assert.equal((await ingest('c.eml', whole)).result.leaves[0]!.status, 'stored');
  });

  it('reads a report mail forwarded inside message/rfc822, using the inner sender as reporter', async () => {
    const inner = mail(
      [
        {
          headers: 'Content-Type: application/gzip\r\nContent-Transfer-Encoding: base64',
          body: base64Lines(gzip(dmarcXml({ orgName: '', email: '' }))),
        },
      ],
      {
        from: 'noreply-dmarc@inner-reporter.example',
        boundary: 'inner-b0undary',
      },
    );
    const outer = mail([
      { headers: 'Content-Type: text/plain', body: 'Forwarding the report below.' },
      { headers: 'Content-Type: message/rfc822\r\nContent-Disposition: attachment; filename="fwd.eml"', body: inner },
    ]);
    const { db, result } = await ingest('fwd.eml', outer);
    assert.deepEqual(
      result.leaves.map((l) => l.status),
      ['stored'],
      JSON.stringify(result.leaves),
    );
    assert.equal((db.prepare('SELECT reporter FROM reports').get() as { reporter: string }).reporter, 'inner-reporter.example');
  });

  it('splits an mbox and names each message path#N; one broken message does not stop the others', async () => {
    const good = (id: string) =>
      mail([
        {
          headers: 'Content-Type: application/gzip\r\nContent-Transfer-Encoding: base64',
          body: base64Lines(gzip(dmarcXml({ reportId: id }))),
        },
      ]);
    const broken = mail([{ headers: 'Content-Type: application/xml', body: '<feedback><report_metadata>' }]);
    const empty = mail([{ headers: 'Content-Type: text/plain', body: 'Hello' }]);
    const mbox = [good('m1'), broken, empty, good('m4')]
      .map((m) => `From MAILER-DAEMON Tue Nov 14 12:00:00 2023\n${m.replace(/\r\n/g, '\n')}\n`)
      .join('');
    const { db, result } = await ingest('box.mbox', mbox);
    assert.deepEqual(
      result.leaves.map((l) => [l.input, l.status]),
      [
        ['box.mbox#1', 'stored'],
        ['box.mbox#2', 'failed'],
        ['box.mbox#3', 'none'],
        ['box.mbox#4', 'stored'],
      ],
    );
    assert.equal(count(db, 'SELECT COUNT(*) FROM reports'), 2);
  });

  it('recognises an ARF failure report and keeps no message body', async () => {
    const arf = mail(
      [
        { headers: 'Content-Type: text/plain', body: 'This is an authentication failure report.' },
        {
          headers: 'Content-Type: message/feedback-report',
          body: [
            'Feedback-Type: auth-failure',
            'Version: 1',
            'Auth-Failure: dmarc',
            'Source-IP: 2001:DB8::25',
            'Reported-Domain: example.com',
            'Arrival-Date: Tue, 14 Nov 2023 11:59:00 +0000',
            'Authentication-Results: mx.receiver.example; dmarc=fail header.from=example.com',
          ].join('\r\n'),
        },
        { headers: 'Content-Type: message/rfc822', body: 'From: ceo@example.com\r\nSubject: wire transfer\r\n\r\nSECRET BODY TEXT' },
      ],
      { from: 'dmarc-failures@receiver.example' },
    );
    const { db, result } = await ingest('ruf.eml', arf);
    assert.deepEqual(
      result.leaves.map((l) => [l.status, l.status === 'stored' ? l.kind : '']),
      [['stored', 'failure']],
    );
    const row = db
      .prepare('SELECT r.reporter, r.begin_ts, f.* FROM failure_reports f JOIN reports r ON r.id = f.report_id')
      .get() as Record<string, unknown>;
    assert.deepEqual(
      [row.reporter, row.source_ip, row.reported_domain, row.header_from, row.auth_failure, row.begin_ts],
      ['receiver.example', '2001:db8::25', 'example.com', 'example.com', 'dmarc', Date.UTC(2023, 10, 14, 11, 59) / 1000],
    );
    const everything =
      JSON.stringify(db.prepare('SELECT * FROM failure_reports').all()) + JSON.stringify(db.prepare('SELECT * FROM reports').all());
    assert.doesNotMatch(everything, /SECRET BODY TEXT|wire transfer/);
  });

  describe('shapes of real report mail', () => {
    const fixtureText = (rel: string) => fs.readFileSync(fixture(rel), 'latin1');

    it('reads a mail whose first line holds only spaces (255 of them) before Delivered-To', async () => {
      for (const rel of ['dmarc-eml/mox_google.eml', 'tlsrpt/mox_microsoft.eml', 'failure/mailauth_arf_004.eml']) {
        const text = `${' '.repeat(255)}\r\nDelivered-To: dmarc@example.com\r\n${fixtureText(rel)}`;
        const { result } = await ingest('ws.eml', Buffer.from(text, 'latin1'));
        assert.deepEqual(
          result.leaves.map((l) => l.status),
          ['stored'],
          `${rel}: ${JSON.stringify(result.leaves)}`,
        );
      }
      // Plain text after blank lines is quoted from its first characters that are not blank.
      const { result } = await ingest('note.txt', `${' '.repeat(300)}\n\t\n   Hello, these are my notes on DMARC.`);
      assert.deepEqual(
        result.leaves.map((l) => (l.status === 'none' ? l.reason : l.status)),
        ['plain text, not a report (starts "Hello, these are my notes on D")'],
      );
    });

    it("ends a MIME part's headers at a line holding only a space or a tab, so an ARF report keeps its fields", async () => {
      for (const blank of [' ', '\t', ' \t ']) {
        const text = fixtureText('failure/mailauth_arf_004.eml').replace(
          /(Content-Type: (message\/feedback-report|text\/rfc822-headers)\r?\n)\r?\n/g,
          `$1${blank}\r\n`,
        );
        assert.equal((text.match(/^[ \t]+\r?$/gm) ?? []).length, 2, 'the variation applies');
        const { db, result } = await ingest('arf.eml', Buffer.from(text, 'latin1'));
        assert.deepEqual(
          result.leaves.map((l) => [l.status, l.status === 'stored' ? l.kind : '']),
          [['stored', 'failure']],
          JSON.stringify(result.leaves),
        );
        assert.deepEqual(db.prepare('SELECT feedback_type, source_ip, reported_domain, auth_failure FROM failure_reports').get(), {
          feedback_type: 'auth-failure',
          source_ip: '148.163.85.135',
          reported_domain: 'interpublication.org',
          auth_failure: 'dmarc',
        });
      }
      // A line of white space followed by an indented line is folding (RFC 5322 section 4.2), kept as such.
      const folded = mail([
        {
          headers: 'Content-Type: application/gzip;\r\n \r\n name="folded.xml.gz"\r\nContent-Transfer-Encoding: base64',
          body: base64Lines(gzip(dmarcXml({ reportId: 'folded' }))),
        },
      ]);
      assert.deepEqual(
        (await ingest('folded.eml', folded)).result.leaves.map((l) => [l.input, l.status]),
        [['folded.eml', 'stored']],
      );
    });

    it('reads mail whose every line ends in a bare CR', async () => {
      for (const rel of [
        'dmarc-eml/freitagsrunde_yahoo.eml',
        'dmarc-eml/mailauth_feedback_101.eml',
        'tlsrpt/mox_microsoft.eml',
        'failure/mailauth_arf_004.eml',
      ]) {
        const text = fixtureText(rel).replace(/\r?\n/g, '\r');
        const { result } = await ingest('cr.eml', Buffer.from(text, 'latin1'));
        assert.deepEqual(
          result.leaves.map((l) => l.status),
          ['stored'],
          `${rel}: ${JSON.stringify(result.leaves)}`,
        );
      }
    });
  });
});
