import assert from 'node:assert/strict';
import fs from 'node:fs';
import { describe, it } from 'node:test';
import { parseDmarcXml } from '../../src/parse/dmarc-xml.js';
import { parseTlsReport } from '../../src/parse/tlsrpt-json.js';
import type { DmarcHeader, DmarcRecord } from '../../src/parse/types.js';
import { fromBuffer } from '../../src/unpack/bytes.js';
import { defaultLimits } from '../../src/unpack/limits.js';
import { fixture } from '../helpers/common.js';
import { dmarcXml, record } from '../helpers/synth.js';

async function parse(bytes: Buffer | string, fallbackReporterEmail: string | null = null) {
  const buf = typeof bytes === 'string' ? Buffer.from(bytes) : bytes;
  const records: DmarcRecord[] = [];
  let header: DmarcHeader | null = null;
  await parseDmarcXml(
    fromBuffer(buf),
    buf.subarray(0, 4096),
    { limits: defaultLimits, fallbackReporterEmail },
    {
      header: (h) => {
        header = h;
        return 'continue';
      },
      record: (r) => records.push(r),
    },
  );
  return { header: header! as DmarcHeader, records };
}

const file = (rel: string) => fs.readFileSync(fixture(rel));

/** A fixture with its date range moved to 2023 (the RFC 9990 examples are dated 1975 and 1979, which is refused). */
const redated = (rel: string) =>
  Buffer.from(
    file(rel)
      .toString('utf8')
      .replace(/<begin>\s*\d+\s*<\/begin>/, '<begin>1700000000</begin>')
      .replace(/<end>\s*\d+\s*<\/end>/, '<end>1700086399</end>'),
  );

describe('DMARC aggregate reports', () => {
  it('RFC 9990 by namespace, with np, testing and discovery_method', async () => {
    const { header } = await parse(file('dmarc-aggregate/drv_gmxnet.xml'));
    assert.equal(header.schema, '2.0');
    assert.equal(header.reporter, 'GMX');
    const ietf = await parse(redated('dmarc-aggregate/ietfwg_dmarc-xml-0.2.xml'));
    assert.deepEqual(
      [ietf.header.schema, ietf.header.generator, ietf.header.policy.np, ietf.header.policy.testing, ietf.header.policy.discoveryMethod],
      ['2.0', 'Example DMARC Aggregate Reporter v1.2', 'none', 'n', 'treewalk'],
    );
    assert.equal(ietf.records[0]!.disposition, 'pass');
  });

  it('RFC 9990 by its 2.0-only fields when there is no namespace', async () => {
    const { header } = await parse(file('dmarc-aggregate/pdm_rfc9990-example.net!example.com!1700000000!1700086399.xml'));
    assert.equal(header.schema, '2.0');
    const old = await parse(file('dmarc-aggregate/pdm_old_draft_from_wiki.xml'));
    assert.deepEqual([old.header.schema, old.header.version, old.header.reporter, old.records.length], ['1.0', null, 'acme.com', 1]);
  });

  it('falls back to the e-mail domain, then the mail sender, for an empty org_name', async () => {
    const { header } = await parse(file('dmarc-aggregate/pdm_!example.com!1538204542!1538463818.xml'));
    assert.equal(header.reporter, 'accurateplastics.com');
    const none = await parse(dmarcXml({ orgName: ' ', email: '' }), 'noreply@reports.receiver.example');
    assert.equal(none.header.reporter, 'reports.receiver.example');
    await assert.rejects(parse(dmarcXml({ orgName: '', email: '' })), /names no reporter/);
  });

  it('normalises case, whitespace and non-standard results', async () => {
    const upper = await parse(file('dmarc-aggregate/pdm_report_with_upper_cased_pass.xml'));
    assert.equal(upper.header.reporter, 'example.com');
    assert.ok(upper.records.every((r) => r.dkimResults.every((d) => d.result === d.result?.toLowerCase())));
    const hard = await parse(file('dmarc-aggregate/drv_hardfail.xml'));
    assert.deepEqual(
      hard.records[0]!.spfResults.map((s) => s.result),
      ['fail'],
    );
    const untrimmed = await parse(file('dmarc-aggregate/pkerrigan_dmarc-1-untrimmed.xml'));
    const plain = await parse(file('dmarc-aggregate/pkerrigan_dmarc-1.xml'));
    assert.deepEqual(untrimmed.records, plain.records);
    assert.deepEqual({ ...untrimmed.header }, { ...plain.header });
    const tab = await parse(file('dmarc-aggregate/tierpod_test.xml'));
    assert.equal(tab.header.end, 1524268799);
  });

  it('keeps every DKIM and SPF result of a record, and each policy override reason', async () => {
    const { records } = await parse(file('dmarc-aggregate/trollbyte_multiple_auth_results.xml'));
    assert.ok(records[0]!.dkimResults.length >= 2, JSON.stringify(records[0]));
    const reasons = `<reason><type>forwarded</type><comment>list</comment></reason><reason><type>Local_Policy</type></reason><reason><type></type><comment></comment></reason>`;
    const multi = await parse(
      dmarcXml({
        records: [record({ reasons, extra: '<dkim><domain>esp.example</domain><selector>k2</selector><result>Fail</result></dkim>' })],
      }),
    );
    assert.deepEqual(multi.records[0]!.reasons, [
      { type: 'forwarded', comment: 'list' },
      { type: 'local_policy', comment: null },
    ]);
    assert.deepEqual(
      multi.records[0]!.dkimResults.map((d) => [d.domain, d.selector, d.result]),
      [
        ['example.com', 's1', 'pass'],
        ['esp.example', 'k2', 'fail'],
      ],
    );
  });

  it("keeps a report's first 20 <error> elements and counts the rest", async () => {
    const errs = Array.from({ length: 5000 }, (_, i) => `<error>e${i}</error>`).join('');
    const xml = dmarcXml().replace('</date_range>', `</date_range>${errs}`);
    const { header, records } = await parse(xml);
    assert.equal(records.length, 1);
    assert.deepEqual(header.errors, [...Array.from({ length: 20 }, (_, i) => `e${i}`), '(4980 more errors not kept)']);
    const few = await parse(dmarcXml().replace('</date_range>', '</date_range><error>late</error>'));
    assert.deepEqual(few.header.errors, ['late']);
  });

  it('lower-cases DKIM selectors (DNS labels, RFC 6376 section 3.1) like the domains they sign for', async () => {
    const { records } = await parse(
      dmarcXml({
        records: [record({ extra: '<dkim><domain>ESP.Example.</domain><selector> K2.Mail </selector><result>pass</result></dkim>' })],
      }),
    );
    assert.deepEqual(
      records[0]!.dkimResults.map((d) => [d.domain, d.selector]),
      [
        ['example.com', 's1'],
        ['esp.example', 'k2.mail'],
      ],
    );
  });

  it('stores IPv6 sources canonically', async () => {
    const { records } = await parse(dmarcXml({ records: [record({ ip: '2001:DB8:0000::00A1' }), record({ ip: '::ffff:198.51.100.7' })] }));
    assert.deepEqual(
      records.map((r) => r.sourceIp),
      ['2001:db8::a1', '198.51.100.7'],
    );
    const real = await parse(file('dmarc-aggregate/trollbyte_multiple_records.xml'));
    assert.ok(real.records.some((r) => r.sourceIp === '2001:db8::1'));
  });

  it('unwraps report ids sent as <id@host>', async () => {
    const { header } = await parse(dmarcXml({ reportId: '&lt;1700000000.abc@mx.receiver.example&gt;' }));
    assert.equal(header.reportId, '1700000000.abc@mx.receiver.example');
  });

  it('decodes ISO-8859-1, windows-1252, a UTF-8 BOM and UTF-16', async () => {
    const name = 'Empfänger “GmbH”';
    const latin = Buffer.from(dmarcXml({ orgName: 'Empfänger', decl: '<?xml version="1.0" encoding="ISO-8859-1"?>' }), 'latin1');
    assert.equal((await parse(latin)).header.reporter, 'Empfänger');
    const cp1252 = Buffer.concat([
      Buffer.from('<?xml version="1.0" encoding="windows-1252"?>\n<feedback><report_metadata><org_name>Empf\xe4nger ', 'latin1'),
      Buffer.from([0x93]),
      Buffer.from('GmbH', 'latin1'),
      Buffer.from([0x94]),
      Buffer.from(
        dmarcXml()
          .split('<org_name>receiver.example')[1]!
          .replace(/^[^<]*/, ''),
        'latin1',
      ),
    ]);
    assert.equal((await parse(cp1252)).header.reporter, name);
    const bom = Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from(dmarcXml({ orgName: name }))]);
    assert.equal((await parse(bom)).header.reporter, name);
    const utf16 = Buffer.concat([
      Buffer.from([0xff, 0xfe]),
      Buffer.from(dmarcXml({ orgName: name, decl: '<?xml version="1.0" encoding="UTF-16"?>' }), 'utf16le'),
    ]);
    assert.equal((await parse(utf16)).header.reporter, name);
    const real = await parse(file('dmarc-aggregate/bbustin_dmarc.xml'));
    assert.equal(real.header.reporter, 'AOL');
  });

  it('reads prefixed elements (ns1:feedback) and ignores <extension>', async () => {
    const prefixed = dmarcXml({ rootAttrs: ' xmlns:ns1="http://dmarc.org/dmarc-xml/0.1"' })
      .replace(/<(\/?)([a-z_]+)([ >])/g, '<$1ns1:$2$3')
      .replace('<ns1:feedback xmlns', '<ns1:feedback xmlns');
    const { header, records } = await parse(prefixed);
    assert.deepEqual([header.reporter, records.length, records[0]!.count], ['receiver.example', 1, 3]);
    const ext = await parse(redated('dmarc-aggregate/ietfwg_dmarc-xmlalt-0.2.xml'));
    assert.equal(ext.records.length, 1);
  });

  it('accepts records that come before the metadata', async () => {
    const xml = dmarcXml();
    const moved = xml.replace(/(<report_metadata>[\s\S]*<\/policy_published>)([\s\S]*)(<\/feedback>)/, '$2$1$3');
    assert.notEqual(moved, xml);
    const { header, records } = await parse(moved);
    assert.deepEqual([header.policyDomain, records.length], ['example.com', 1]);
  });
});

describe('TLS reports', () => {
  const tls = (rel: string) => parseTlsReport(file(rel), { limits: defaultLimits });

  it('reads mx-host as a string or a list, with "mx:" prefixes removed', () => {
    assert.deepEqual(tls('tlsrpt/tlsrptbe_testing.json').policies[0]!.mxHosts, ['*.mail.company-y.example']);
    assert.deepEqual(tls('tlsrpt/drv_no-contact.json').policies[0]!.mxHosts, ['mx.server.com']);
  });

  it('normalises MX hosts like every other host name: lower case, trimmed, without the root dot', () => {
    const report = (mx: unknown, receiving: string) =>
      parseTlsReport(
        Buffer.from(
          JSON.stringify({
            'organization-name': 'r.example',
            'date-range': { 'start-datetime': '2024-01-01T00:00:00Z', 'end-datetime': '2024-01-01T23:59:59Z' },
            'report-id': 'mx-case',
            policies: [
              {
                policy: { 'policy-type': 'sts', 'policy-domain': 'example.com', 'mx-host': mx },
                summary: { 'total-successful-session-count': 1, 'total-failure-session-count': 1 },
                'failure-details': [
                  { 'result-type': 'certificate-expired', 'receiving-mx-hostname': receiving, 'failed-session-count': 1 },
                ],
              },
            ],
          }),
        ),
        { limits: defaultLimits, now: 1_800_000_000 },
      ).policies[0]!;
    const p = report([' MX1.Example.COM. ', 'mx: *.Mail.Example.com', ''], 'MX1.Example.COM.');
    assert.deepEqual(p.mxHosts, ['mx1.example.com', '*.mail.example.com']);
    assert.equal(p.failures[0]!.receivingMxHostname, 'mx1.example.com');
  });

  it('tolerates null contact-info, missing IPs and MX names, and counts sent as strings', () => {
    assert.equal(tls('tlsrpt/drv_no-contact.json').contactInfo, null);
    const ms = tls('tlsrpt/drv_no_ip_and_mx.json');
    assert.ok(ms.policies[0]!.failures.every((f) => f.sendingMtaIp === null && f.receivingMxHostname === null));
    const lenient = tls('tlsrpt/dmarcanalyzerapp_sample-lenient-tls.json');
    assert.deepEqual(
      [lenient.policyDomain, lenient.policies[0]!.policyType, lenient.policies[0]!.successful, lenient.policies[0]!.failed],
      ['acme.example', 'sts', 42, 7],
    );
    assert.deepEqual(
      lenient.policies[0]!.failures.map((f) => [f.resultType, f.failedSessions, f.receivingMxHostname]),
      [
        ['quantum-handshake-flux', 5, null],
        ['certificate-expired', 1, 'mx1.acme.example'],
      ],
    );
  });

  it('keeps sts, tlsa and no-policy-found policies and unknown types as sent', () => {
    assert.deepEqual(
      tls('tlsrpt/drv_microsoft.json').policies.map((p) => p.policyType),
      ['sts', 'tlsa'],
    );
    assert.deepEqual(
      tls('tlsrpt/mailauth_rpt03.json').policies.map((p) => p.policyType),
      ['no-policy-found', 'invalid-policy-type'],
    );
    const rfc = tls('tlsrpt/pdm_rfc8460.json');
    assert.equal(rfc.policies[0]!.failures.find((f) => f.sendingMtaIp?.includes(':'))?.sendingMtaIp, '2001:db8:abcd:12::1');
    // The drafts called it failure-error-code; RFC 8460 calls it failure-reason-code.
    assert.ok(
      tls('tlsrpt/danmarg_sample.json').policies[0]!.failures.some((f) => f.failureReasonCode === 'X509_V_ERR_PROXY_PATH_LENGTH_EXCEEDED'),
    );
  });

  it('reads Mail.ru failures without sending-mta-ip', () => {
    const r = tls('tlsrpt/pdm_mail.ru.json');
    assert.equal(r.reporter, 'Mail.ru');
    assert.equal(r.policies[0]!.failures[0]!.resultType, 'sts-policy-fetch-error');
  });
});
