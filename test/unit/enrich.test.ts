import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { loadConfig } from '../../src/config/load.js';
import { configSchema } from '../../src/config/schema.js';
import {
  SERVICE_TYPES,
  ServiceMap,
  bundledServices,
  confirmReverseName,
  createEnricher,
  enricherOver,
  loadEnricherData,
  parseAddress,
  parseRange,
  readServicesFile,
  specialPurpose,
  type DataSource,
  type EnrichSettings,
  type ServiceEntry,
} from '../../src/enrich/index.js';
import { RangeTable } from '../../src/enrich/ranges.js';
import { BUNDLED_ASN, BUNDLED_COUNTRY } from '../../src/enrich/sources.js';
import { tempDir } from '../helpers/common.js';

const defaults: EnrichSettings = configSchema.parse({}).enrich;
const settings = (over: Partial<EnrichSettings> = {}): EnrichSettings => ({ ...defaults, ...over });
const addr = (ip: string) => parseAddress(ip)!;

/** The bundled data, loaded once for the suites that read it (about 20 MiB, a fraction of a second). */
let bundled: ReturnType<typeof loadEnricherData> | null = null;
const bundledData = () => (bundled ??= loadEnricherData(settings()));

describe('addresses and ranges', () => {
  it('reads IPv4, IPv6 and IPv4-mapped IPv6 as numbers, mapped as IPv4', () => {
    assert.deepEqual(addr('192.0.2.1'), { family: 4, text: '192.0.2.1', v4: 0xc0000201 });
    assert.deepEqual(addr('255.255.255.255'), { family: 4, text: '255.255.255.255', v4: 0xffffffff });
    assert.deepEqual(addr('2001:DB8::1'), { family: 6, text: '2001:db8::1', v6: [0x20010db8, 0, 0, 1] });
    assert.deepEqual(addr('::'), { family: 6, text: '::', v6: [0, 0, 0, 0] });
    assert.deepEqual(addr('fe80::1:2:3:4'), { family: 6, text: 'fe80::1:2:3:4', v6: [0xfe800000, 0, 0x10002, 0x30004] });
    assert.deepEqual(addr('::ffff:198.51.100.7'), { family: 4, text: '198.51.100.7', v4: 0xc6336407 });
    assert.deepEqual(addr('::ffff:c633:6407'), addr('198.51.100.7'));
    assert.equal(parseAddress('example.com'), null);
    assert.equal(parseAddress('300.1.1.1'), null);
    assert.equal(parseAddress('1::2::3'), null);
  });

  it('reads CIDR blocks, first-last ranges and single addresses, and refuses the rest', () => {
    assert.deepEqual(parseRange('192.0.2.77/24'), { family: 4, start: 0xc0000200, end: 0xc00002ff });
    assert.deepEqual(parseRange('0.0.0.0/0'), { family: 4, start: 0, end: 0xffffffff });
    assert.deepEqual(parseRange('198.51.100.7'), { family: 4, start: 0xc6336407, end: 0xc6336407 });
    assert.deepEqual(parseRange('192.0.2.10-192.0.2.20'), { family: 4, start: 0xc000020a, end: 0xc0000214 });
    assert.deepEqual(parseRange('2001:db8::/33'), {
      family: 6,
      start: [0x20010db8, 0, 0, 0],
      end: [0x20010db8, 0x7fffffff, 0xffffffff, 0xffffffff],
    });
    assert.deepEqual(parseRange('2001:db8:1:2:3:4:5:6/64'), {
      family: 6,
      start: [0x20010db8, 0x10002, 0, 0],
      end: [0x20010db8, 0x10002, 0xffffffff, 0xffffffff],
    });
    assert.deepEqual(parseRange('::ffff:192.0.2.0/120'), parseRange('192.0.2.0/24'));
    for (const bad of [
      '192.0.2.0/33',
      '2001:db8::/129',
      '192.0.2.9-192.0.2.1',
      '192.0.2.1-2001:db8::1',
      '192.0.2.0/x',
      'mail.example.com',
    ]) {
      assert.equal(parseRange(bad), null, bad);
    }
  });

  it('names special-purpose blocks and leaves public addresses alone', () => {
    assert.equal(specialPurpose(addr('10.20.30.40')), 'private (RFC 1918)');
    assert.equal(specialPurpose(addr('172.31.255.255')), 'private (RFC 1918)');
    assert.equal(specialPurpose(addr('172.32.0.1')), null);
    assert.equal(specialPurpose(addr('100.64.1.1')), 'shared address space, carrier-grade NAT (RFC 6598)');
    assert.equal(specialPurpose(addr('127.0.0.1')), 'loopback (RFC 1122)');
    assert.equal(specialPurpose(addr('203.0.113.66')), 'documentation (RFC 5737)');
    assert.equal(specialPurpose(addr('::1')), 'unspecified or loopback (RFC 4291)');
    assert.equal(specialPurpose(addr('fd12:3456::1')), 'unique local, private (RFC 4193)');
    assert.equal(specialPurpose(addr('fe80::1')), 'link-local (RFC 4291)');
    assert.equal(specialPurpose(addr('2001:db8::25')), 'documentation (RFC 3849)');
    assert.equal(specialPurpose(addr('::ffff:192.168.1.1')), 'private (RFC 1918)');
    assert.equal(specialPurpose(addr('8.8.8.8')), null);
    assert.equal(specialPurpose(addr('2a00:1450:4001::1')), null);
  });
});

describe('range tables', () => {
  const csv = (text: string) => [{ name: 'test.csv', bytes: Buffer.from(text) }];
  const asnOf = (t: RangeTable, ip: string) => {
    const v = t.lookup(addr(ip));
    return v ? `${v.num} ${v.text}` : null;
  };

  it('compiles CSV rows, quoted fields included, and finds the range of an address', () => {
    const t = RangeTable.compile(
      'asn',
      csv(
        'range_start,range_end,asn,org\n' +
          '1.0.0.0,1.0.0.255,13335,"Cloudflare, Inc."\r\n' +
          '5.0.0.0,5.0.255.255,64500,"The ""Quoted"" Net"\n' +
          '2001:db8::,2001:db8:ffff:ffff:ffff:ffff:ffff:ffff,64501,Doc Net\n' +
          '\n' +
          '::ffff:9.0.0.0,::ffff:9.0.0.255,64502,Mapped\n',
      ),
    );
    assert.equal(asnOf(t, '1.0.0.0'), '13335 Cloudflare, Inc.');
    assert.equal(asnOf(t, '1.0.0.255'), '13335 Cloudflare, Inc.');
    assert.equal(asnOf(t, '1.0.1.0'), null);
    assert.equal(asnOf(t, '0.255.255.255'), null);
    assert.equal(asnOf(t, '5.0.7.7'), '64500 The "Quoted" Net');
    assert.equal(asnOf(t, '2001:db8:1234::1'), '64501 Doc Net');
    assert.equal(asnOf(t, '2001:db9::'), null);
    assert.equal(asnOf(t, '9.0.0.9'), '64502 Mapped');
    assert.equal(asnOf(t, '::ffff:9.0.0.9'), '64502 Mapped');
    assert.equal(t.ipv4Ranges, 3);
    assert.equal(t.ipv6Ranges, 1);
  });

  it('lets the innermost of nested ranges win, and the later of equal ones', () => {
    const t = RangeTable.compile(
      'asn',
      csv(
        [
          '10.0.0.0,10.255.255.255,1,outer',
          '10.1.0.0,10.1.255.255,2,middle',
          '10.1.2.0,10.1.2.255,3,inner',
          '10.9.0.0,10.9.0.255,4,first',
          '10.9.0.0,10.9.0.255,5,second',
          '2001:db8::,2001:db8:ffff:ffff:ffff:ffff:ffff:ffff,6,outer6',
          '2001:db8:0:1::,2001:db8:0:1:ffff:ffff:ffff:ffff,7,inner6',
        ].join('\n'),
      ),
    );
    assert.equal(asnOf(t, '10.0.0.1'), '1 outer');
    assert.equal(asnOf(t, '10.1.0.1'), '2 middle');
    assert.equal(asnOf(t, '10.1.2.3'), '3 inner');
    assert.equal(asnOf(t, '10.1.3.0'), '2 middle');
    assert.equal(asnOf(t, '10.2.0.0'), '1 outer');
    assert.equal(asnOf(t, '10.9.0.1'), '5 second');
    assert.equal(asnOf(t, '10.9.1.0'), '1 outer');
    assert.equal(asnOf(t, '10.255.255.255'), '1 outer');
    assert.equal(asnOf(t, '2001:db8::1'), '6 outer6');
    assert.equal(asnOf(t, '2001:db8:0:1::1'), '7 inner6');
    assert.equal(asnOf(t, '2001:db8:0:2::'), '6 outer6');
    assert.equal(asnOf(t, '2001:db8:0:0:ffff:ffff:ffff:ffff'), '6 outer6');
  });

  it('round-trips through its binary form and refuses a damaged one', () => {
    const t = RangeTable.compile('country', csv('1.0.0.0,1.0.0.255,au\n2001:200::,2001:200:ffff:ffff:ffff:ffff:ffff:ffff,JP\n'), {
      built: '2026-01-02',
    });
    const bytes = t.serialize();
    const back = RangeTable.deserialize(bytes, 'x.rwrt');
    assert.equal(back.kind, 'country');
    assert.equal(back.meta.built, '2026-01-02');
    assert.deepEqual(back.lookup(addr('1.0.0.9')), { num: 0, text: 'AU' });
    assert.deepEqual(back.lookup(addr('2001:200::9')), { num: 0, text: 'JP' });
    // A copy at an odd offset (as a pooled buffer can be) reads the same.
    const odd = Buffer.alloc(bytes.length + 1);
    bytes.copy(odd, 1);
    assert.deepEqual(RangeTable.deserialize(odd.subarray(1), 'odd').lookup(addr('1.0.0.1')), { num: 0, text: 'AU' });
    assert.throws(() => RangeTable.deserialize(bytes.subarray(0, bytes.length - 4), 'cut.rwrt'), {
      code: 'E_ENRICH',
      message: /cut\.rwrt/,
    });
    const swapped = Buffer.from(bytes);
    // Make the first IPv4 range end before it starts.
    const meta = swapped.readUInt32LE(24);
    swapped.writeUInt32LE(0, 32 + ((meta + 3) & ~3) + 4);
    assert.throws(() => RangeTable.deserialize(swapped, 'bad.rwrt'), { code: 'E_ENRICH', message: /IPv4 range 0/ });
  });

  it('names the line of a row it cannot read', () => {
    assert.throws(() => RangeTable.compile('asn', csv('1.0.0.0,1.0.0.255,1,a\n1.0.1.0,nope,2,b\n')), {
      code: 'E_ENRICH',
      message: /test\.csv line 2: "1\.0\.1\.0" to "nope"/,
    });
    assert.throws(() => RangeTable.compile('asn', csv('1.0.0.0,1.0.0.255,1,a\n1.0.1.9,1.0.1.0,2,b\n')), {
      message: /line 2: .* comes after/,
    });
    assert.throws(() => RangeTable.compile('asn', csv('1.0.0.0,1.0.0.255,1,a\n1.0.1.0,1.0.1.9,AS-X,b\n')), {
      message: /line 2: "AS-X" is not an AS number/,
    });
    assert.throws(() => RangeTable.compile('country', csv('1.0.0.0,1.0.0.255,AU\n1.0.1.0,1.0.1.9,Germany\n')), { message: /two-letter/ });
    assert.throws(() => RangeTable.compile('asn', csv('1.0.0.0,1.0.0.255,1,a\n1.0.1.0,1.0.1.9,2,"open\n')), {
      message: /line 2: a quoted field does not end/,
    });
    assert.throws(() => RangeTable.compile('asn', csv('1.0.0.0,1.0.0.255,1,a\n1.0.1.0,2001:db8::,2,b\n')), {
      message: /not of one address family/,
    });
  });
});

describe('the bundled network data', () => {
  it('knows the network and country of well-known addresses', () => {
    const e = enricherOver(bundledData());
    const pick = (ip: string) => {
      const r = e.enrich({ ip });
      return { ip: r.ip, asn: r.asn, as_org: r.as_org, country: r.country, special: r.special };
    };
    assert.deepEqual(pick('8.8.8.8'), { ip: '8.8.8.8', asn: 15169, as_org: 'Google LLC', country: 'US', special: null });
    assert.deepEqual(pick('1.1.1.1'), { ip: '1.1.1.1', asn: 13335, as_org: 'Cloudflare, Inc.', country: 'AU', special: null });
    assert.deepEqual(pick('2001:4860:4860::8888'), {
      ip: '2001:4860:4860::8888',
      asn: 15169,
      as_org: 'Google LLC',
      country: 'US',
      special: null,
    });
    assert.deepEqual(pick('2a00:1450:4864:20::12d'), {
      ip: '2a00:1450:4864:20::12d',
      asn: 15169,
      as_org: 'Google LLC',
      country: 'IE',
      special: null,
    });
    // IPv4-mapped IPv6 is the IPv4 address (the country database alone has no answer for the mapped form).
    assert.deepEqual(pick('::ffff:8.8.8.8'), pick('8.8.8.8'));
    assert.deepEqual(pick('167.89.0.1'), { ip: '167.89.0.1', asn: 11377, as_org: 'SendGrid, Inc.', country: 'US', special: null });
    assert.deepEqual(pick('185.70.40.1'), { ip: '185.70.40.1', asn: 62371, as_org: 'Proton AG', country: 'CH', special: null });
  });

  it('answers nothing for addresses in no range, and nothing but what they are for special ones', () => {
    const e = enricherOver(bundledData());
    const pick = (ip: string) => {
      const r = e.enrich({ ip });
      return [r.asn, r.as_org, r.country, r.special];
    };
    assert.deepEqual(pick('203.0.112.1'), [null, null, null, null]);
    assert.deepEqual(pick('2c0f:ffff::1'), [null, null, null, null]);
    // Registered to a country, announced by no AS.
    assert.deepEqual(pick('6.6.6.6'), [null, null, 'US', null]);
    assert.deepEqual(pick('10.1.2.3'), [null, null, null, 'private (RFC 1918)']);
    assert.deepEqual(pick('192.168.100.1'), [null, null, null, 'private (RFC 1918)']);
    assert.deepEqual(pick('fd00::25'), [null, null, null, 'unique local, private (RFC 4193)']);
    // 2001::/32 (Teredo) is in the ASN data under Hurricane Electric; as a special block it gets no network.
    assert.deepEqual(pick('2001::1'), [null, null, null, 'IETF protocol assignments (RFC 2928)']);
    assert.deepEqual(pick('not-an-ip'), [null, null, null, 'not an IP address']);
  });

  it('says where the data came from and how old it is', () => {
    const d = bundledData();
    assert.equal(d.asn[0]!.file, BUNDLED_ASN);
    assert.equal(d.asn[0]!.format, 'table');
    assert.match(d.asn[0]!.description, /^@ip-location-db\/asn 2\.3\.\d{10}$/);
    assert.match(d.asn[0]!.built!, /^\d{4}-\d{2}-\d{2}$/);
    assert.equal(d.country[0]!.file, BUNDLED_COUNTRY);
    assert.equal(d.country[0]!.format, 'mmdb');
    assert.match(d.country[0]!.description, /^@ip-location-db\/geo-whois-asn-country-mmdb /);
    assert.match(d.country[0]!.built!, /^\d{4}-\d{2}-\d{2}$/);
  });
});

describe('user data files', () => {
  it('reads a newer ASN CSV in place of the bundled data, compiles it once and caches it beside the database', () => {
    const dir = tempDir();
    const file = path.join(dir, 'asn-ipv4.csv');
    fs.writeFileSync(file, '8.8.8.0,8.8.8.255,64496,Example Resolver Net\n');
    const cacheDir = path.join(dir, 'cache');
    const ours = settings({ asn_files: [file] });
    const first = loadEnricherData(ours, { cacheDir });
    assert.equal(first.asn[0]!.format, 'csv');
    const e = enricherOver(first);
    assert.deepEqual([e.enrich({ ip: '8.8.8.8' }).asn, e.enrich({ ip: '8.8.8.8' }).as_org], [64496, 'Example Resolver Net']);
    // Not in the user's file: no answer (the file replaces the bundled data, it is not merged in).
    assert.equal(e.enrich({ ip: '1.1.1.1' }).asn, null);
    // The country still comes from the bundled database.
    assert.equal(e.enrich({ ip: '8.8.8.8' }).country, 'US');
    const cached = fs.readdirSync(cacheDir);
    assert.equal(cached.length, 1);
    assert.match(cached[0]!, /^enrich-asn-[0-9a-f]{16}\.rwrt$/);
    // The cache is used: replace its table with another and the answer follows it...
    const other = RangeTable.compile(
      'asn',
      [{ name: 'x', bytes: Buffer.from('8.8.8.0,8.8.8.255,64497,From The Cache\n') }],
      RangeTable.deserialize(fs.readFileSync(path.join(cacheDir, cached[0]!)), 'c').meta,
    );
    fs.writeFileSync(path.join(cacheDir, cached[0]!), other.serialize());
    assert.equal(enricherOver(loadEnricherData(ours, { cacheDir })).enrich({ ip: '8.8.8.8' }).asn, 64497);
    // ...until the file changes, when it is compiled again.
    fs.writeFileSync(file, '8.8.8.0,8.8.8.255,64498,A Newer File\n');
    fs.utimesSync(file, new Date(), new Date(Date.now() + 5000));
    assert.equal(enricherOver(loadEnricherData(ours, { cacheDir })).enrich({ ip: '8.8.8.8' }).asn, 64498);
    // A damaged cache is compiled over.
    fs.writeFileSync(path.join(cacheDir, cached[0]!), 'RWRT garbage');
    assert.equal(enricherOver(loadEnricherData(ours, { cacheDir })).enrich({ ip: '8.8.8.8' }).asn, 64498);
  });

  it('reads country data as CSV or MaxMind DB, told apart by content whatever the name says', () => {
    const dir = tempDir();
    const csv = path.join(dir, 'countries.mmdb');
    fs.writeFileSync(csv, '8.8.8.0,8.8.8.255,NL\n');
    const mmdb = path.join(dir, 'countries.csv');
    fs.copyFileSync(BUNDLED_COUNTRY, mmdb);
    const d = loadEnricherData(settings({ country_files: [csv, mmdb] }));
    assert.deepEqual(
      d.country.map((s) => s.format),
      ['csv', 'mmdb'],
    );
    const e = enricherOver(d);
    // The first file that knows wins.
    assert.equal(e.enrich({ ip: '8.8.8.8' }).country, 'NL');
    assert.equal(e.enrich({ ip: '1.1.1.1' }).country, 'AU');
  });

  it('loads nothing until the first lookup, and then says which file is missing', () => {
    const missing = path.join(tempDir(), 'gone.csv');
    const enricher = createEnricher(settings({ asn_files: [missing] }));
    assert.throws(() => enricher.enrich({ ip: '8.8.8.8' }), {
      code: 'E_ENRICH',
      message: new RegExp(`cannot read the asn data file ${missing}`),
    });
  });

  it('caches the network facts of an address, whatever its spelling', () => {
    let lookups = 0;
    const counting: DataSource = {
      kind: 'asn',
      file: 'mem',
      format: 'table',
      built: null,
      description: 'test',
      lookup: (a) => {
        lookups++;
        return a.family === 4 ? { num: 64500, text: 'Test Net' } : null;
      },
    };
    const e = enricherOver({ asn: [counting], country: [], services: new ServiceMap([]) });
    for (let i = 0; i < 5; i++) assert.equal(e.enrich({ ip: '192.1.0.255' }).asn, 64500);
    e.enrich({ ip: '::ffff:192.1.0.255' });
    assert.equal(lookups, 1);
    e.enrich({ ip: '198.18.0.1' }); // special: no lookup at all
    assert.equal(lookups, 1);
  });
});

describe('known services', () => {
  it('ships a map of a few hundred services that passes the schema user files go through', () => {
    const entries = bundledServices();
    assert.ok(entries.length >= 300, `${entries.length} entries`);
    for (const e of entries) assert.ok((SERVICE_TYPES as readonly string[]).includes(e.type), `${e.id}: ${e.type}`);
    const ids = entries.map((e) => e.id);
    for (const want of [
      'google',
      'microsoft365',
      'amazon-ses',
      'sendgrid',
      'mailchimp',
      'mandrill',
      'mailgun',
      'postmark',
      'brevo',
      'zoho',
      'fastmail',
    ]) {
      assert.ok(ids.includes(want), want);
    }
    for (const want of [
      'sparkpost',
      'mailjet',
      'hubspot',
      'salesforce-mc',
      'zendesk',
      'freshdesk',
      'intercom',
      'proton',
      'icloud',
      'yahoo',
    ]) {
      assert.ok(ids.includes(want), want);
    }
    for (const want of ['gmx-webde', 'ovh-mail', 'mailbox-org', 'mimecast', 'proofpoint', 'barracuda', 'google-groups', 'comcast', 'aws']) {
      assert.ok(ids.includes(want), want);
    }
  });

  const map = () => new ServiceMap(bundledServices());
  const best = (m: ServiceMap, q: Parameters<ServiceMap['match']>[0]) => {
    const r = m.match(q)[0];
    return r ? `${r.id} ${r.matched_by} ${r.evidence}` : null;
  };
  const none = { addr: null, asn: null, asOrg: null };

  it('matches forward-confirmed reverse DNS by base domain, on label boundaries, longest first', () => {
    const m = map();
    assert.equal(best(m, { ...none, ptr: 'mail-sor-f41.google.com', ptrConfirmed: true }), 'google ptr google.com');
    assert.equal(best(m, { ...none, ptr: 'a8-55.smtp-out.amazonses.com.', ptrConfirmed: true }), 'amazon-ses ptr amazonses.com');
    assert.equal(
      best(m, { ...none, ptr: 'mail-db8eur05on2101.outbound.protection.outlook.com', ptrConfirmed: true }),
      'microsoft365 ptr outbound.protection.outlook.com',
    );
    assert.equal(best(m, { ...none, ptr: 'MOUT.GMX.NET', ptrConfirmed: true }), 'gmx-webde ptr gmx.net');
    // OVH's mail servers by their longer name, OVH's rented servers by the shorter.
    assert.equal(best(m, { ...none, ptr: 'mo551.mail-out.ovh.net', ptrConfirmed: true }), 'ovh-mail ptr mail-out.ovh.net');
    assert.equal(best(m, { ...none, ptr: 'vps-1234abcd.vps.ovh.net', ptrConfirmed: true }), 'ovhcloud ptr ovh.net');
    // "notgoogle.com" is not google.com.
    assert.equal(best(m, { ...none, ptr: 'mail.notgoogle.com', ptrConfirmed: true }), null);
  });

  it('trusts an unconfirmed reverse name least: after the network, the DKIM and the SPF domains', () => {
    const m = map();
    const forged = {
      addr: addr('198.51.100.20'),
      asn: 64500,
      asOrg: 'Example Hosting',
      ptr: 'mail-ed1-f54.google.com',
      ptrConfirmed: false,
    };
    assert.deepEqual(
      m.match(forged).map((x) => `${x.id} ${x.matched_by}`),
      ['google ptr_unconfirmed'],
    );
    assert.deepEqual(
      m.match({ ...forged, dkimDomains: ['sendgrid.net'] }).map((x) => `${x.id} ${x.matched_by}`),
      ['sendgrid dkim', 'google ptr_unconfirmed'],
    );
  });

  it('matches the DKIM and SPF domains of a record', () => {
    const m = map();
    assert.equal(best(m, { ...none, dkimDomains: ['example.com', 'pm.mtasv.net'] }), 'postmark dkim mtasv.net');
    assert.equal(best(m, { ...none, dkimDomains: ['example-com.20230601.gappssmtp.com'] }), 'google dkim gappssmtp.com');
    assert.equal(best(m, { ...none, dkimDomains: ['contoso.onmicrosoft.com'] }), 'microsoft365 dkim onmicrosoft.com');
    assert.equal(best(m, { ...none, spfDomains: ['us-east-1.amazonses.com'] }), 'amazon-ses spf amazonses.com');
    assert.equal(best(m, { ...none, spfDomains: ['mail181.suw21.mcsv.net'] }), 'mailchimp spf mcsv.net');
    assert.equal(best(m, { ...none, spfDomains: ['googlegroups.com'] }), 'google-groups spf googlegroups.com');
    assert.equal(best(m, { ...none, spfDomains: ['example.com'], dkimDomains: ['example.com'] }), null);
  });

  it('matches by AS number and AS organisation, network-only types after the domains', () => {
    const m = map();
    assert.equal(best(m, { addr: addr('167.89.0.1'), asn: 11377, asOrg: 'SendGrid, Inc.' }), 'sendgrid asn AS11377');
    assert.equal(
      best(m, { addr: addr('192.0.0.1'), asn: 4200000001, asOrg: 'Mailgun Technologies Inc.' }),
      'mailgun as_org Mailgun Technologies Inc.',
    );
    // "Mailgunner Ltd" is not Mailgun: organisations match on whole words.
    assert.equal(best(m, { addr: addr('192.0.0.1'), asn: 4200000001, asOrg: 'Mailgunner Ltd' }), null);
    // A server rented at AWS that sends with SES's domains is SES; without them, it is a rented server.
    const ec2 = { addr: addr('54.240.0.1'), asn: 16509, asOrg: 'Amazon.com, Inc.' };
    assert.equal(best(m, { ...ec2, dkimDomains: ['amazonses.com'] }), 'amazon-ses dkim amazonses.com');
    assert.equal(best(m, ec2), 'aws asn AS16509');
    assert.equal(m.match(ec2)[0]!.service_type, 'hosting');
    // A mail service's own network outranks the DKIM domain: a forwarder re-sending signed mail is the forwarder.
    assert.deepEqual(
      m.match({ addr: addr('209.85.220.41'), asn: 15169, asOrg: 'Google LLC', dkimDomains: ['sendgrid.net'] }).map((x) => x.id),
      ['google', 'sendgrid'],
    );
  });

  it('takes a user file that adds ranges and PTR suffixes of our own and replaces a bundled service', () => {
    const dir = tempDir();
    const file = path.join(dir, 'services.toml');
    fs.writeFileSync(
      file,
      `[[service]]
id = "office-relay"
name = "Our office relay"
type = "own"
ip_ranges = ["203.0.113.0/24", "2001:db8:25::/48"]
ptr_domains = ["relay.example.org"]

[[service]]
id = "office-relay-host"
name = "The relay's own address"
type = "own"
ip_ranges = ["203.0.113.25"]

[[service]]
id = "sendgrid"
name = "SendGrid (our account)"
type = "transactional"
dkim_domains = ["sendgrid.net"]
spf_include = "include:sendgrid.net"
ip_ranges = ["167.89.0.0/17"]
`,
    );
    const user = readServicesFile(file);
    const m = new ServiceMap(bundledServices(), user);
    assert.equal(best(m, { addr: addr('203.0.113.9'), asn: null, asOrg: null }), 'office-relay ip_range 203.0.113.0/24');
    assert.equal(best(m, { addr: addr('203.0.113.25'), asn: null, asOrg: null }), 'office-relay-host ip_range 203.0.113.25');
    assert.equal(best(m, { addr: addr('2001:db8:25::1'), asn: null, asOrg: null }), 'office-relay ip_range 2001:db8:25::/48');
    assert.equal(best(m, { ...none, ptr: 'gw1.relay.example.org', ptrConfirmed: true }), 'office-relay ptr relay.example.org');
    // The range outranks the network, and the replaced entry no longer matches by AS number.
    assert.equal(best(m, { addr: addr('167.89.1.1'), asn: 11377, asOrg: 'SendGrid, Inc.' }), 'sendgrid ip_range 167.89.0.0/17');
    assert.equal(m.match({ addr: addr('167.89.1.1'), asn: 11377, asOrg: 'SendGrid, Inc.' })[0]!.service, 'SendGrid (our account)');
    assert.equal(best(m, { addr: addr('167.89.200.1'), asn: 11377, asOrg: 'SendGrid, Inc.' }), null);
    // The same in JSON, the bundled map's own format.
    const json = path.join(dir, 'services.json');
    fs.writeFileSync(json, JSON.stringify({ service: user }));
    assert.deepEqual(readServicesFile(json), user);
  });

  it('through the enricher: a user file overrides a range of the bundled data and a service', () => {
    const dir = tempDir();
    const file = path.join(dir, 'services.json');
    const ours: Partial<ServiceEntry>[] = [
      { id: 'google', name: 'Google, as we call it', type: 'email provider', ip_ranges: ['8.8.8.0/24'] },
    ];
    fs.writeFileSync(file, JSON.stringify({ service: ours }));
    const e = enricherOver(loadEnricherData(settings({ services_file: file })));
    const r = e.enrich({ ip: '8.8.8.8' });
    assert.deepEqual([r.asn, r.service, r.matched_by], [15169, 'Google, as we call it', 'ip_range']);
    // The replaced entry lists no AS numbers: another Google address is no longer matched by network.
    assert.deepEqual([e.enrich({ ip: '209.85.220.41' }).asn, e.enrich({ ip: '209.85.220.41' }).service], [15169, null]);
    // Switching the bundled map off leaves the user's entries only.
    const only = enricherOver(loadEnricherData(settings({ services_file: file, known_services: false })));
    assert.equal(only.enrich({ ip: '167.89.0.1' }).service, null);
    assert.equal(only.enrich({ ip: '8.8.8.9' }).service, 'Google, as we call it');
  });

  it('refuses a services file with a clear message naming the bad key', () => {
    const dir = tempDir();
    const write = (name: string, text: string) => {
      const f = path.join(dir, name);
      fs.writeFileSync(f, text);
      return f;
    };
    assert.throws(
      () => readServicesFile(write('a.toml', '[[service]]\nid = "x"\nname = "X"\ntype = "own"\nip_ranges = ["192.0.2.0/40"]\n')),
      {
        code: 'E_CONFIG',
        message: /service\[0\]\.ip_ranges\[0\]: not an IP address, CIDR block/,
      },
    );
    assert.throws(() => readServicesFile(write('b.toml', '[[service]]\nid = "x"\nname = "X"\ntype = "own"\nptr = ["a.example"]\n')), {
      message: /service\[0\]: unknown key ptr/,
    });
    assert.throws(
      () => readServicesFile(write('c.json', '{"service": [{"id": "x", "name": "X", "type": "own", "dkim_domains": ["not a domain"]}]}')),
      {
        message: /service\[0\]\.dkim_domains\[0\]: not a domain name/,
      },
    );
    assert.throws(
      () =>
        readServicesFile(
          write('d.toml', '[[service]]\nid = "x"\nname = "X"\ntype = "own"\n[[service]]\nid = "x"\nname = "Y"\ntype = "own"\n'),
        ),
      {
        message: /the id "x" is used twice/,
      },
    );
    assert.throws(() => readServicesFile(write('e.json', '{"service": [')), { message: /is not valid JSON/ });
    assert.throws(() => readServicesFile(path.join(dir, 'missing.toml')), { code: 'E_CONFIG', message: /cannot read the services file/ });
  });
});

describe('the enricher', () => {
  it('answers network, country and service in one object, the strongest match first', () => {
    const e = enricherOver(bundledData());
    const r = e.enrich({
      ip: '::ffff:209.85.220.41',
      ptr: 'mail-sor-f41.google.com',
      ptrConfirmed: true,
      dkimDomains: ['gmail.com'],
      spfDomains: ['gmail.com'],
    });
    assert.equal(r.ip, '209.85.220.41');
    assert.deepEqual([r.asn, r.as_org, r.country, r.special], [15169, 'Google LLC', 'US', null]);
    assert.deepEqual([r.service, r.service_type, r.matched_by], ['Google Workspace / Gmail', 'email provider', 'ptr']);
    assert.deepEqual(
      r.matches.map((m) => m.id),
      ['google'],
    );
    const unknown = e.enrich({ ip: '203.0.112.1' });
    assert.deepEqual([unknown.service, unknown.service_type, unknown.matched_by, unknown.matches], [null, null, null, []]);
  });

  it('forward-confirms a reverse name only when it resolves back to the address', async () => {
    const dns: Record<string, string[]> = {
      'mail.example.net': ['192.0.2.25', '2001:db8::25'],
      'liar.example.net': ['198.51.100.1'],
    };
    const lookup = async (name: string) => {
      if (name === 'broken.example.net') throw Object.assign(new Error('timeout'), { code: 'ETIMEOUT' });
      return dns[name] ?? [];
    };
    assert.equal(await confirmReverseName('192.0.2.25', 'mail.example.net', lookup), true);
    assert.equal(await confirmReverseName('::ffff:192.0.2.25', 'mail.example.net', lookup), true);
    assert.equal(await confirmReverseName('2001:DB8:0::25', 'mail.example.net', lookup), true);
    assert.equal(await confirmReverseName('192.0.2.26', 'mail.example.net', lookup), false);
    assert.equal(await confirmReverseName('192.0.2.25', 'liar.example.net', lookup), false);
    assert.equal(await confirmReverseName('192.0.2.25', 'nothing.example.net', lookup), false);
    assert.equal(await confirmReverseName('192.0.2.25', 'broken.example.net', lookup), null);
  });
});

describe('[enrich] configuration', () => {
  it('has defaults that use the bundled data, and takes files from TOML and the environment', () => {
    assert.deepEqual(defaults, { enabled: true, asn_files: [], country_files: [], known_services: true });
    const dir = tempDir();
    const toml = path.join(dir, 'ruawatch.toml');
    fs.writeFileSync(
      toml,
      '[enrich]\nenabled = false\nasn_files = ["/data/asn-ipv4.csv", "/data/asn-ipv6.csv"]\nservices_file = "/etc/ruawatch/services.toml"\n',
    );
    const fromFile = loadConfig(toml, {}).config.enrich;
    assert.deepEqual(fromFile, {
      enabled: false,
      asn_files: ['/data/asn-ipv4.csv', '/data/asn-ipv6.csv'],
      country_files: [],
      services_file: '/etc/ruawatch/services.toml',
      known_services: true,
    });
    const fromEnv = loadConfig(undefined, { RUAWATCH_ENRICH_COUNTRY_FILES: '/a.mmdb, /b.csv', RUAWATCH_ENRICH_KNOWN_SERVICES: 'false' })
      .config.enrich;
    assert.deepEqual([fromEnv.country_files, fromEnv.known_services], [['/a.mmdb', '/b.csv'], false]);
    // Relative paths in the file are relative to its folder; from the environment, to the working directory.
    fs.writeFileSync(toml, '[enrich]\nasn_files = ["data/asn-ipv4.csv"]\nservices_file = "services.toml"\n');
    const relative = loadConfig(toml, { RUAWATCH_ENRICH_COUNTRY_FILES: 'c.mmdb' }).config.enrich;
    assert.deepEqual(relative.asn_files, [path.join(dir, 'data/asn-ipv4.csv')]);
    assert.equal(relative.services_file, path.join(dir, 'services.toml'));
    assert.deepEqual(relative.country_files, [path.resolve('c.mmdb')]);
    fs.writeFileSync(toml, '[enrich]\nasn_file = "/x.csv"\n');
    assert.throws(() => loadConfig(toml, {}), { code: 'E_CONFIG', message: /enrich\.asn_file: unknown key/ });
  });
});
