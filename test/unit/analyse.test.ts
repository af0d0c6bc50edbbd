import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  analyse,
  dailyRollups,
  dayShares,
  DAY,
  defaultSettings,
  effectivePolicy,
  parsePolicyKey,
  policyKey,
  rollupInput,
  windowsAt,
  type AnalysisInput,
  type Finding,
  type PolicyRow,
  type RecordRow,
  type ReportRow,
  type TlsRow,
} from '../../src/analyse/index.js';
import { rows } from '../helpers/records.js';

/** Evaluations below happen at the end of day 100: recent = days 93-99, baseline = days 65-92. */
const NOW = 100 * DAY;

/** Raw rows rolled up in memory, as the database's rollups would hold them. */
function input(records: RecordRow[], extra: { tls?: TlsRow[]; reports?: ReportRow[]; policies?: PolicyRow[] } = {}): AnalysisInput {
  return rollupInput({ records, ...extra });
}

const keys = (fs: Finding[]) => fs.map((f) => f.key).sort();

describe('windows and pro-rata rollups', () => {
  const cases: [string, number, number, [number, number][]][] = [
    ['a report inside one day', 10 * DAY, 11 * DAY - 1, [[10, 1]]],
    [
      'noon to noon: half on each day',
      10 * DAY + DAY / 2,
      11 * DAY + DAY / 2,
      [
        [10, 0.5],
        [11, 0.5],
      ],
    ],
    [
      'three days',
      10 * DAY,
      13 * DAY,
      [
        [10, 1 / 3],
        [11, 1 / 3],
        [12, 1 / 3],
      ],
    ],
    ['inverted range counts on its first day', 12 * DAY + 5, 12 * DAY, [[12, 1]]],
    ['empty range', 12 * DAY, 12 * DAY, [[12, 1]]],
  ];
  for (const [name, begin, end, want] of cases) {
    it(name, () => {
      const got = dayShares(begin, end);
      assert.equal(got.length, want.length);
      got.forEach(([d, s], i) => {
        assert.equal(d, want[i]![0]);
        assert.ok(Math.abs(s - want[i]![1]) < 1e-9, `${s} vs ${want[i]![1]}`);
      });
    });
  }

  it('shares a two-day report out over its days in the daily rollups', () => {
    const r: RecordRow = {
      domain: 'example.com',
      reporter: 'x',
      begin: 10 * DAY + DAY / 2,
      end: 11 * DAY + DAY / 2,
      sourceIp: '192.0.2.1',
      headerFrom: 'example.com',
      count: 100,
      disposition: 'reject',
      dkimAligned: 'fail',
      spfAligned: 'pass',
      reasons: [],
      dkim: [],
    };
    const got = dailyRollups([r, { ...r, count: 10, spfAligned: 'fail', reasons: ['forwarded'], disposition: 'none' }]);
    assert.deepEqual(
      got.map((g) => [g.day, g.messages, g.dmarcPass, g.spfAlignedPass, g.forwarded, g.reject, g.none]),
      [
        ['1970-01-11', 55, 50, 50, 5, 50, 5],
        ['1970-01-12', 55, 50, 50, 5, 50, 5],
      ],
    );
  });

  it('leaves the current, incomplete day out of the windows', () => {
    const w = windowsAt(NOW + 3600, defaultSettings);
    assert.deepEqual(w, {
      recent: { from: 93, to: 100 },
      baseline: { from: 65, to: 93 },
      latest: { from: 98, to: 100 },
      last: { from: 99, to: 100 },
      quiet: { from: 97, to: 100 },
      daily: 97,
    });
  });
});

describe('pass-rate rules', () => {
  const good = { ip: '192.0.2.10', from: 65, to: 99, perDay: 100, spfAligned: true };
  const cases: { name: string; records: RecordRow[]; want: string[] }[] = [
    { name: 'a steady source: nothing', records: rows(good), want: [] },
    {
      name: 'a source that passed and now fails',
      records: rows({ ...good, to: 92, spfAligned: false }, { ...good, from: 93, pass: 0.3, spfAligned: false, dkimFailResult: 'none' }),
      want: ['pass_rate_drop:example.com:192.0.2.10'],
    },
    {
      name: 'a source that fails because its selector broke: one finding, the selector, which names the source',
      records: rows({ ...good, to: 92, spfAligned: false }, { ...good, from: 93, pass: 0.3, spfAligned: false }),
      want: ['dkim_selector_broken:example.com:example.com:s1'],
    },
    {
      name: 'a selector of another signing domain (not aligned) breaking does not stand for the drop',
      records: rows(
        { ...good, to: 92, spfAligned: false, dkimDomain: 'esp.example' },
        { ...good, from: 93, pass: 0.3, spfAligned: false, dkimDomain: 'esp.example' },
      ),
      want: ['dkim_selector_broken:example.com:esp.example:s1', 'pass_rate_drop:example.com:192.0.2.10'],
    },
    {
      name: 'too few messages to judge',
      records: rows({ ...good, to: 92, perDay: 2, spfAligned: false }, { ...good, from: 93, perDay: 2, pass: 0, spfAligned: false }),
      want: [],
    },
    {
      name: 'a drop smaller than drop_points',
      records: rows({ ...good, to: 92, spfAligned: false, pass: 0.95 }, { ...good, from: 93, pass: 0.8, spfAligned: false }),
      want: [],
    },
    {
      name: 'a source that never passed well is not a drop',
      records: rows({ ...good, to: 92, spfAligned: false, pass: 0.6 }, { ...good, from: 93, pass: 0.1, spfAligned: false }),
      want: [],
    },
    {
      name: 'failing forwarded mail is not held against its source',
      records: rows({ ...good, to: 92, spfAligned: false }, { ...good, from: 93, pass: 0, spfAligned: false, reasons: ['forwarded'] }),
      want: [],
    },
    {
      name: 'a new source failing at volume',
      records: rows(good, { ip: '203.0.113.66', from: 95, to: 99, perDay: 40, pass: 0, dkimFailResult: 'none' }),
      want: ['new_failing_source:example.com:203.0.113.66'],
    },
    {
      name: 'a new source below the volume floor',
      records: rows(good, { ip: '203.0.113.66', from: 97, to: 99, perDay: 5, pass: 0 }),
      want: [],
    },
    {
      name: 'a new source that passes',
      records: rows(good, { ip: '198.51.100.7', from: 95, to: 99, perDay: 40 }),
      want: [],
    },
    {
      name: 'a new mailing list failing with a mailing_list reason',
      records: rows(good, { ip: '198.51.100.99', from: 95, to: 99, perDay: 40, pass: 0, reasons: ['mailing_list'] }),
      want: [],
    },
    {
      name: 'no baseline for the domain: a new install does not call everything new',
      records: rows({ ip: '203.0.113.66', from: 95, to: 99, perDay: 40, pass: 0 }),
      want: [],
    },
    {
      name: 'many small failing sources: a domain-wide drop',
      records: rows(good, ...Array.from({ length: 20 }, (_, i) => ({ ip: `203.0.113.${i + 1}`, from: 93, to: 99, perDay: 2, pass: 0 })), {
        ip: '192.0.2.11',
        from: 65,
        to: 99,
        perDay: 30,
        spfAligned: true,
      }),
      want: ['pass_rate_drop:example.com'],
    },
  ];
  for (const c of cases) {
    it(c.name, () => {
      assert.deepEqual(keys(analyse(input(c.records), NOW, defaultSettings)), c.want);
    });
  }

  it('says what fell, by how much, over how many messages, and why', () => {
    const records = rows(
      { ...good, to: 92, spfAligned: false },
      { ...good, from: 93, pass: 0.3, spfAligned: false, dkimFailResult: 'permerror' },
    );
    const names = new Map([['192.0.2.10', 'mx1.example.net']]);
    // The selector's finding stands for the source's drop, and says so.
    const folded = analyse({ ...input(records), names }, NOW, defaultSettings);
    assert.deepEqual(
      folded.map((x) => x.kind),
      ['dkim_selector_broken'],
    );
    assert.match(folded[0]!.summary, /seen from 192\.0\.2\.10 \(mx1\.example\.net\), where it breaks DMARC \(100\.0% -> 30\.0% passing\)$/);
    assert.deepEqual(folded[0]!.details.dmarc_failing_sources, ['192.0.2.10']);
    // A drop alert already open stays what it is (folding never resolves an alert).
    const opened = new Map([
      [
        'pass_rate_drop:example.com:192.0.2.10',
        {
          key: 'pass_rate_drop:example.com:192.0.2.10',
          domain: 'example.com',
          severity: 'critical' as const,
          firstSeen: 95 * DAY,
          baseline: {},
        },
      ],
    ]);
    assert.deepEqual(
      analyse({ ...input(records), names, open: opened }, NOW, defaultSettings).map((x) => x.kind),
      ['dkim_selector_broken', 'pass_rate_drop'],
    );
    // The drop's own message, where no selector finding stands for it: a selector of the ESP's
    // own signing domain, which does not align.
    const esp = rows(
      { ...good, to: 92, spfAligned: false, dkimDomain: 'esp.example' },
      { ...good, from: 93, pass: 0.3, spfAligned: false, dkimFailResult: 'permerror', dkimDomain: 'esp.example' },
    );
    const all = analyse({ ...input(esp), names }, NOW, defaultSettings);
    assert.deepEqual(
      all.map((x) => x.kind),
      ['dkim_selector_broken', 'pass_rate_drop'],
    );
    const f = all.find((x) => x.kind === 'pass_rate_drop');
    assert.equal(f!.severity, 'critical');
    assert.equal(f!.source_name, 'mx1.example.net');
    assert.equal(
      f!.summary,
      'mail from 192.0.2.10 (mx1.example.net) for example.com passing DMARC fell from 100.0% to 30.0% over 700 messages in the last 7 days; DKIM s1 (esp.example) fails, SPF not aligned',
    );
    assert.deepEqual(f!.details, {
      baseline_pass_rate: 100,
      recent_pass_rate: 30,
      baseline_messages: 2800,
      recent_messages: 700,
      judged_pass_rate: 30,
      judged_messages: 700,
      window_days: 7,
      cause: 'DKIM s1 (esp.example) fails, SPF not aligned',
    });
    assert.match(all[0]!.summary, /seen from 192\.0\.2\.10 \(mx1\.example\.net\)$/);
    assert.equal(all[0]!.details.dmarc_failing_sources, undefined);
  });

  it('names every source a broken selector takes DMARC from, in one finding', () => {
    const other = { ...good, ip: '192.0.2.11' };
    const records = rows(
      { ...good, to: 92, spfAligned: false },
      { ...good, from: 93, pass: 0.3, spfAligned: false },
      { ...other, to: 92, spfAligned: false },
      { ...other, from: 93, pass: 0.2, spfAligned: false },
    );
    const all = analyse(input(records), NOW, defaultSettings);
    assert.deepEqual(keys(all), ['dkim_selector_broken:example.com:example.com:s1']);
    assert.deepEqual(all[0]!.details.dmarc_failing_sources, ['192.0.2.10', '192.0.2.11']);
    assert.match(
      all[0]!.summary,
      /; it breaks DMARC for mail from 192\.0\.2\.10 \(100\.0% -> 30\.0% passing\), 192\.0\.2\.11 \(100\.0% -> 20\.0% passing\)$/,
    );
  });

  it('grades a new failing source by the policy receivers applied', () => {
    const records = rows(good, {
      ip: '203.0.113.66',
      from: 95,
      to: 99,
      perDay: 40,
      pass: 0,
      dkimFailResult: 'none',
      disposition: 'reject',
    });
    const policy = (p: string) => [
      {
        domain: 'example.com',
        reporter: 'google.com',
        begin: 98 * DAY,
        end: 99 * DAY,
        p,
        sp: null,
        np: null,
        pct: null,
        adkim: null,
        aspf: null,
      },
    ];
    const [reject] = analyse(input(records, { policies: policy('reject') }), NOW, defaultSettings);
    assert.equal(reject!.severity, 'warning');
    assert.match(
      reject!.summary,
      /^new source 203\.0\.113\.66 sent 200 messages as example\.com in the last 7 days, 0\.0% passing DMARC \(no DKIM signature, SPF not aligned\); receivers rejected 200 and quarantined 0$/,
    );
    const [none] = analyse(input(records, { policies: policy('none') }), NOW, defaultSettings);
    assert.equal(none!.severity, 'critical');
  });

  it('folds a botnet of new failing sources into one finding for the domain', () => {
    const bots = Array.from({ length: 40 }, (_, i) => ({
      ip: `203.0.113.${i + 1}`,
      from: 97,
      to: 99,
      perDay: 10 + i,
      pass: 0,
      dkimFailResult: 'none',
      disposition: 'reject',
    }));
    const few = analyse(input(rows(good, ...bots.slice(0, 10))), NOW, defaultSettings);
    assert.equal(few.length, 10);
    const fs = analyse(input(rows(good, ...bots)), NOW, defaultSettings);
    assert.deepEqual(keys(fs), ['new_failing_source:example.com']);
    assert.equal(
      fs[0]!.summary,
      '40 new sources sent 3,540 messages failing DMARC as example.com in the last 7 days (most: 203.0.113.40 147, 203.0.113.39 144, 203.0.113.38 141, 203.0.113.37 138, 203.0.113.36 135); receivers rejected 3,540 and quarantined 0',
    );
  });

  it('ignores rows from after the evaluation time', () => {
    const records = rows(good, { ip: '203.0.113.66', from: 100, to: 105, perDay: 400, pass: 0 });
    assert.deepEqual(analyse(input(records), NOW, defaultSettings), []);
  });
});

describe('dkim_selector_broken', () => {
  const good = { ip: '192.0.2.10', from: 65, to: 99, perDay: 100, spfAligned: true };
  it('a selector that passed now fails, while SPF keeps DMARC passing', () => {
    const records = rows({ ...good, to: 92 }, { ...good, from: 93, pass: 0, dkimFailResult: 'permerror' });
    const fs = analyse(input(records), NOW, defaultSettings);
    assert.deepEqual(keys(fs), ['dkim_selector_broken:example.com:example.com:s1']);
    assert.match(
      fs[0]!.summary,
      /^DKIM selector s1\._domainkey\.example\.com passed 100\.0% of 2,800 signatures, now 0\.0% of 700 \(permerror 700\): the key record is missing or broken in DNS; seen from 192\.0\.2\.10$/,
    );
  });

  it('a spoofer forging the selector does not make it broken', () => {
    const records = rows(good, { ip: '203.0.113.66', from: 93, to: 99, perDay: 300, pass: 0 });
    assert.deepEqual(keys(analyse(input(records), NOW, defaultSettings)), ['new_failing_source:example.com:203.0.113.66']);
  });

  it('a mailing list breaking signatures does not either', () => {
    const records = rows(good, { ip: '192.0.2.50', from: 65, to: 99, perDay: 30, pass: 0, reasons: ['mailing_list'] });
    assert.deepEqual(analyse(input(records), NOW, defaultSettings), []);
  });
});

describe('tls_failures', () => {
  const tls = (
    day: number,
    failures: TlsRow['failures'],
    failed: number,
    successful = 500,
    mxHosts = ['mx1.example.com', 'mx2.example.com'],
  ): TlsRow => ({
    domain: 'example.com',
    reporter: 'google.com',
    begin: day * DAY,
    end: (day + 1) * DAY - 1,
    policyType: 'sts',
    mxHosts,
    successful,
    failed,
    failures,
  });
  const cases: { name: string; tls: TlsRow[]; want: string[] }[] = [
    { name: 'no failures', tls: [tls(98, [], 0), tls(99, [], 0)], want: [] },
    {
      name: 'an expired certificate on one MX',
      tls: [
        tls(98, [{ resultType: 'certificate-expired', mx: 'MX2.example.com.', sessions: 150 }], 150),
        tls(99, [{ resultType: 'certificate-expired', mx: 'mx2.example.com', sessions: 150 }], 150),
      ],
      want: ['tls_failures:example.com:mx2.example.com:certificate-expired'],
    },
    {
      name: 'a handful of failures under the rate',
      tls: [tls(99, [{ resultType: 'validation-failure', mx: 'mx1.example.com', sessions: 12 }], 12, 5000)],
      want: [],
    },
    {
      name: 'failures older than the latest window',
      tls: [tls(90, [{ resultType: 'starttls-not-supported', mx: 'mx1.example.com', sessions: 400 }], 400)],
      want: [],
    },
    {
      name: 'failed sessions without details',
      tls: [tls(99, [], 80, 100, ['mx.example.com'])],
      want: ['tls_failures:example.com:mx.example.com:unspecified'],
    },
  ];
  for (const c of cases) {
    it(c.name, () => assert.deepEqual(keys(analyse(input([], { tls: c.tls }), NOW, defaultSettings)), c.want));
  }

  it('says which MX, how many sessions and why', () => {
    const [f] = analyse(
      input([], { tls: [tls(99, [{ resultType: 'certificate-expired', mx: 'mx2.example.com', sessions: 150 }], 150)] }),
      NOW,
      defaultSettings,
    );
    assert.equal(
      f!.summary,
      // Successes are counted per policy: each of its two MX hosts gets half of the 500.
      'TLS to mx2.example.com (example.com) failed in 150 of 400 sessions (37.5%) over the last 2 days with certificate-expired; reported by google.com',
    );
    assert.equal(f!.severity, 'warning');
  });
});

describe('reporter_silent', () => {
  const report = (reporter: string, day: number, domain = 'example.com', kind: 'dmarc' | 'tlsrpt' = 'dmarc') => ({
    kind,
    domain,
    reporter,
    begin: day * DAY,
    end: (day + 1) * DAY,
  });
  const daily = (reporter: string, from: number, to: number, kind: 'dmarc' | 'tlsrpt' = 'dmarc') =>
    Array.from({ length: to - from + 1 }, (_, i) => report(reporter, from + i, 'example.com', kind));
  const cases: { name: string; reports: ReturnType<typeof report>[]; want: string[] }[] = [
    { name: 'everyone reporting', reports: [...daily('google.com', 60, 99), ...daily('yahoo.com', 60, 99)], want: [] },
    {
      name: 'one daily reporter silent for 4 days',
      reports: [...daily('google.com', 60, 99), ...daily('yahoo.com', 60, 95)],
      want: ['reporter_silent:dmarc:example.com:yahoo.com'],
    },
    { name: 'silent for 2 days: not yet', reports: [...daily('google.com', 60, 99), ...daily('yahoo.com', 60, 97)], want: [] },
    {
      name: 'a weekly reporter is not expected daily',
      reports: [...daily('google.com', 60, 99), ...[60, 67, 74, 81, 88].map((d) => report('weekly.example', d))],
      want: [],
    },
    {
      name: 'nobody reports any more: one finding for the domain',
      reports: [...daily('google.com', 60, 94), ...daily('yahoo.com', 60, 94)],
      want: ['reporter_silent:dmarc:example.com'],
    },
    {
      name: 'TLS reports are watched apart from DMARC ones',
      reports: [...daily('google.com', 60, 99), ...daily('google.com', 60, 93, 'tlsrpt')],
      want: ['reporter_silent:tlsrpt:example.com'],
    },
  ];
  for (const c of cases) {
    it(c.name, () => assert.deepEqual(keys(analyse(input([], { reports: c.reports }), NOW, defaultSettings)), c.want));
  }
});

describe('policy_changed', () => {
  const pol = (day: number, p: string, extra: Partial<{ sp: string | null; pct: number | null }> = {}) => ({
    domain: 'example.com',
    reporter: 'google.com',
    begin: day * DAY,
    end: (day + 1) * DAY - 1,
    p,
    sp: null,
    np: null,
    pct: null,
    adkim: null,
    aspf: null,
    ...extra,
  });
  const span = (from: number, to: number, p: string, extra = {}) =>
    Array.from({ length: to - from + 1 }, (_, i) => pol(from + i, p, extra));
  const cases: { name: string; policies: ReturnType<typeof pol>[]; want: [string, string][] }[] = [
    { name: 'unchanged', policies: span(65, 99, 'reject'), want: [] },
    {
      name: 'sp spelled out the same as p is no change',
      policies: [...span(65, 95, 'reject'), ...span(96, 99, 'reject', { sp: 'reject', pct: 100 })],
      want: [],
    },
    {
      name: 'weakened to none',
      policies: [...span(65, 97, 'reject'), ...span(98, 99, 'none')],
      want: [['policy_changed:example.com:p=none; sp=none; pct=100; adkim=r; aspf=r', 'warning']],
    },
    {
      name: 'strengthened to reject',
      policies: [...span(65, 97, 'quarantine'), ...span(98, 99, 'reject')],
      want: [['policy_changed:example.com:p=reject; sp=reject; pct=100; adkim=r; aspf=r', 'info']],
    },
    {
      // Compared as records: the mode first, then pct.
      name: 'reject at 20% after quarantine at 100% is stronger',
      policies: [...span(65, 97, 'quarantine'), ...span(98, 99, 'reject', { pct: 20 })],
      want: [['policy_changed:example.com:p=reject; sp=reject; pct=20; adkim=r; aspf=r', 'info']],
    },
    {
      name: 'the share lowered under the same mode is weaker',
      policies: [...span(65, 97, 'reject'), ...span(98, 99, 'reject', { pct: 50 })],
      want: [['policy_changed:example.com:p=reject; sp=reject; pct=50; adkim=r; aspf=r', 'warning']],
    },
  ];
  it('a policy has one text, which reads back as the same record', () => {
    const texts = ['p=reject; sp=quarantine; np=reject; pct=50; adkim=s; aspf=r', 'p=none; sp=none; pct=100; adkim=r; aspf=r'];
    for (const t of texts) assert.equal(policyKey(parsePolicyKey(t)!), t);
    assert.deepEqual(effectivePolicy({ p: 'reject', sp: null, np: '', pct: null, adkim: null, aspf: 's' }), {
      p: 'reject',
      sp: 'reject',
      np: null,
      pct: 100,
      adkim: 'r',
      aspf: 's',
    });
    for (const bad of ['', 'p=reject', 'p=reject; sp=reject; pct=x; adkim=r; aspf=r', 'sp=none; p=none; pct=100; adkim=r; aspf=r'])
      assert.equal(parsePolicyKey(bad), null, bad);
  });
  for (const c of cases) {
    it(c.name, () => {
      const fs = analyse(input([], { policies: c.policies }), NOW, defaultSettings);
      assert.deepEqual(
        fs.map((f) => [f.key, f.severity]),
        c.want,
      );
    });
  }
});

describe('the life of an alert (issue 12)', () => {
  const good = { ip: '192.0.2.10', from: 65, to: 99, perDay: 100, spfAligned: false };
  const open = (key: string, baseline: Record<string, unknown>, severity: 'critical' | 'warning' = 'warning') =>
    new Map([[key, { key, domain: 'example.com', severity, firstSeen: 90 * DAY, baseline }]]);
  const drop = 'pass_rate_drop:example.com:192.0.2.10';
  const run = (records: RecordRow[], opened?: ReturnType<typeof open>, extra: Partial<AnalysisInput> = {}) =>
    keys(analyse({ ...input(records), ...(opened ? { open: opened } : {}), ...extra }, NOW, defaultSettings));

  const cases: { name: string; records: RecordRow[]; open?: ReturnType<typeof open>; want: string[] }[] = [
    {
      name: 'failing since day 75: the baseline has fallen under the floor, so nothing opens',
      records: rows({ ...good, to: 74 }, { ...good, from: 75, pass: 0.5 }),
      want: [],
    },
    {
      name: '...but an alert opened on day 76 stays open against its frozen baseline',
      records: rows({ ...good, to: 74 }, { ...good, from: 75, pass: 0.5 }),
      open: open(drop, { baseline_pass_rate: 100 }),
      want: [drop],
    },
    {
      name: 'an open alert resolves once the latest days are back within recover_points',
      records: rows({ ...good, to: 74 }, { ...good, from: 75, to: 97, pass: 0.5 }, { ...good, from: 98, pass: 0.96 }),
      open: open(drop, { baseline_pass_rate: 100 }),
      want: [],
    },
    {
      name: '...not when they are only halfway back',
      records: rows({ ...good, to: 74 }, { ...good, from: 75, to: 97, pass: 0.5 }, { ...good, from: 98, pass: 0.9 }),
      open: open(drop, { baseline_pass_rate: 100 }),
      want: [drop],
    },
    {
      name: '...nor on one good day after a bad one (the latest two days count)',
      records: rows({ ...good, to: 98, pass: 0.5 }, { ...good, from: 99 }),
      open: open(drop, { baseline_pass_rate: 100 }),
      want: [drop],
    },
    {
      name: 'an open alert whose source sent nothing for quiet_days resolves',
      records: rows({ ...good, to: 96, pass: 0.5 }),
      open: open(drop, { baseline_pass_rate: 100 }),
      want: [],
    },
    {
      name: '...while one that sent on the first of those days stays open',
      records: rows({ ...good, to: 97, pass: 0.5 }),
      open: open(drop, { baseline_pass_rate: 100 }),
      want: [drop],
    },
    {
      name: 'fast: the last day failing completely opens at once (its broken selector, which stands for the drop)',
      records: rows({ ...good, to: 98, spfAligned: true }, { ...good, from: 99, pass: 0 }),
      want: ['dkim_selector_broken:example.com:example.com:s1'],
    },
    {
      name: 'fast: the same without a signature opens the drop at once',
      records: rows({ ...good, to: 98, spfAligned: true }, { ...good, from: 99, pass: 0, dkimFailResult: 'none' }),
      want: [drop],
    },
    {
      name: 'fast: two days in a row 30 points down open',
      records: rows({ ...good, to: 97, spfAligned: true }, { ...good, from: 98, pass: 0.7 }),
      want: [drop],
    },
    {
      name: 'a one-day dip to 60% opens nothing',
      records: rows({ ...good, to: 98, spfAligned: true }, { ...good, from: 99, pass: 0.6 }),
      want: [],
    },
    {
      name: 'a one-day dip that recovered the next day opens nothing, even a deep one',
      records: rows(
        { ...good, to: 97, spfAligned: true },
        { ...good, from: 98, to: 98, pass: 0.1 },
        { ...good, from: 99, spfAligned: true },
      ),
      want: [],
    },
    {
      name: 'a week-long fall that has recovered on the latest days does not open',
      records: rows({ ...good, to: 92 }, { ...good, from: 93, to: 97, pass: 0.2 }, { ...good, from: 98 }),
      want: [],
    },
    {
      name: '"new" means not known: a spoofer seen with a handful of messages in the baseline is new',
      records: rows(
        good,
        { ip: '203.0.113.66', from: 70, to: 70, perDay: 5, pass: 0 },
        { ip: '203.0.113.66', from: 95, to: 99, perDay: 200, pass: 0 },
      ),
      want: ['new_failing_source:example.com:203.0.113.66'],
    },
    {
      name: 'a source that sent real passing volume in the baseline is not new (the domain fell, though)',
      records: rows(
        good,
        { ip: '198.51.100.7', from: 80, to: 80, perDay: 30 },
        { ip: '198.51.100.7', from: 95, to: 99, perDay: 40, pass: 0 },
      ),
      want: ['pass_rate_drop:example.com'],
    },
    {
      name: 'an open new source that has not sent failing mail for quiet_days resolves',
      records: rows(good, { ip: '203.0.113.66', from: 90, to: 96, perDay: 200, pass: 0 }),
      open: open('new_failing_source:example.com:203.0.113.66', {}),
      want: [],
    },
    {
      name: '...and does not open again from the 7 days it still shows in',
      records: rows(good, { ip: '203.0.113.66', from: 90, to: 96, perDay: 200, pass: 0 }),
      want: [],
    },
    {
      name: 'an open new source still sending failing mail after weeks stays open',
      records: rows(good, { ip: '203.0.113.66', from: 60, to: 99, perDay: 3, pass: 0 }),
      open: open('new_failing_source:example.com:203.0.113.66', {}),
      want: ['new_failing_source:example.com:203.0.113.66'],
    },
  ];
  for (const c of cases) it(c.name, () => assert.deepEqual(run(c.records, c.open), c.want));

  it('a spoofer forging the selector in the baseline does not mask a real break of it later', () => {
    const records = rows(
      { ...good, spfAligned: true, to: 97 },
      { ...good, spfAligned: true, from: 98, pass: 0 },
      { ip: '203.0.113.99', from: 65, to: 92, perDay: 300, pass: 0 },
    );
    // Without pairs the baseline of s1 would be 2,800 of 11,200: 25%.
    assert.deepEqual(
      run(records).filter((k) => k.startsWith('dkim')),
      ['dkim_selector_broken:example.com:example.com:s1'],
    );
    const [f] = analyse(input(records), NOW, defaultSettings).filter((x) => x.kind === 'dkim_selector_broken');
    assert.match(f!.summary, /passed 100\.0% of 2,800 signatures, now 0\.0% of 200 in the last 2 days/);
    assert.deepEqual(f!.details.known_sources, ['192.0.2.10']);
  });

  it('a DKIM alert resolves when its known pairs pass again, whatever a forger still sends', () => {
    const key = 'dkim_selector_broken:example.com:example.com:s1';
    const records = rows(
      { ...good, spfAligned: true, to: 95, pass: 0 },
      { ...good, spfAligned: true, from: 96 },
      { ip: '203.0.113.99', from: 90, to: 99, perDay: 300, pass: 0 },
    );
    assert.deepEqual(
      run(records, open(key, { baseline_pass_rate: 100, known_sources: ['192.0.2.10'] }, 'critical')).filter((k) => k.startsWith('dkim')),
      [],
    );
  });

  describe('tls_failures per MX, with hysteresis', () => {
    const tls = (day: number, share: number): TlsRow => ({
      domain: 'example.com',
      reporter: 'google.com',
      begin: day * DAY,
      end: (day + 1) * DAY - 1,
      policyType: 'sts',
      mxHosts: ['mx1.example.com', 'mx2.example.com'],
      // Successes are shared evenly over the two MX hosts: mx2 has 1,000 sessions, `share` of them failing.
      successful: 2000 * (1 - share),
      failed: 1000 * share,
      failures: [{ resultType: 'certificate-expired', mx: 'mx2.example.com', sessions: 1000 * share }],
    });
    const key = 'tls_failures:example.com:mx2.example.com:certificate-expired';
    const sev = (share: number, opened?: ReturnType<typeof open>) =>
      analyse({ ...input([], { tls: [tls(98, share), tls(99, share)] }), ...(opened ? { open: opened } : {}) }, NOW, defaultSettings).map(
        (f) => [f.key, f.severity, f.details.failure_rate],
      );
    it('is judged on the MX sessions: half of them failing is critical', () => {
      assert.deepEqual(sev(0.5), [[key, 'critical', 50]]);
    });
    it('45% is a warning when it opens...', () => assert.deepEqual(sev(0.45), [[key, 'warning', 45]]));
    it('...but an open critical one stays critical down to 40%', () =>
      assert.deepEqual(sev(0.45, open(key, {}, 'critical')), [[key, 'critical', 45]]));
    it('an open one stays open down to half of tls_min_failure_rate, then resolves', () => {
      assert.deepEqual(sev(0.03, open(key, {})), [[key, 'warning', 3]]);
      assert.deepEqual(sev(0.02, open(key, {})), []);
      assert.deepEqual(sev(0.03), []);
    });
    it('an open one with no TLS report in the latest days stays open with its figures; a report of working sessions resolves it', () => {
      const opened = open(key, { mx: 'mx2.example.com', result_type: 'certificate-expired', failure_rate: 50 }, 'critical');
      const quiet = analyse({ ...input([], { tls: [tls(90, 0.5)] }), open: opened }, NOW, defaultSettings);
      assert.deepEqual(
        quiet.map((f) => [f.key, f.severity, f.details.failure_rate, f.details.no_recent_reports]),
        [[key, 'critical', 50, 1]],
      );
      assert.match(quiet[0]!.summary, /no TLS report has mentioned it in the last 2 days, so it stays open/);
      // Opened before baselines were kept: the key says which MX and result.
      assert.deepEqual(
        analyse({ ...input([]), open: open(key, {}) }, NOW, defaultSettings).map((f) => f.key),
        [key],
      );
      assert.deepEqual(sev(0, opened), []);
    });
  });

  describe('reporter_silent', () => {
    const daily = (reporter: string, from: number, to: number) =>
      Array.from({ length: to - from + 1 }, (_, i) => ({
        kind: 'dmarc' as const,
        domain: 'example.com',
        reporter,
        begin: (from + i) * DAY,
        end: (from + i + 1) * DAY,
      }));
    const key = 'reporter_silent:dmarc:example.com:yahoo.com';
    const reports = [...daily('google.com', 60, 99), ...daily('yahoo.com', 60, 84)];
    it('silent for 15 days: no longer active enough to open...', () => assert.deepEqual(run([], undefined, rollupInput({ reports })), []));
    it('...but an open one stays open while the reporter stays silent', () =>
      assert.deepEqual(run([], open(key, {}), rollupInput({ reports })), [key]));
    it('and resolves once it reports again', () =>
      assert.deepEqual(run([], open(key, {}), rollupInput({ reports: [...reports, ...daily('yahoo.com', 98, 99)] })), []));
    it('one reporter is "1 reporter"', () => {
      const [f] = analyse(input([], { reports: daily('google.com', 60, 94) }), NOW, defaultSettings);
      assert.match(f!.summary, /; 1 reporter sent them on 28 of 28 days before/);
    });
  });

  describe('failure reports', () => {
    const failures = (ip: string, reports: number, selector = '') => [
      { domain: 'example.com', day: 100, sourceIp: ip, dkimDomain: selector ? 'example.com' : '', dkimSelector: selector, reports },
    ];
    const healthy = rows({ ...good, spfAligned: false, to: 99 });
    it('a burst about a known source opens its pass_rate_drop before any aggregate report says so', () => {
      assert.deepEqual(run(healthy, undefined, { failures: failures('192.0.2.10', 5) }), [drop]);
    });
    it('and about a selector that passed from it, its dkim_selector_broken, which stands for the drop', () => {
      assert.deepEqual(run(healthy, undefined, { failures: failures('192.0.2.10', 5, 's1') }), [
        'dkim_selector_broken:example.com:example.com:s1',
      ]);
      const [f] = analyse({ ...input(healthy), failures: failures('192.0.2.10', 5, 's1') }, NOW, defaultSettings);
      assert.deepEqual(f!.details.source_ips, ['192.0.2.10']);
      assert.deepEqual(f!.details.dmarc_failing_sources, ['192.0.2.10']);
      assert.match(f!.summary, /; it breaks DMARC for mail from 192\.0\.2\.10$/);
    });
    it('a burst about the source of an open warning drop escalates it to critical; without an open alert it does not', () => {
      const falling = rows({ ...good, spfAligned: false, to: 92 }, { ...good, spfAligned: false, from: 93, pass: 0.6 });
      const severity = (opened?: ReturnType<typeof open>, extra: Partial<AnalysisInput> = {}) =>
        analyse({ ...input(falling), ...(opened ? { open: opened } : {}), ...extra }, NOW, defaultSettings).find((f) => f.key === drop)
          ?.severity;
      const warning = open(drop, { baseline_pass_rate: 100 });
      assert.equal(severity(warning), 'warning');
      assert.equal(severity(warning, { failures: failures('192.0.2.10', 4) }), 'warning');
      assert.equal(severity(warning, { failures: failures('192.0.2.10', 5) }), 'critical');
      assert.equal(severity(undefined, { failures: failures('192.0.2.10', 5) }), 'warning');
    });
    it('fewer than failure_min_reports, or from a source that never passed: nothing', () => {
      assert.deepEqual(run(healthy, undefined, { failures: failures('192.0.2.10', 4) }), []);
      assert.deepEqual(run(healthy, undefined, { failures: failures('203.0.113.66', 500, 's1') }), []);
    });
  });
});
