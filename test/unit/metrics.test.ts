import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import Database from 'better-sqlite3';
import { DAY, lastDays } from '../../src/analyse/index.js';
import { configSchema } from '../../src/config/schema.js';
import { createEnricher } from '../../src/enrich/index.js';
import { dkimDomainsOf, sendersOf, serviceTotals, windowSenders } from '../../src/pipeline/senders.js';
import { reportTotals } from '../../src/store/summary.js';
import type { Db } from '../../src/store/db.js';
import { KEEP_SECONDS, metricsText } from '../../src/web/metrics.js';
import { initialState, type WorkerState } from '../../src/worker/worker.js';
import { bufferInput, freshStore } from '../helpers/common.js';
import { tlsReportJson } from '../helpers/scenario.js';
import { dmarcXml, record } from '../helpers/synth.js';

/**
 * /metrics at scale: its queries read the window's rows only and give what the queries over the
 * whole history gave, and the window's gauges are kept between scrapes for KEEP_SECONDS at most
 * once reports were added.
 */

/** Today, as the scrapes below see it: the window is days TODAY-7 to TODAY-1. */
const TODAY = 20_600;
const NOW = TODAY * DAY + 3600;
const config = configSchema.parse({ analysis: { reverse_dns: false } });
const W = lastDays(NOW, config.analysis.recent_days);

const state = (): WorkerState => initialState(0);

/** The window's sources as (ip, messages, passing) rows, and their DKIM domains by source, from windowSenders. */
const windowSources = (db: Db, w: { from: number; to: number }): [string, number, number][] =>
  [...windowSenders(db, w)].map((s) => [s.ip, s.messages, s.pass]);
const windowDkimDomains = (db: Db, w: { from: number; to: number }): Map<string, string[]> =>
  new Map([...windowSenders(db, w)].filter((s) => s.dkim.length > 0).map((s) => [s.ip, s.dkim]));

const sendgridDkim = '<dkim><domain>sendgrid.net</domain><selector>s1</selector><result>pass</result></dkim>';
const otherDkim = '<dkim><domain>mailer.example.org</domain><selector>m</selector><result>fail</result></dkim>';

let seq = 0;
async function ingest(
  store: ReturnType<typeof freshStore>,
  domain: string,
  begin: number,
  end: number,
  records: string[],
  orgName = 'receiver.example',
): Promise<void> {
  const xml = dmarcXml({ reportId: `m-${++seq}`, orgName, domain, begin, end, records });
  assert.equal((await store.ingestor.ingest(bufferInput(`m-${seq}.xml`, xml))).leaves[0]!.status, 'stored');
}

/**
 * Three policy domains over 30 days (23 before the window, the window's 7, and today), IPv4 and
 * IPv6 sources, sources only in the history, a report spanning the window's first day and the day
 * before, several DKIM domains for one source, shared sources, a TLS report.
 */
async function history(): Promise<ReturnType<typeof freshStore>> {
  const store = freshStore();
  for (let day = TODAY - 29; day <= TODAY; day++) {
    const inWindow = day >= W.from && day < W.to;
    const n = day - TODAY + 30;
    await ingest(store, 'a.example', day * DAY, day * DAY + 7200, [
      record({ ip: '209.85.220.41', count: 50 + n, dkim: 'pass', spf: 'pass', headerFrom: 'a.example' }),
      record({ ip: '167.89.100.1', count: 7, dkim: 'fail', spf: 'fail', extra: sendgridDkim, headerFrom: 'a.example' }),
      record({ ip: '2001:db8::1', count: 3 + (n % 4), dkim: n % 2 ? 'pass' : 'fail', spf: 'fail', headerFrom: 'a.example' }),
      record({ ip: '2001:db8::1', count: 2, dkim: 'fail', spf: 'fail', headerFrom: 'mail.a.example', extra: otherDkim }),
      record({ ip: inWindow ? '2001:db8:0:1::7' : '198.51.100.99', count: 11, dkim: 'fail', spf: 'pass', headerFrom: 'a.example' }),
    ]);
    await ingest(
      store,
      'b.example',
      day * DAY,
      day * DAY + 600,
      [
        record({ ip: '167.89.100.1', count: 4 + (n % 3), dkim: 'pass', spf: 'fail', extra: sendgridDkim, headerFrom: 'b.example' }),
        record({ ip: '2001:db8::1', count: 1, dkim: 'pass', spf: 'pass', extra: sendgridDkim, headerFrom: 'b.example' }),
      ],
      'other-receiver.example',
    );
  }
  // Two days, half of it on the window's first day.
  await ingest(store, 'c.example', (W.from - 1) * DAY, (W.from + 1) * DAY - 1, [
    record({ ip: '203.0.113.66', count: 10, dkim: 'fail', spf: 'fail', headerFrom: 'c.example' }),
    record({ ip: '2001:db8:ffff::2', count: 3, dkim: 'pass', spf: 'fail', headerFrom: 'c.example' }),
  ]);
  // Only before the window: in the history, no source of the window.
  await ingest(store, 'old.example', (W.from - 5) * DAY, (W.from - 5) * DAY + 60, [record({ ip: '192.0.2.200', count: 9 })]);
  const tls = tlsReportJson({
    org: 'tls-receiver.example',
    contact: 'tls@receiver.example',
    reportId: 'tls-1',
    day: W.from + 2,
    successful: 40,
    failures: [{ mx: 'mx1.example.com', type: 'certificate-expired', sessions: 2 }],
  });
  assert.equal((await store.ingestor.ingest(bufferInput('tls-1.json', tls))).leaves[0]!.status, 'stored');
  return store;
}

/** The queries /metrics used to run: every day of history, grouped by source. */
function oldSources(db: Db, w: { from: number; to: number }): [string, number, number][] {
  return db
    .prepare(
      `SELECT source_ip, SUM(messages), SUM(dmarc_pass) FROM dmarc_daily WHERE day >= ? AND day < ? GROUP BY source_ip HAVING SUM(messages) > 0`,
    )
    .raw(true)
    .all(w.from, w.to) as [string, number, number][];
}

function oldDkim(db: Db, w: { from: number; to: number }): Map<string, string[]> {
  const rows = db
    .prepare(`SELECT DISTINCT source_ip, signing_domain FROM dkim_daily WHERE day >= ? AND day < ? AND signing_domain <> ''`)
    .raw(true)
    .all(w.from, w.to) as [string, string][];
  return dkimDomainsOf(rows.map(([sourceIp, signingDomain]) => ({ sourceIp, signingDomain })));
}

const round = (rows: [string, number, number][]) =>
  rows
    .map(([ip, m, p]) => [ip, Math.round(m * 1e6) / 1e6, Math.round(p * 1e6) / 1e6])
    .sort((a, b) => String(a[0]).localeCompare(String(b[0])));
const sorted = (m: Map<string, string[]>) => [...m].map(([ip, l]) => [ip, [...l].sort()] as const).sort((a, b) => a[0].localeCompare(b[0]));

/** The samples of one metric, by their labels. */
function samples(text: string, name: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    const m = new RegExp(`^${name}(\\{.*\\})? (\\S+)$`).exec(line);
    if (m) out.set(m[1] ?? '', Number(m[2]));
  }
  return out;
}

describe('/metrics at scale', () => {
  it('reads the sources of the window through domain_daily and gives what the whole-history queries gave', async () => {
    const store = await history();
    try {
      const enricher = createEnricher(config.enrich, { cacheDir: null });
      for (const w of [W, { from: W.from - 3, to: W.to }, { from: TODAY - 40, to: TODAY + 1 }, { from: W.to, to: W.to + 3 }]) {
        const rows = windowSources(store.db, w);
        assert.deepEqual(round(rows), round(oldSources(store.db, w)), `window ${w.from}-${w.to}`);
        assert.deepEqual(sorted(windowDkimDomains(store.db, w)), sorted(oldDkim(store.db, w)));
      }
      const rows = windowSources(store.db, W);
      const ips = rows.map((r) => r[0]).sort();
      // The window's sources only: the IPv6 sources, the shared ones, the two-day report's; not the history's.
      assert.deepEqual(ips, ['167.89.100.1', '2001:db8:0:1::7', '2001:db8::1', '2001:db8:ffff::2', '203.0.113.66', '209.85.220.41']);
      assert.deepEqual(windowDkimDomains(store.db, W).get('2001:db8::1'), ['example.com', 'mailer.example.org', 'sendgrid.net']);

      // Per service, as the old code summed the old rows.
      const old = oldSources(store.db, W);
      const facts = sendersOf(
        enricher,
        old.map((r) => r[0]),
        { dkim: oldDkim(store.db, W) },
      );
      const expect = new Map<string, { messages: number; pass: number }>();
      for (const [ip, m, p] of old) {
        const s = facts.get(ip)?.service ?? '';
        const t = expect.get(s) ?? { messages: 0, pass: 0 };
        t.messages += m;
        t.pass += p;
        expect.set(s, t);
      }
      const services = serviceTotals(store.db, W, enricher);
      assert.ok(
        services.some((s) => s.service !== ''),
        'a known service',
      );
      assert.deepEqual(
        services.map((s) => [s.service, s.messages, s.pass_rate]),
        [...expect]
          .sort((a, b) => a[0].localeCompare(b[0]))
          .map(([s, t]) => [s, Math.round(t.messages * 1e6) / 1e6, Math.round((t.pass / t.messages) * 10000) / 10000]),
      );

      // The domain and TLS gauges are reportTotals' numbers.
      const text = metricsText(store.db, state(), config, NOW, enricher);
      const totals = reportTotals(store.db, { since: W.from * DAY, until: W.to * DAY }, { sources: 0 });
      assert.deepEqual(
        samples(text, 'ruawatch_dmarc_messages'),
        new Map(totals.domains.map((d) => [`{domain="${d.domain}"}`, d.messages])),
      );
      assert.deepEqual(
        samples(text, 'ruawatch_dmarc_pass_rate'),
        new Map(totals.domains.map((d) => [`{domain="${d.domain}"}`, d.pass_rate!])),
      );
      assert.equal(totals.domains.length, 3);
      assert.deepEqual(
        samples(text, 'ruawatch_tls_sessions'),
        new Map(
          totals.tlsrpt.flatMap((t) => [
            [`{domain="${t.policy_domain}",result="successful"}`, t.successful],
            [`{domain="${t.policy_domain}",result="failed"}`, t.failed],
          ]),
        ),
      );
      assert.equal(samples(text, 'ruawatch_tls_sessions').get('{domain="example.com",result="successful"}'), 40);
      assert.deepEqual(
        samples(text, 'ruawatch_dmarc_service_messages'),
        new Map(services.map((s) => [`{service="${s.service}",service_type="${s.service_type}"}`, s.messages])),
      );
      assert.deepEqual(
        samples(text, 'ruawatch_reports_stored'),
        new Map([
          ['{kind="dmarc"}', 62],
          ['{kind="tlsrpt"}', 1],
          ['{kind="failure"}', 0],
        ]),
      );
      assert.deepEqual(samples(text, 'ruawatch_reports_queued'), new Map([['', 0]]));
    } finally {
      store.db.close();
    }
  });

  it('scans no table that grows with the history: each statement searches a key', async () => {
    const store = await history();
    const seen: string[] = [];
    const db = new Database(store.file, { verbose: (sql) => seen.push(String(sql)) }) as Db;
    try {
      const enricher = createEnricher(config.enrich, { cacheDir: null });
      // The first scrape of a process counts the reports by kind (once); the checked one comes
      // after a report was added, late enough for every gauge to be worked out again.
      metricsText(db, state(), config, NOW, enricher);
      await ingest(store, 'a.example', (W.to - 1) * DAY, (W.to - 1) * DAY + 60, [record({ ip: '192.0.2.77', count: 1 })]);
      seen.length = 0;
      const text = metricsText(db, state(), config, NOW + KEEP_SECONDS, enricher);
      assert.equal(samples(text, 'ruawatch_reports_stored').get('{kind="dmarc"}'), 63);
      assert.ok(seen.length > 5, 'statements seen');
      assert.ok(seen.some((sql) => /dmarc_daily/.test(sql)) && seen.some((sql) => /dkim_daily/.test(sql)), 'the window worked out again');
      const history =
        /\bSCAN (reports|dmarc_records|dmarc_daily|dkim_daily|domain_daily|tls_daily|tls_failure_daily|failure_daily|policy_daily|report_daily|reverse_dns)\b/;
      const scans: string[] = [];
      for (const sql of new Set(seen)) {
        const plan = (db.prepare(`EXPLAIN QUERY PLAN ${sql}`).all() as { detail: string }[]).map((r) => r.detail).join('; ');
        if (history.test(plan)) scans.push(`${sql.replace(/\s+/g, ' ')} -> ${plan}`);
      }
      assert.deepEqual(scans, []);
    } finally {
      db.close();
      store.db.close();
    }
  });

  it(`keeps the window's gauges while no report is added, and for ${KEEP_SECONDS} s at most once one is`, async () => {
    const store = freshStore();
    try {
      const day = W.to - 2;
      const messages = (text: string) => samples(text, 'ruawatch_dmarc_messages').get('{domain="k.example"}');
      const stored = (text: string) => samples(text, 'ruawatch_reports_stored').get('{kind="dmarc"}');
      await ingest(store, 'k.example', day * DAY, day * DAY + 60, [record({ ip: '192.0.2.1', count: 10, headerFrom: 'k.example' })]);
      const t0 = NOW;
      const first = metricsText(store.db, state(), config, t0);
      assert.equal(messages(first), 10);
      assert.equal(metricsText(store.db, state(), config, t0 + 60), first, 'nothing added: the same answer');

      // Added during a poll: the report count shows at once, the window's sums are kept.
      await ingest(store, 'k.example', day * DAY, day * DAY + 60, [record({ ip: '192.0.2.2', count: 5, headerFrom: 'k.example' })]);
      const soon = metricsText(store.db, state(), config, t0 + 120);
      assert.equal(stored(soon), 2);
      assert.equal(messages(soon), 10, 'kept: worked out less than KEEP_SECONDS ago');
      // KEEP_SECONDS after the gauges were worked out (at t0), not after the report came.
      const later = metricsText(store.db, state(), config, t0 + KEEP_SECONDS);
      assert.equal(messages(later), 15);

      // Another report: kept until KEEP_SECONDS after the last working out (t0 + KEEP_SECONDS).
      await ingest(store, 'k.example', day * DAY, day * DAY + 60, [record({ ip: '192.0.2.3', count: 1, headerFrom: 'k.example' })]);
      assert.equal(messages(metricsText(store.db, state(), config, t0 + 2 * KEEP_SECONDS - 1)), 15);
      assert.equal(messages(metricsText(store.db, state(), config, t0 + 2 * KEEP_SECONDS)), 16);

      // After a quiet spell, the first report shows on the next scrape: what is kept is old.
      await ingest(store, 'k.example', day * DAY, day * DAY + 60, [record({ ip: '192.0.2.6', count: 2, headerFrom: 'k.example' })]);
      assert.equal(messages(metricsText(store.db, state(), config, t0 + 9 * KEEP_SECONDS)), 18);

      // The window moving (midnight UTC) works them out again at once.
      await ingest(store, 'k.example', W.to * DAY, W.to * DAY + 60, [record({ ip: '192.0.2.4', count: 100, headerFrom: 'k.example' })]);
      const tomorrow = (W.to + 1) * DAY + 1;
      assert.equal(messages(metricsText(store.db, state(), config, tomorrow)), 118);
      // So does a clock set back.
      await ingest(store, 'k.example', W.to * DAY, W.to * DAY + 60, [record({ ip: '192.0.2.5', count: 1000, headerFrom: 'k.example' })]);
      assert.equal(messages(metricsText(store.db, state(), config, tomorrow - 1)), 1118);
    } finally {
      store.db.close();
    }
  });
});
