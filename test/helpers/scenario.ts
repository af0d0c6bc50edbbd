import assert from 'node:assert/strict';
import { after, before } from 'node:test';
import { DAY, type Finding } from '../../src/analyse/index.js';
import { configSchema } from '../../src/config/schema.js';
import { settingsOf } from '../../src/pipeline/alerts.js';
import type { Ingestor } from '../../src/pipeline/ingest.js';
import { evaluateRules, type EvaluateOptions } from '../../src/store/analysis.js';
import type { Db } from '../../src/store/db.js';
import { bufferInput, freshStore } from './common.js';
import { gzip } from './synth.js';

/**
 * The scenario of issue #4, shared by the alert and dashboard tests: daily reports for example.com
 * from Google (aggregate and TLS) and Yahoo. In week five (days 30-34) the newsletter provider's
 * DKIM selector breaks, a spoofer appears, mx2's certificate expires; a forwarder fails SPF
 * throughout. Day 35 on is healthy again.
 */

export const D0 = Date.UTC(2026, 9, 5) / 1000 / DAY; // Monday 2026-10-05
export const dayIso = (d: number) => new Date(d * DAY * 1000).toISOString().slice(0, 10);

/** One <record> of a generated aggregate report. */
export interface Rec {
  ip: string;
  count: number;
  dkim: { d: string; s: string; result: string }[];
  spf: { d: string; result: string };
  dkimAligned: 'pass' | 'fail';
  spfAligned: 'pass' | 'fail';
  disposition?: string;
  reason?: string;
}

/** An aggregate report for example.com covering UTC day `day` (an epoch day), with policy p=`policy`. */
export function aggregateXml(reporter: string, email: string, day: number, recs: Rec[], policy = 'reject'): string {
  const records = recs.map(
    (r) =>
      `<record><row><source_ip>${r.ip}</source_ip><count>${r.count}</count><policy_evaluated><disposition>${r.disposition ?? 'none'}</disposition>` +
      `<dkim>${r.dkimAligned}</dkim><spf>${r.spfAligned}</spf>${r.reason ? `<reason><type>${r.reason}</type></reason>` : ''}</policy_evaluated></row>` +
      `<identifiers><header_from>example.com</header_from></identifiers><auth_results>` +
      r.dkim.map((k) => `<dkim><domain>${k.d}</domain><selector>${k.s}</selector><result>${k.result}</result></dkim>`).join('') +
      `<spf><domain>${r.spf.d}</domain><result>${r.spf.result}</result></spf></auth_results></record>`,
  );
  return `<?xml version="1.0" encoding="UTF-8"?>
<feedback><report_metadata><org_name>${reporter}</org_name><email>${email}</email><report_id>${reporter}-${dayIso(day)}</report_id>
<date_range><begin>${day * DAY}</begin><end>${(day + 1) * DAY - 1}</end></date_range></report_metadata>
<policy_published><domain>example.com</domain><adkim>r</adkim><aspf>r</aspf><p>${policy}</p><sp>${policy}</sp><pct>100</pct></policy_published>
${records.join('\n')}
</feedback>`;
}

/**
 * A TLS report (RFC 8460) on example.com's MTA-STS policy (mx1 and mx2) for one UTC day: the
 * sessions that succeeded and the failures, each with its MX, result type and sessions.
 */
export function tlsReportJson(r: {
  org: string;
  contact: string;
  reportId: string;
  day: number;
  successful: number;
  failures: { mx: string; type: string; sessions: number }[];
}): string {
  const { day, failures } = r;
  const failed = failures.reduce((n, f) => n + f.sessions, 0);
  return JSON.stringify({
    'organization-name': r.org,
    'date-range': {
      'start-datetime': new Date(day * DAY * 1000).toISOString(),
      'end-datetime': new Date(((day + 1) * DAY - 1) * 1000).toISOString(),
    },
    'contact-info': r.contact,
    'report-id': r.reportId,
    policies: [
      {
        policy: {
          'policy-type': 'sts',
          'policy-string': ['version: STSv1', 'mode: enforce', 'mx: mx1.example.com', 'mx: mx2.example.com', 'max_age: 86400'],
          'policy-domain': 'example.com',
          'mx-host': ['mx1.example.com', 'mx2.example.com'],
        },
        summary: { 'total-successful-session-count': r.successful, 'total-failure-session-count': failed },
        'failure-details': failures.map((f) => ({
          'result-type': f.type,
          'sending-mta-ip': '209.85.220.41',
          'receiving-mx-hostname': f.mx,
          'failed-session-count': f.sessions,
        })),
      },
    ],
  });
}

/** What example.com's reporters say about day `d` (0 = D0). */
export function reportsFor(d: number): { name: string; bytes: Buffer }[] {
  const day = D0 + d;
  const espBroken = d >= 31 && d <= 34;
  const own = (n: number): Rec => ({
    ip: '192.0.2.10',
    count: n,
    dkim: [{ d: 'example.com', s: 's1', result: 'pass' }],
    spf: { d: 'example.com', result: 'pass' },
    dkimAligned: 'pass',
    spfAligned: 'pass',
  });
  const esp = (n: number): Rec => ({
    ip: '198.51.100.20',
    count: n,
    dkim: [{ d: 'example.com', s: 'esp1', result: espBroken ? 'fail' : 'pass' }],
    spf: { d: 'bounces.esp.example', result: 'pass' },
    dkimAligned: espBroken ? 'fail' : 'pass',
    spfAligned: 'fail',
  });
  const google: Rec[] = [
    own(300),
    esp(120),
    // The forwarder: DKIM survives, SPF fails as always; some list mail fails both, with a reason.
    {
      ip: '192.0.2.200',
      count: 40,
      dkim: [{ d: 'example.com', s: 's1', result: 'pass' }],
      spf: { d: 'forwarder.example', result: 'fail' },
      dkimAligned: 'pass',
      spfAligned: 'fail',
    },
    {
      ip: '192.0.2.200',
      count: 10,
      dkim: [{ d: 'example.com', s: 's1', result: 'fail' }],
      spf: { d: 'forwarder.example', result: 'fail' },
      dkimAligned: 'fail',
      spfAligned: 'fail',
      reason: 'forwarded',
    },
  ];
  if (d >= 30 && d <= 34) {
    google.push({
      ip: '203.0.113.66',
      count: 80,
      dkim: [],
      spf: { d: 'example.com', result: 'fail' },
      dkimAligned: 'fail',
      spfAligned: 'fail',
      disposition: 'reject',
    });
  }
  const yahoo = [own(60), esp(30)];
  const certExpired = d >= 32 && d <= 34 ? [{ mx: 'mx2.example.com', type: 'certificate-expired', sessions: 150 }] : [];
  return [
    { name: `google-${d}.xml.gz`, bytes: gzip(aggregateXml('google.com', 'noreply-dmarc-support@google.com', day, google)) },
    { name: `yahoo-${d}.xml`, bytes: Buffer.from(aggregateXml('Yahoo', 'dmarchelp@yahooinc.com', day, yahoo)) },
    {
      name: `google-tls-${d}.json.gz`,
      bytes: gzip(
        tlsReportJson({
          org: 'Google Inc.',
          contact: 'smtp-tls-reporting@google.com',
          reportId: `${dayIso(day)}T00:00:00Z_example.com`,
          day,
          successful: 500,
          failures: certExpired,
        }),
      ),
    },
  ];
}

export const EXPECTED = [
  'dkim_selector_broken:example.com:example.com:esp1',
  'new_failing_source:example.com:203.0.113.66',
  'tls_failures:example.com:mx2.example.com:certificate-expired',
];

export async function ingestDays(db: { ingestor: Ingestor }, from: number, to: number): Promise<void> {
  for (let d = from; d <= to; d++) {
    for (const r of reportsFor(d)) {
      const res = await db.ingestor.ingest(bufferInput(r.name, r.bytes));
      assert.deepEqual(
        res.leaves.map((l) => l.status),
        ['stored'],
        `${r.name}: ${JSON.stringify(res.leaves)}`,
      );
    }
  }
}

/** The day after the scenario's last: what the flood tests evaluate at. */
export const SCENARIO_NOW = (D0 + 35) * DAY;

/**
 * For the describe() it is called in: a fresh store holding the five-week scenario with `extra`
 * written into it (rows straight into the rollups, as ingest writes them), closed after; and the
 * rules evaluated over it with `opts` and the default settings (no reverse DNS).
 */
export function scenarioWith(extra: (db: Db) => void): {
  db: () => Db;
  evaluate: (opts: EvaluateOptions) => Finding[];
} {
  let store: ReturnType<typeof freshStore> | null = null;
  before(async () => {
    store = freshStore();
    await ingestDays(store, 0, 34);
    extra(store.db);
  });
  after(() => store?.db.close());
  const settings = settingsOf(configSchema.parse({ analysis: { reverse_dns: false } }));
  return {
    db: () => store!.db,
    evaluate: (opts) => evaluateRules(store!.db, SCENARIO_NOW, settings, opts),
  };
}
