import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { analyse, DAY, defaultSettings, rollupInput, type Finding, type RecordRow } from '../../src/analyse/index.js';
import { describeSender, forwarderExemptions, type SenderFacts } from '../../src/analyse/senders.js';
import { rows } from '../helpers/records.js';

/** At the end of day 100: recent = days 93-99, baseline = days 65-92 (as analyse.test.ts). */
const NOW = 100 * DAY;

function facts(o: Partial<SenderFacts>): SenderFacts {
  return {
    asn: null,
    as_org: null,
    country: null,
    special: null,
    service: null,
    service_id: null,
    service_type: null,
    matched_by: null,
    spf_include: null,
    ...o,
  };
}

const forwarder = (matched_by: string) =>
  facts({ service: 'Groups.io', service_id: 'groups-io', service_type: 'forwarder/list', matched_by, asn: 64500 });
const sendgrid = (matched_by = 'asn') =>
  facts({
    service: 'SendGrid (Twilio)',
    service_id: 'sendgrid',
    service_type: 'transactional',
    matched_by,
    spf_include: 'include:sendgrid.net',
  });

const good = { ip: '192.0.2.10', from: 65, to: 99, perDay: 100 };
const keys = (fs: Finding[]) => fs.map((f) => f.key).sort();

function run(records: RecordRow[], senders?: Record<string, SenderFacts>): Finding[] {
  const input = rollupInput({ records });
  if (senders) input.senders = new Map(Object.entries(senders));
  return analyse(input, NOW, defaultSettings);
}

describe('a known forwarder or mailing-list operator joins the forwarded exemption', () => {
  const newFailing = { ip: '203.0.113.66', from: 95, to: 99, perDay: 40, pass: 0 };
  // Passed by DKIM until day 92, then signatures broke in transit (a list that rewrites the body).
  const dropping = [
    { ...good, ip: '198.51.100.30', to: 92, perDay: 60, dkimDomain: 'example.net' },
    { ...good, ip: '198.51.100.30', from: 93, perDay: 60, pass: 0.2, dkimDomain: 'example.net' },
  ];
  const cases: { name: string; records: RecordRow[]; senders: Record<string, SenderFacts>; want: string[] }[] = [
    {
      name: 'by a range of the user: no finding',
      records: rows(good, newFailing),
      senders: { '203.0.113.66': forwarder('ip_range') },
      want: [],
    },
    { name: 'by its own network: no finding', records: rows(good, newFailing), senders: { '203.0.113.66': forwarder('asn') }, want: [] },
    { name: 'by a confirmed name: no finding', records: rows(good, newFailing), senders: { '203.0.113.66': forwarder('ptr') }, want: [] },
    {
      name: 'only by a DKIM domain (a claim of the message): still a finding',
      records: rows(good, newFailing),
      senders: { '203.0.113.66': forwarder('dkim') },
      want: ['new_failing_source:example.com:203.0.113.66'],
    },
    {
      name: 'only by an unconfirmed reverse name: still a finding',
      records: rows(good, newFailing),
      senders: { '203.0.113.66': forwarder('ptr_unconfirmed') },
      want: ['new_failing_source:example.com:203.0.113.66'],
    },
    {
      name: 'only by the words of an AS organisation: still a finding',
      records: rows(good, newFailing),
      senders: { '203.0.113.66': forwarder('as_org') },
      want: ['new_failing_source:example.com:203.0.113.66'],
    },
    {
      name: 'a known service that is not a forwarder: still a finding',
      records: rows(good, newFailing),
      senders: { '203.0.113.66': sendgrid('ip_range') },
      want: ['new_failing_source:example.com:203.0.113.66'],
    },
    {
      name: 'a forwarder whose DKIM passes broke: neither a drop nor a broken selector',
      records: rows(good, ...dropping),
      senders: { '198.51.100.30': forwarder('asn') },
      want: [],
    },
    {
      name: 'the same source, not known as a forwarder: both findings',
      records: rows(good, ...dropping),
      senders: {},
      want: ['dkim_selector_broken:example.com:example.net:s1', 'pass_rate_drop:example.com:198.51.100.30'],
    },
  ];
  for (const c of cases) {
    it(c.name, () => {
      assert.deepEqual(keys(run(c.records, c.senders)), c.want);
    });
  }

  it('forwarderExemptions: address evidence only', () => {
    const m = new Map(
      ['ip_range', 'ptr', 'asn', 'dkim', 'spf', 'as_org', 'ptr_unconfirmed'].map((by, i) => [`192.0.2.${i}`, forwarder(by)] as const),
    );
    m.set('192.0.2.99', sendgrid('ip_range'));
    assert.deepEqual([...forwarderExemptions(m, m.keys())].sort(), ['192.0.2.0', '192.0.2.1', '192.0.2.2']);
  });
});

describe('a new failing source that is a known service the domain has not set up: an unconfigured sender', () => {
  const esp = { ip: '198.51.100.20', from: 95, to: 99, perDay: 40, pass: 0, dkimDomain: 'sendgrid.net' };
  const cases: {
    name: string;
    records: RecordRow[];
    senders: Record<string, SenderFacts>;
    sender: string | null;
    summary: RegExp;
  }[] = [
    {
      name: 'no source of the service passes for the domain: unconfigured, with what to add to DNS',
      records: rows(good, esp),
      senders: { '198.51.100.20': sendgrid() },
      sender: 'unconfigured_sender',
      summary:
        /An unconfigured sender: SendGrid \(Twilio\) \(transactional\) is not set up for example\.com; if you send through it, add include:sendgrid\.net to the SPF record of example\.com and publish SendGrid \(Twilio\)'s DKIM keys for example\.com .*; if you do not, someone is sending as example\.com through SendGrid/,
    },
    {
      name: 'another source of the service passes for the domain: a real failure of a configured service',
      records: rows(good, { ...good, ip: '198.51.100.21' }, esp),
      senders: { '198.51.100.20': sendgrid(), '198.51.100.21': sendgrid() },
      sender: 'configured_service_failing',
      summary: /SendGrid \(Twilio\) is set up for example\.com \(other SendGrid \(Twilio\) sources pass\)/,
    },
    {
      name: 'the service is set up for another domain only: unconfigured for this one',
      records: rows(good, { ...good, ip: '198.51.100.21', domain: 'example.org' }, { ...good, domain: 'example.org' }, esp),
      senders: { '198.51.100.20': sendgrid(), '198.51.100.21': sendgrid() },
      sender: 'unconfigured_sender',
      summary: /An unconfigured sender/,
    },
    {
      name: 'a hosting network is no sending service: a plain new source',
      records: rows(good, esp),
      senders: { '198.51.100.20': facts({ service: 'Hetzner', service_id: 'hetzner', service_type: 'hosting', matched_by: 'asn' }) },
      sender: null,
      summary:
        /^new source 198\.51\.100\.20 sent 200 messages as example\.com in the last 7 days, 0\.0% passing DMARC \(DKIM s1 \(sendgrid\.net\) fails, SPF not aligned\); receivers delivered them$/,
    },
    {
      name: 'an unknown source: a plain new source',
      records: rows(good, esp),
      senders: { '198.51.100.20': facts({ asn: 64500, as_org: 'Example Hosting', country: 'DE' }) },
      sender: null,
      summary: /^new source 198\.51\.100\.20 sent 200 messages/,
    },
  ];
  for (const c of cases) {
    it(c.name, () => {
      const plain = run(c.records);
      const enriched = run(c.records, c.senders);
      // Never hidden, never softened: the same findings, keys and severities as without enrichment.
      assert.deepEqual(
        enriched.map((f) => [f.key, f.severity]),
        plain.map((f) => [f.key, f.severity]),
      );
      const f = enriched.find((x) => x.kind === 'new_failing_source');
      assert.ok(f, 'a new_failing_source finding');
      assert.match(f.summary, c.summary);
      assert.equal(f.details.sender ?? null, c.sender);
      if (c.sender) assert.equal(f.details.spf_include, 'include:sendgrid.net');
    });
  }

  it('a source that passed and now fails, of a known service: the drop names the service and stays a drop', () => {
    const records = rows(
      { ...good, ip: '198.51.100.20', to: 92 },
      { ...good, ip: '198.51.100.20', from: 93, pass: 0.2 },
      { ...good, ip: '192.0.2.11' },
    );
    const plain = run(records);
    const enriched = run(records, { '198.51.100.20': sendgrid() });
    assert.deepEqual(
      enriched.map((f) => [f.key, f.severity]),
      plain.map((f) => [f.key, f.severity]),
    );
    const drop = enriched.find((f) => f.key === 'pass_rate_drop:example.com:198.51.100.20')!;
    assert.match(drop.summary, /SendGrid \(Twilio\) is set up for example\.com/);
  });
});

describe('describeSender: how a source reads in a message', () => {
  const cases: [string, SenderFacts, string][] = [
    [
      'an unknown network, no reverse DNS',
      facts({ asn: 64500, as_org: 'Example Hosting', country: 'DE', ptr: null }),
      'AS64500 Example Hosting, DE; no reverse DNS; not a known mail service',
    ],
    [
      'reverse DNS not looked up',
      facts({ asn: 64500, as_org: 'Example Hosting', country: 'DE' }),
      'AS64500 Example Hosting, DE; not a known mail service',
    ],
    ['a known service', sendgrid(), 'SendGrid (Twilio), transactional'],
    [
      'a hosting network with a name',
      facts({
        asn: 24940,
        as_org: 'Hetzner Online GmbH',
        country: 'DE',
        service: 'Hetzner',
        service_type: 'hosting',
        ptr: 'static.1.2.3.4.clients.your-server.de',
      }),
      'AS24940 Hetzner Online GmbH, DE; static.1.2.3.4.clients.your-server.de; Hetzner (hosting): not a known mail service',
    ],
    [
      'a private address',
      facts({ special: 'private (RFC 1918)', ptr: null }),
      'private (RFC 1918); no reverse DNS; not a known mail service',
    ],
    ['in no range', facts({}), 'network unknown; not a known mail service'],
  ];
  for (const [name, f, want] of cases) it(name, () => assert.equal(describeSender(f), want));
});
