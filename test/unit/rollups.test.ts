import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { rng } from '../../devtools/corpus.js';
import {
  dayShares,
  countDay,
  DAY,
  effectivePolicy,
  policyKey,
  rollupCoverage,
  rollupPolicies,
  rollupRecords,
  reportShares,
  rollupTls,
  boundTlsReport,
  MAX_TLS_REPORT_ROWS,
  type RecordRow,
  type TlsRow,
} from '../../src/analyse/index.js';
import { INPUT_SPREAD_ROWS, inputSpread, MAX_POLICY_HOSTS, REPORT_SPREAD_ROWS } from '../../src/analyse/rollups.js';
import { openDb, type Db } from '../../src/store/db.js';
import { buildRollups, RollupWriter, settleRollups } from '../../src/store/rollups.js';
import { configSchema } from '../../src/config/schema.js';
import { createLogger } from '../../src/log.js';
import { runAlerts } from '../../src/pipeline/alerts.js';
import { Ingestor } from '../../src/pipeline/ingest.js';
import { overview } from '../../src/store/dashboard.js';
import { noLock } from '../../src/store/lock.js';
import { prune } from '../../src/store/prune.js';
import { ReportStore } from '../../src/store/reports.js';
import { defaultLimits } from '../../src/unpack/limits.js';
import { runCli } from '../helpers/cli.js';
import { bufferInput, count, freshStore, tempDir } from '../helpers/common.js';
import { dmarcXml, gzip, record, zip } from '../helpers/synth.js';

/**
 * The daily rollups the database keeps (settled after ingest, or built by the migration) are
 * held to a straightforward recomputation from the raw records: the pro-rata sums of
 * analyse/rollups.ts, on generated reports with multi-day ranges, duplicates, forwarded records,
 * IPv6 sources and more records than the writer buffers.
 */

const D0 = Date.UTC(2026, 5, 1) / 1000 / DAY;
const REPORTERS = ['google.com', 'Yahoo', 'outlook.com', 'mail.ru'];
const DOMAINS = ['example.com', 'example.org', 'shop.example.net'];
const IPS = ['192.0.2.1', '192.0.2.77', '198.51.100.20', '2001:DB8::1', '2001:db8:0:0::a', '::ffff:203.0.113.9', '203.0.113.66'];

function reportXml(
  rand: () => number,
  n: number,
  opts: { records?: number; manySources?: boolean } = {},
): { xml: string; domain: string; reporter: string } {
  const pick = <T>(list: readonly T[]) => list[Math.floor(rand() * list.length)]!;
  const domain = pick(DOMAINS);
  const reporter = pick(REPORTERS);
  const day = D0 + Math.floor(rand() * 20);
  // Daily reports, noon-to-noon ones, three-day ones, and now and then an empty range (inverted
  // ones are refused at parse time; a test below stores them directly).
  const shape = rand();
  const begin = shape < 0.5 ? day * DAY : shape < 0.75 ? day * DAY + DAY / 2 : shape < 0.95 ? day * DAY + 3600 : day * DAY + 500;
  const end = shape < 0.5 ? begin + DAY - 1 : shape < 0.75 ? begin + DAY : shape < 0.95 ? begin + 3 * DAY - 7200 : begin;
  const records: string[] = [];
  const total = opts.records ?? 1 + Math.floor(rand() * 12);
  for (let i = 0; i < total; i++) {
    const pass = rand();
    const reason = rand() < 0.15 ? pick(['forwarded', 'mailing_list', 'trusted_forwarder', 'local_policy']) : null;
    const sigs = Array.from({ length: Math.floor(rand() * 3) }, () => {
      const selector = rand() < 0.1 ? '' : `<selector>${pick(['s1', 'S1', 'esp1', 'sel2'])}</selector>`;
      const sd = rand() < 0.05 ? '' : `<domain>${pick(['example.com', 'Example.COM', 'esp.example'])}</domain>`;
      return `<dkim>${sd}${selector}<result>${pick(['pass', 'pass', 'fail', 'permerror', 'none'])}</result></dkim>`;
    }).join('');
    const hf = rand() < 0.1 ? '' : `<header_from>${pick([domain, domain.toUpperCase(), `news.${domain}`])}</header_from>`;
    records.push(
      `<record><row><source_ip>${opts.manySources ? (i % 5 ? `10.${i >> 8}.${i & 255}.1` : `2001:db8::${i.toString(16)}`) : pick(IPS)}</source_ip><count>${Math.floor(rand() * 200)}</count><policy_evaluated>` +
        `<disposition>${pick(['none', 'quarantine', 'reject'])}</disposition><dkim>${pass < 0.6 ? 'pass' : 'fail'}</dkim>` +
        `<spf>${pass < 0.3 || pass > 0.9 ? 'pass' : 'fail'}</spf>${reason ? `<reason><type>${reason}</type></reason>` : ''}</policy_evaluated></row>` +
        `<identifiers>${hf}</identifiers><auth_results>${sigs}<spf><domain>${domain}</domain><result>pass</result></spf></auth_results></record>`,
    );
  }
  const policy = pick(['<p>reject</p>', '<p>none</p><sp>quarantine</sp>', '<p>quarantine</p><pct>50</pct>']);
  const xml = `<?xml version="1.0"?><feedback><report_metadata><org_name>${reporter}</org_name><email>dmarc@${reporter.toLowerCase()}</email>
<report_id>p-${n}</report_id><date_range><begin>${begin}</begin><end>${end}</end></date_range></report_metadata>
<policy_published><domain>${domain}</domain>${policy}</policy_published>${records.join('\n')}</feedback>`;
  return { xml, domain, reporter };
}

/** A report's DKIM signatures past the first of each record (RecordRow.reportRows), from a join on `e`. */
const EXTRA_SIGNATURES = `e.extra`;
const EXTRA_JOIN = `JOIN (SELECT report_id, SUM(max(json_array_length(dkim_results) - 1, 0)) AS extra FROM dmarc_records GROUP BY report_id) e
  ON e.report_id = r.id`;

/** The raw records of the database, as the reference recomputation reads them. */
function rawRecords(db: Db): (RecordRow & { reportId: number; id: number })[] {
  const rows = db
    .prepare(
      `SELECT d.id, r.id AS reportId, r.policy_domain AS domain, r.reporter, r.begin_ts AS begin, r.end_ts AS end, d.source_ip AS sourceIp,
              d.header_from AS headerFrom, d.count, d.disposition, d.dkim_aligned AS dkimAligned, d.spf_aligned AS spfAligned,
              d.reasons, d.dkim_results AS dkim, r.record_count + ${EXTRA_SIGNATURES} AS reportRows
         FROM dmarc_records d JOIN reports r ON r.id = d.report_id ${EXTRA_JOIN} ORDER BY d.id`,
    )
    .all() as (Omit<RecordRow, 'reasons' | 'dkim'> & { reasons: string; dkim: string; reportId: number; id: number })[];
  return rows.map((r) => ({
    ...r,
    reasons: (JSON.parse(r.reasons) as { type: string | null }[]).map((x) => x.type ?? ''),
    dkim: (JSON.parse(r.dkim) as { domain: string | null; selector: string | null; result: string | null }[]).map((x) => ({
      domain: x.domain,
      selector: x.selector,
      result: x.result ?? 'none',
    })),
  }));
}

type Table = Map<string, Record<string, number>>;

function table(db: Db, sql: string, keys: string[]): Table {
  const out: Table = new Map();
  for (const row of db.prepare(sql).all() as Record<string, string | number>[]) {
    const k = keys.map((c) => String(row[c])).join('|');
    const values: Record<string, number> = {};
    for (const [c, v] of Object.entries(row)) if (!keys.includes(c)) values[c] = Number(v);
    out.set(k, values);
  }
  return out;
}

function assertClose(got: Table, want: Table, what: string): void {
  assert.deepEqual([...got.keys()].sort(), [...want.keys()].sort(), `${what}: the same rows`);
  for (const [k, w] of want) {
    const g = got.get(k)!;
    for (const [c, v] of Object.entries(w)) {
      assert.ok(Math.abs(g[c]! - v) <= 1e-9 * Math.max(1, Math.abs(v)), `${what} ${k} ${c}: ${g[c]} vs ${v}`);
    }
  }
}

const SOURCE_SQL = `SELECT domain, day, source_ip, header_from, messages, dmarc_pass, dkim_aligned_pass, spf_aligned_pass, forwarded,
  quarantine, reject, reports, reporters FROM dmarc_daily`;
const SOURCE_KEYS = ['domain', 'day', 'source_ip', 'header_from'];
const DKIM_SQL = `SELECT domain, day, source_ip, signing_domain, selector, result, messages FROM dkim_daily`;
const DKIM_KEYS = ['domain', 'day', 'source_ip', 'signing_domain', 'selector', 'result'];

const DOMAIN_ZERO = { messages: 0, dmarc_pass: 0, dkim_aligned_pass: 0, spf_aligned_pass: 0, forwarded: 0, quarantine: 0, reject: 0 };

/**
 * What the rollup tables should hold for the database's raw rows, recomputed the plain way;
 * `maxRows`: the rollup rows one report may make (the writer's maxReportRows).
 */
function expected(db: Db, maxRows?: number): Record<string, Table> {
  const records = rawRecords(db);
  const { sources, dkim } = rollupRecords(records, maxRows);
  const sharesOf = (r: RecordRow) => reportShares(r.begin, r.end, r.reportRows!, maxRows);
  const bits = new Map(
    (db.prepare(`SELECT domain, reporter, bit FROM domain_reporters`).all() as { domain: string; reporter: string; bit: number }[]).map(
      (r) => [`${r.domain}|${r.reporter}`, r.bit],
    ),
  );
  const src: Table = new Map();
  for (const s of sources) {
    src.set([s.domain, s.day, s.sourceIp, s.headerFrom].join('|'), {
      messages: s.messages,
      dmarc_pass: s.dmarcPass,
      dkim_aligned_pass: s.dkimAlignedPass,
      spf_aligned_pass: s.spfAlignedPass,
      forwarded: s.forwarded,
      quarantine: s.quarantine,
      reject: s.reject,
      reports: 0,
      reporters: 0,
    });
  }
  // A report counts once per source IP, on the last day it covers, on the row of its first record
  // from that IP; the reporters of a row are those of every record in it.
  const firstOf = new Map<string, RecordRow & { id: number }>();
  for (const r of records) {
    const k = `${r.reportId}|${r.sourceIp}`;
    if (!firstOf.has(k)) firstOf.set(k, r);
    for (const [day] of sharesOf(r)) {
      const row = src.get([r.domain, day, r.sourceIp, (r.headerFrom ?? '').toLowerCase()].join('|'))!;
      row.reporters = Number(BigInt(row.reporters!) | (1n << BigInt(bits.get(`${r.domain}|${r.reporter}`)!)));
    }
  }
  for (const r of firstOf.values()) {
    const shares = sharesOf(r);
    const row = src.get([r.domain, shares[shares.length - 1]![0], r.sourceIp, (r.headerFrom ?? '').toLowerCase()].join('|'))!;
    row.reports = row.reports! + 1;
  }
  const dk: Table = new Map(
    dkim.map((d) => [[d.domain, d.day, d.sourceIp, d.signingDomain, d.selector, d.result].join('|'), { messages: d.messages }]),
  );
  // Per day and domain, the sums of the source rows (every column); per day, messages and passes.
  const domains: Table = new Map();
  const totals: Table = new Map();
  for (const s of sources) {
    const d = domains.get(`${s.day}|${s.domain}`) ?? { ...DOMAIN_ZERO };
    d.messages! += s.messages;
    d.dmarc_pass! += s.dmarcPass;
    d.dkim_aligned_pass! += s.dkimAlignedPass;
    d.spf_aligned_pass! += s.spfAlignedPass;
    d.forwarded! += s.forwarded;
    d.quarantine! += s.quarantine;
    d.reject! += s.reject;
    domains.set(`${s.day}|${s.domain}`, d);
    const t = totals.get(`${s.day}`) ?? { messages: 0, dmarc_pass: 0 };
    t.messages! += s.messages;
    t.dmarc_pass! += s.dmarcPass;
    totals.set(`${s.day}`, t);
  }
  const reports = db
    .prepare(
      `SELECT 'dmarc' AS kind, policy_domain AS domain, reporter, begin_ts AS begin, end_ts AS end FROM reports WHERE kind = 'dmarc'`,
    )
    .all() as { kind: 'dmarc'; domain: string; reporter: string; begin: number; end: number }[];
  const coverage: Table = new Map(
    rollupCoverage(reports).map((c) => [[c.domain, c.kind, c.day, c.reporter].join('|'), { reports: c.reports, last_end: c.lastEnd }]),
  );
  for (const c of rollupCoverage(reports)) {
    for (const t of [domains.get(`${c.day}|${c.domain}`), totals.get(`${c.day}`)]) if (t) t.reports = (t.reports ?? 0) + c.reports;
  }
  for (const t of [...domains.values(), ...totals.values()]) t.reports ??= 0;
  const policies = db
    .prepare(
      `SELECT r.policy_domain AS domain, r.reporter, r.begin_ts AS begin, r.end_ts AS end, p.p, p.sp, p.np, p.pct, p.adkim, p.aspf,
              r.record_count + coalesce(${EXTRA_SIGNATURES}, 0) AS reportRows
         FROM dmarc_policies p JOIN reports r ON r.id = p.report_id LEFT ${EXTRA_JOIN}`,
    )
    .all() as Parameters<typeof rollupPolicies>[0];
  const pol: Table = new Map(
    rollupPolicies(policies, maxRows).map((p) => [[p.domain, p.day, p.policy].join('|'), { weight: p.weight, reports: p.reports }]),
  );
  return { sources: src, dkim: dk, domains, totals, coverage, policies: pol };
}

function actual(db: Db): Record<string, Table> {
  return {
    sources: table(db, SOURCE_SQL, SOURCE_KEYS),
    dkim: table(db, DKIM_SQL, DKIM_KEYS),
    domains: table(db, `SELECT day, domain, ${Object.keys(DOMAIN_ZERO).join(', ')}, dmarc_reports AS reports FROM domain_daily`, [
      'day',
      'domain',
    ]),
    totals: table(db, `SELECT day, messages, dmarc_pass, dmarc_reports AS reports FROM daily_totals`, ['day']),
    coverage: table(db, `SELECT domain, kind, day, reporter, reports, last_end FROM report_daily`, ['domain', 'kind', 'day', 'reporter']),
    policies: table(db, `SELECT domain, day, policy, weight, reports FROM policy_daily`, ['domain', 'day', 'policy']),
  };
}

function assertRollups(db: Db, what: string, maxRows?: number): void {
  const want = expected(db, maxRows);
  const got = actual(db);
  for (const name of Object.keys(want)) assertClose(got[name]!, want[name]!, `${what}: ${name}`);
}

describe('daily rollups equal the pro-rata sums of the records', () => {
  for (const seed of [1, 2, 3]) {
    it(`seed ${seed}: 120 generated reports, 25 of them delivered twice, two past the write buffer (one from 6,000 sources)`, async () => {
      const rand = rng(seed);
      const { db, ingestor, file } = freshStore(undefined, undefined, { settle: false });
      const reports = Array.from({ length: 120 }, (_, n) =>
        reportXml(rand, seed * 1000 + n, n === 7 ? { records: 6000, manySources: true } : n === 9 ? { records: 5500 } : {}),
      );
      // Settled twice, half of the reports each time, as two runs of ingest would.
      let settled = 0;
      for (const [i, r] of reports.entries()) {
        const res = await ingestor.ingest(bufferInput(`r${i}.xml.gz`, gzip(r.xml)));
        assert.equal(res.leaves[0]!.status, 'stored', JSON.stringify(res.leaves));
        // The first half in batches of 5,000 records: the report of 6,000 alone in one.
        if (i === 59) settled += settleRollups(db, 5000);
        if (i === reports.length - 1) settled += settleRollups(db);
      }
      assert.equal(settled, 120);
      assert.equal(count(db, `SELECT COUNT(*) FROM rollup_pending`), 0);
      const before = actual(db);
      for (const i of Array.from({ length: 25 }, () => Math.floor(rand() * reports.length))) {
        const res = await ingestor.ingest(bufferInput(`again${i}.xml`, reports[i]!.xml));
        assert.equal(res.leaves[0]!.status, 'duplicate');
      }
      assert.equal(settleRollups(db), 0, 'a duplicate queues nothing');
      for (const name of Object.keys(before)) assert.deepEqual(actual(db)[name], before[name], `a duplicate adds nothing to ${name}`);
      assert.ok(count(db, `SELECT COUNT(*) FROM dmarc_daily WHERE source_ip LIKE '%:%'`) > 0, 'IPv6 sources');
      assert.ok(count(db, `SELECT COUNT(*) FROM dmarc_daily WHERE forwarded > 0`) > 0, 'forwarded mail');
      assert.ok(count(db, `SELECT COUNT(*) FROM dmarc_daily WHERE messages <> round(messages)`) > 0, 'shares of multi-day reports');
      assertRollups(db, 'written at ingest');

      // The migration's build from the records gives the same tables.
      const copy = path.join(tempDir(), 'copy.sqlite');
      db.prepare('VACUUM INTO ?').run(copy);
      db.close();
      const c = openDb(copy);
      c.transaction(() => {
        for (const t of [
          'dmarc_daily',
          'dkim_daily',
          'domain_daily',
          'daily_totals',
          'policy_daily',
          'report_daily',
          'tls_daily',
          'tls_failure_daily',
          'failure_daily',
        ]) {
          c.exec(`DELETE FROM ${t}`);
        }
        buildRollups(c);
      })();
      assertRollups(c, 'built by the migration');
      for (const [name, t] of Object.entries(actual(c))) assertClose(t, before[name]!, `migration vs ingest: ${name}`);
      c.close();
      void file;
    });
  }

  it('a report with an absurd range costs what a normal one does', () => {
    const db = openDb(path.join(tempDir(), 'p.sqlite'));
    const add =
      db.prepare(`INSERT INTO reports (kind, reporter, report_id, policy_domain, begin_ts, end_ts, raw_sha256, raw_size, input, ingested_at)
      VALUES ('dmarc', 'evil.example', ?, 'example.com', ?, ?, '', 0, 'x', 0)`);
    const rec = db.prepare(
      `INSERT INTO dmarc_records (report_id, source_ip, count, dkim_aligned, spf_aligned) VALUES (?, '192.0.2.1', 10, 'pass', 'fail')`,
    );
    const writer = new RollupWriter(db);
    const ranges: [number, number][] = [
      [0, 9007199254740991],
      [-62135596800, 253402300799],
      [1_700_000_000, 1_700_000_000 + 400 * DAY],
      [9007199254740991, 0],
    ];
    db.transaction(() => {
      ranges.forEach(([begin, end], i) => {
        const id = Number(add.run(`evil-${i}`, begin, end).lastInsertRowid);
        rec.run(id);
        writer.queue(id);
        writer.tls({
          domain: 'example.com',
          reporter: 'evil.example',
          begin,
          end,
          policies: [{ policyDomain: 'example.com', mxHosts: ['mx.example.com'], successful: 1e6, failed: 5, failures: [] }],
        });
      });
      assert.equal(writer.settle(), 4);
      assert.equal(writer.settle(), 0);
    })();
    // At most 32 days per report, each a printable date, and every message accounted for.
    assert.ok(count(db, `SELECT COUNT(*) FROM dmarc_daily`) <= 4 * 32);
    assert.ok(count(db, `SELECT COUNT(*) FROM tls_daily`) <= 4 * 32);
    assert.equal(count(db, `SELECT COUNT(*) FROM dmarc_daily WHERE date(day * 86400, 'unixepoch') IS NULL`), 0);
    assert.ok(Math.abs(count(db, `SELECT SUM(messages) FROM dmarc_daily`) - 40) < 1e-6);
    db.close();
  });

  it('a report whose records x days would pass the bound is shared out over its last days, as many as stay within it', () => {
    const begin = 1_700_000_000;
    const end = begin + 40 * DAY;
    const days = (shares: [number, number][]) => shares.map(([d]) => d);
    const sum = (shares: [number, number][]) => shares.reduce((a, [, x]) => a + x, 0);
    // Few records: the range's last 31 days (32 day numbers), as dayShares gives.
    assert.deepEqual(reportShares(begin, end, 50), dayShares(begin, end));
    assert.equal(dayShares(begin, end).length, 32);
    // 10,000 records: 100,000 rows (REPORT_SPREAD_ROWS), 10 days at most, the last ones; 100,000
    // records: twice their rows, 2 days.
    const some = reportShares(begin, end, 10_000);
    assert.ok(some.length <= 10 && some.length >= 9, `${some.length} days`);
    assert.equal(days(some).at(-1), countDay(begin, end));
    assert.ok(Math.abs(sum(some) - 1) < 1e-9);
    assert.equal(reportShares(begin, end, 100_000).length, 2);
    // A weekly report of 12,500 records is shared out over its 7 days (8 day numbers) as it stands.
    assert.deepEqual(reportShares(begin, begin + 7 * DAY, 12_500), dayShares(begin, begin + 7 * DAY));
    assert.equal(dayShares(begin, begin + 7 * DAY).length, 8);
    assert.equal(reportShares(begin, begin + 7 * DAY, 12_600).length, 7);
    // As many records as the limits let in: the last day alone, whatever the range.
    assert.deepEqual(reportShares(begin, end, 2_000_000), [[countDay(begin, end), 1]]);
    assert.deepEqual(reportShares(begin, begin + DAY, 2_000_000), [[countDay(begin, begin + DAY), 1]]);
    // A two-day report of a million records still makes two days (2,000,000 rows).
    assert.deepEqual(reportShares(begin, begin + DAY, 1_000_000), dayShares(begin, begin + DAY));
  });

  it('a settle holds each report to maxReportRows rollup rows, records and DKIM signatures, and the rollups still equal the recomputation', async () => {
    const { db, ingestor } = freshStore(undefined, undefined, { settle: false });
    const at = D0 * DAY + 3600;
    const report = (id: string, net: number, records: number, days: number) => {
      const rows = Array.from({ length: records }, (_, i) => record({ ip: `10.${net}.${i >> 8}.${i & 255}`, count: 3 }));
      return gzip(dmarcXml({ reportId: id, begin: at, end: at + days * DAY, records: rows }));
    };
    for (const [id, net, records, days] of [
      ['wide', 1, 100, 30],
      ['narrow', 2, 30, 5],
      ['few', 3, 2, 30],
    ] as const) {
      const res = await ingestor.ingest(bufferInput(`${id}.xml.gz`, report(id, net, records, days)));
      assert.equal(res.leaves[0]!.status, 'stored', JSON.stringify(res.leaves));
    }
    // Five records of 99 DKIM signatures each: 495 dkim_daily rows a day.
    const sigs = Array.from({ length: 98 }, (_, i) => `<dkim><domain>d${i}.example</domain><result>fail</result></dkim>`).join('');
    const signed = Array.from({ length: 5 }, (_, i) => record({ ip: `10.4.0.${i}`, count: 3, extra: sigs }));
    const res = await ingestor.ingest(
      bufferInput('signed.xml', dmarcXml({ reportId: 'signed', begin: at, end: at + 30 * DAY, records: signed })),
    );
    assert.equal(res.leaves[0]!.status, 'stored', JSON.stringify(res.leaves));
    const writer = new RollupWriter(db, { maxReportRows: 1000 });
    while (db.transaction(() => writer.settle()).immediate() > 0);
    const daysOf = (id: string) =>
      count(
        db,
        `SELECT COUNT(DISTINCT s.day) FROM dmarc_daily s JOIN dmarc_records d ON d.source_ip = s.source_ip
           JOIN reports r ON r.id = d.report_id AND r.report_id = ?`,
        id,
      );
    // 100 records x 31 days would be 3,100 rows: at most 10 days; 30 x 6 = 180 rows and 2 x 31
    // pass as they are (each report's sources in a network of its own).
    assert.ok(daysOf('wide') <= 10 && daysOf('wide') >= 9, `${daysOf('wide')} days`);
    assert.equal(daysOf('narrow'), 6);
    assert.equal(daysOf('few'), 31);
    assert.ok(count(db, `SELECT COUNT(*) FROM dmarc_daily`) <= 1000 + 180 + 62 + 10);
    // 495 rows a day fit twice in 1,000: the signed report's last day or two, not 31.
    assert.ok(daysOf('signed') <= 2, `${daysOf('signed')} days`);
    assert.ok(count(db, `SELECT COUNT(*) FROM dkim_daily WHERE source_ip LIKE '10.4.%'`) <= 1000);
    assert.ok(Math.abs(count(db, `SELECT SUM(messages) FROM dmarc_daily`) - 3 * 137) < 1e-6, 'every message counted');
    assertRollups(db, 'bounded', 1000);
    db.close();
  });

  it('the policy rollup spells out the defaults', () => {
    assert.equal(
      policyKey(effectivePolicy({ p: 'reject', sp: null, np: null, pct: null, adkim: null, aspf: null })),
      'p=reject; sp=reject; pct=100; adkim=r; aspf=r',
    );
  });
});

describe('TLS rollups of a policy naming many MX hosts', () => {
  it('share successes over at most MAX_POLICY_HOSTS hosts: a policy listing 100,000 makes one row a day, not 100,000', () => {
    const row = (hosts: number) => ({
      domain: 'example.com',
      reporter: 'r',
      begin: 20_000 * DAY,
      end: 20_001 * DAY - 1,
      policyType: 'sts',
      mxHosts: Array.from({ length: hosts }, (_, i) => `mx${i}.example.com`),
      successful: 1000,
      failed: 0,
      failures: [],
    });
    assert.equal(rollupTls([row(MAX_POLICY_HOSTS)]).tls.length, MAX_POLICY_HOSTS);
    const many = rollupTls([row(100_000)]).tls;
    assert.deepEqual(many, [{ domain: 'example.com', day: 20_000, mx: '*', successful: 1000, failed: 0 }]);
  });
});

describe('TLS rollups of a report of very many policies', () => {
  // A report over 31 days of `n` policies, each of its own domain with 32 MX hosts and a failure.
  const report = (n: number): TlsRow[] =>
    Array.from({ length: n }, (_, p) => ({
      domain: `d${p}.example`,
      reporter: 'evil.example',
      begin: 20_000 * DAY,
      end: 20_031 * DAY - 1,
      policyType: 'sts',
      mxHosts: Array.from({ length: 32 }, (_, i) => `mx${i}.d${p}.example`),
      successful: 10,
      failed: 1,
      failures: [{ resultType: 'certificate-expired', mx: `mx0.d${p}.example`, sessions: 1 }],
    }));
  const rowsOf = (r: ReturnType<typeof rollupTls>) => r.tls.length + r.tlsFailures.length;
  const sum = (r: ReturnType<typeof rollupTls>, k: 'successful' | 'failed') => r.tls.reduce((a, t) => a + t[k], 0);

  it('a report of a few policies is rolled up as it stands', () => {
    const rows = report(3);
    assert.deepEqual(rollupTls(boundTlsReport(rows)), rollupTls(rows));
    assert.equal(rollupTls(rows).tls.length, 3 * 32 * 31);
  });

  it(`makes at most MAX_TLS_REPORT_ROWS rows, every session counted: over fewer days, then successes to '*'`, () => {
    // 2,000 policies x 32 hosts x 31 days made 2 million rows (a 122 KB gzip), 815 MiB in memory:
    // not rolled up unbounded here.
    const fewer = rollupTls(boundTlsReport(report(2000)));
    assert.ok(rowsOf(fewer) <= MAX_TLS_REPORT_ROWS, `${rowsOf(fewer)} rows`);
    assert.deepEqual(new Set(fewer.tls.map((t) => t.day)), new Set([countDay(20_000 * DAY, 20_031 * DAY - 1)]));
    assert.ok(Math.abs(sum(fewer, 'successful') - 20_000) < 1e-6 && Math.abs(sum(fewer, 'failed') - 2000) < 1e-6);
    // 4,000 policies of 32 hosts would be 136,000 rows on one day: successes go to '*'.
    const starred = rollupTls(boundTlsReport(report(4000)));
    assert.ok(rowsOf(starred) <= MAX_TLS_REPORT_ROWS, `${rowsOf(starred)} rows`);
    assert.ok(starred.tls.every((t) => t.mx === '*' || t.successful === 0));
    assert.ok(Math.abs(sum(starred, 'successful') - 40_000) < 1e-6 && Math.abs(sum(starred, 'failed') - 4000) < 1e-6);
  });

  it('the writer bounds what a stored report adds', async () => {
    const { db, ingestor } = freshStore();
    const policies = report(2000).map((r) => ({
      policy: { 'policy-type': 'sts', 'policy-string': [], 'policy-domain': r.domain, 'mx-host': r.mxHosts },
      summary: { 'total-successful-session-count': 10, 'total-failure-session-count': 1 },
      'failure-details': [{ 'result-type': 'certificate-expired', 'receiving-mx-hostname': r.mxHosts[0], 'failed-session-count': 1 }],
    }));
    const json = JSON.stringify({
      'organization-name': 'evil.example',
      'date-range': { 'start-datetime': '2024-10-01T00:00:00Z', 'end-datetime': '2024-10-31T23:59:59Z' },
      'contact-info': 'tlsrpt@evil.example',
      'report-id': 'many-policies',
      policies,
    });
    const res = await ingestor.ingest(bufferInput('many.json.gz', gzip(json)));
    assert.equal(res.leaves[0]!.status, 'stored', JSON.stringify(res.leaves));
    const rows = count(db, `SELECT (SELECT COUNT(*) FROM tls_daily) + (SELECT COUNT(*) FROM tls_failure_daily)`);
    assert.ok(rows <= MAX_TLS_REPORT_ROWS, `${rows} rows`);
    assert.equal(count(db, `SELECT SUM(successful) FROM tls_daily`), 20_000);
    assert.equal(count(db, `SELECT SUM(failed) FROM tls_daily`), 2000);
    db.close();
  });
});

describe('what the reports of one input may spread over days together (INPUT_SPREAD_ROWS)', () => {
  // 31 UTC days from midnight to 23:59:59, as most reporters' ranges are: 31 day numbers. A share of
  // its last n days' seconds begins a second before midnight, on one more day number.
  const begin = 19_676 * DAY;
  const end = begin + 31 * DAY - 1;

  it('a report of an input that used up INPUT_SPREAD_ROWS makes twice its rows of a day, and a daily report stays exact', () => {
    assert.equal(inputSpread(0), REPORT_SPREAD_ROWS);
    assert.equal(inputSpread(INPUT_SPREAD_ROWS - 31_250), 31_250);
    assert.equal(inputSpread(INPUT_SPREAD_ROWS + 1), 0);
    assert.equal(reportShares(begin, end, 3125).length, 31);
    assert.equal(reportShares(begin, end, 3125, undefined, 31_250).length, 10);
    const spent = reportShares(begin, end, 3125, undefined, 0);
    assert.equal(spent.length, 2);
    assert.equal(spent.at(-1)![0], countDay(begin, end), 'its last days');
    // A report of a UTC day, or of a day across two, is shared out as it stands whatever the input.
    for (const [b, e] of [
      [begin, begin + DAY - 1],
      [begin + 36_000, begin + DAY + 36_000],
    ]) {
      assert.deepEqual(reportShares(b!, e!, 40_000, undefined, 0), dayShares(b!, e!));
    }
  });

  const many = (n: number, id: string) =>
    dmarcXml({
      reportId: id,
      begin,
      end,
      records: Array.from({ length: n }, (_, i) => record({ ip: `10.${i >> 16}.${(i >> 8) & 255}.${i & 255}`, count: 1 })),
    });

  it('a zip of 12 reports of 3,125 records over 31 days: ten spread in full, the 11th over what is left, the 12th over its last day', async () => {
    const { db, ingestor } = freshStore(undefined, undefined, { settle: false });
    const entries = Object.fromEntries(Array.from({ length: 12 }, (_, n) => [`r${n}.xml`, many(3125, `z${n}`)]));
    const res = await ingestor.ingest(bufferInput('many.zip', zip(entries)));
    assert.deepEqual(
      res.leaves.map((l) => l.status),
      new Array(12).fill('stored'),
    );
    const spread = db.prepare(`SELECT spread_rows FROM rollup_pending ORDER BY report_id`).pluck().all();
    // 10 x 96,875 rows; 31,250 left: 10 day numbers; none left: twice its rows of a day, its last day's seconds.
    assert.deepEqual(spread, [...new Array(10).fill(REPORT_SPREAD_ROWS), 31_250, 0]);
    // The same reports as files of their own: each its own input, each spread in full.
    const other = freshStore(undefined, undefined, { settle: false });
    for (const [name, xml] of Object.entries(entries)) await other.ingestor.ingest(bufferInput(name, xml));
    assert.deepEqual(other.db.prepare(`SELECT DISTINCT spread_rows FROM rollup_pending`).pluck().all(), [REPORT_SPREAD_ROWS]);
    other.db.close();
    db.close();
  });

  it('a settle shares a report out as its input allowed, counting every message, and equals the recomputation', () => {
    const db = openDb(path.join(tempDir(), 's.sqlite'));
    const store = new ReportStore(db);
    const spreads: number[] = [];
    for (const [n, used] of [0, INPUT_SPREAD_ROWS - 500, INPUT_SPREAD_ROWS].entries()) {
      const budget = { rollupRows: used };
      const h = {
        kind: 'dmarc' as const,
        reporter: `r${n}.example`,
        reportId: `s${n}`,
        policyDomain: 'example.org',
        begin,
        end,
        schema: '1.0' as const,
        version: null,
        generator: null,
        extraContactInfo: null,
        reporterEmail: null,
        errors: [],
        policy: {
          domain: 'example.org',
          adkim: null,
          aspf: null,
          p: 'none',
          sp: null,
          np: null,
          pct: null,
          fo: null,
          testing: null,
          discoveryMethod: null,
        },
      };
      const w = store.beginDmarc(h, `input${n}`, budget)!;
      for (let i = 0; i < 50; i++) {
        w.record({
          sourceIp: `192.0.2.${i}`,
          count: 2,
          disposition: 'none',
          dkim: 'pass',
          spf: 'fail',
          reasons: [],
          headerFrom: 'example.org',
          envelopeFrom: null,
          envelopeTo: null,
          dkimResults: [{ domain: 'example.org', selector: 's1', result: 'pass', humanResult: null }],
          spfResults: [],
        });
      }
      assert.ok(w.commit('0'.repeat(64), 1));
      spreads.push(budget.rollupRows - used);
    }
    // 50 rows a day: 31 days in full, 10 of the 500 left, then its last day's seconds (2 day numbers).
    assert.deepEqual(spreads, [50 * 31, 50 * 10, 50 * 2]);
    store.settle();
    const days = db
      .prepare(
        `SELECT r.reporter, COUNT(DISTINCT d.day) FROM dmarc_daily d JOIN domain_reporters r ON d.reporters & (1 << r.bit) <> 0 GROUP BY 1 ORDER BY 1`,
      )
      .raw()
      .all();
    assert.deepEqual(days, [
      ['r0.example', 31],
      ['r1.example', 10],
      ['r2.example', 2],
    ]);
    assert.ok(Math.abs(count(db, `SELECT SUM(messages) FROM dmarc_daily`) - 3 * 100) < 1e-9, 'every message counted');
    // The reference recomputation, given each report's spread as its input left it.
    const spreadOf = (reporter: string) => [undefined, 500, 0][Number(reporter.slice(1, 2))];
    const raw = rawRecords(db).map((r) => ({ ...r, spreadRows: spreadOf(r.reporter) }));
    const { sources, dkim } = rollupRecords(raw);
    const want = (rows: object[], keys: string[], values: Record<string, string>): Table =>
      new Map(
        rows.map((r) => {
          const x = r as Record<string, string | number>;
          return [keys.map((k) => String(x[k])).join('|'), Object.fromEntries(Object.entries(values).map(([c, k]) => [c, Number(x[k])]))];
        }),
      );
    assertClose(
      table(db, `SELECT domain, day, source_ip, messages, dmarc_pass, dkim_aligned_pass FROM dmarc_daily`, ['domain', 'day', 'source_ip']),
      want(sources, ['domain', 'day', 'sourceIp'], { messages: 'messages', dmarc_pass: 'dmarcPass', dkim_aligned_pass: 'dkimAlignedPass' }),
      'dmarc_daily',
    );
    assertClose(
      table(db, `SELECT domain, day, source_ip, selector, messages FROM dkim_daily`, ['domain', 'day', 'source_ip', 'selector']),
      want(dkim, ['domain', 'day', 'sourceIp', 'selector'], { messages: 'messages' }),
      'dkim_daily',
    );
    const policies = (
      db
        .prepare(
          `SELECT r.policy_domain AS domain, r.reporter, r.begin_ts AS begin, r.end_ts AS end, p.p, p.sp, p.np, p.pct, p.adkim, p.aspf,
                  r.record_count AS reportRows FROM dmarc_policies p JOIN reports r ON r.id = p.report_id`,
        )
        .all() as Parameters<typeof rollupPolicies>[0]
    ).map((p) => ({ ...p, spreadRows: spreadOf(p.reporter) }));
    assertClose(
      table(db, `SELECT domain, day, policy, weight, reports FROM policy_daily`, ['domain', 'day', 'policy']),
      want(rollupPolicies(policies), ['domain', 'day', 'policy'], { weight: 'weight', reports: 'reports' }),
      'policy_daily',
    );
    db.close();
  });

  it('a TLS report takes its rows from the same share of its input', () => {
    const db = openDb(path.join(tempDir(), 't.sqlite'));
    const writer = new RollupWriter(db);
    const report = (n: number) => ({
      domain: 'example.org',
      reporter: `t${n}.example`,
      begin,
      end,
      policies: [{ policyDomain: 'example.org', mxHosts: ['mx.example.org'], successful: 310, failed: 31, failures: [] }],
    });
    const full = { rollupRows: 0 };
    const spent = { rollupRows: INPUT_SPREAD_ROWS };
    db.transaction(() => {
      writer.tls(report(0), full);
      writer.tls(report(1), spent);
    })();
    // A policy of one MX makes 3 rows a day (its MX, and its unspecified failures per MX and type).
    assert.equal(full.rollupRows, 3 * 31);
    assert.equal(spent.rollupRows - INPUT_SPREAD_ROWS, 3 * 2);
    assert.deepEqual(db.prepare(`SELECT reporter, COUNT(DISTINCT day) FROM tls_failure_daily GROUP BY 1 ORDER BY 1`).raw().all(), [
      ['t0.example', 31],
      ['t1.example', 2],
    ]);
    assert.equal(count(db, `SELECT SUM(successful) FROM tls_daily`), 620);
    db.close();
  });
});

describe('reports queued for the rollups (rollup_pending)', () => {
  const day = 20_000;
  const report = (n: number, records: number, domain = 'example.com') =>
    dmarcXml({
      reportId: `q-${n}`,
      domain,
      begin: (day + n) * DAY,
      end: (day + n + 1) * DAY - 1,
      records: Array.from({ length: records }, (_, i) => record({ ip: `10.0.${i >> 8}.${i & 255}`, count: 2, dkim: 'pass' })),
    });
  const pending = (db: Db) => count(db, `SELECT COUNT(*) FROM rollup_pending`);
  const rolledUp = (db: Db) => count(db, `SELECT coalesce(SUM(messages), 0) FROM dmarc_daily`);

  it('a long ingest settles as it goes, every settleEvery records, in batches of as many', async () => {
    const file = path.join(tempDir(), 'q.sqlite');
    const db = openDb(file);
    const ingestor = new Ingestor(new ReportStore(db, noLock, 1000), defaultLimits, createLogger('silent'));
    const queued: number[] = [];
    for (let n = 0; n < 10; n++) {
      assert.equal((await ingestor.ingest(bufferInput(`q${n}.xml`, report(n, 300)))).leaves[0]!.status, 'stored');
      queued.push(pending(db));
    }
    // Settled after the 4th report (1,200 records) and the 8th (2,400): never more than 4 queued.
    assert.deepEqual(queued, [1, 2, 3, 0, 1, 2, 3, 0, 1, 2]);
    assert.equal(rolledUp(db), 8 * 300 * 2);
    assert.equal(count(db, `SELECT SUM(dmarc_reports) FROM domain_daily`), 8, 'a queued report is in no rollup at all');
    assert.equal(new ReportStore(db).settle(), 2);
    assert.equal(rolledUp(db), 10 * 300 * 2);
    db.close();
  });

  it('what a run cut short left queued is settled by the next alert evaluation; a dry run judges without it and writes nothing', async () => {
    const { db, ingestor } = freshStore(undefined, undefined, { settle: false });
    for (let n = 0; n < 3; n++) await ingestor.ingest(bufferInput(`q${n}.xml`, report(n, 20)));
    assert.equal(pending(db), 3);
    const config = configSchema.parse({ analysis: { reverse_dns: false } });
    const opts = { now: (day + 4) * DAY, channels: [], lookup: null, log: createLogger('silent') };
    await runAlerts(db, config, { ...opts, dryRun: true });
    assert.equal(pending(db), 3);
    assert.equal(rolledUp(db), 0);
    await runAlerts(db, config, { ...opts, dryRun: false });
    assert.equal(pending(db), 0);
    assert.equal(rolledUp(db), 3 * 20 * 2);
    db.close();
  });

  it('ruawatch report, which only reads, says how many stored reports its totals leave out while they wait', async () => {
    const { db, file, ingestor } = freshStore(undefined, undefined, { settle: false });
    await ingestor.ingest(bufferInput('q0.xml', report(0, 20)));
    const before = await runCli(['report', '--db', file, '--json']);
    assert.equal(before.code, 0, before.stderr);
    assert.match(before.stderr, /1 aggregate report stored but not yet in these totals/);
    assert.equal(pending(db), 1, 'report writes nothing');
    settleRollups(db);
    const after = await runCli(['report', '--db', file, '--json']);
    assert.equal(after.stderr, '');
    assert.equal((JSON.parse(after.stdout) as { domains: { messages: number }[] }).domains[0]!.messages, 40);
    db.close();
  });

  it('the dashboard sees reports once they are settled, though no report was added in between', async () => {
    const { db, ingestor } = freshStore(undefined, undefined, { settle: false });
    await ingestor.ingest(bufferInput('q0.xml', report(0, 20)));
    const seen = () => overview(db, { now: (day + 2) * DAY, days: 7, recentDays: 7 }).sources.length;
    assert.equal(seen(), 0);
    settleRollups(db);
    assert.equal(seen(), 20);
    db.close();
  });

  it('retention that cannot add a queued report to the rollups keeps its records, prunes the rest and says why', async () => {
    const { db, ingestor } = freshStore(undefined, undefined, { settle: false });
    await ingestor.ingest(bufferInput('q0.xml', report(0, 20)));
    settleRollups(db);
    await ingestor.ingest(bufferInput('q1.xml', report(1, 20)));
    // Any write to dmarc_daily fails from now on, as on a full disk.
    db.exec(`CREATE TRIGGER no_room BEFORE INSERT ON dmarc_daily BEGIN SELECT RAISE(ABORT, 'no room'); END`);
    const result = prune(db, { recordsDays: 30, failureReportsDays: 30 }, (day + 400) * DAY, false);
    assert.equal(result.settle_error, 'no room');
    assert.equal(result.dmarc_records, 20, 'the settled report pruned');
    assert.equal(count(db, `SELECT COUNT(*) FROM dmarc_records`), 20, 'the queued one kept whole');
    assert.equal(pending(db), 1);
    db.exec(`DROP TRIGGER no_room`);
    assert.equal(settleRollups(db), 1);
    assert.equal(rolledUp(db), 2 * 20 * 2);
    db.close();
  });

  it(
    'a report of 20,000 records settles without its flags in the sort: what is written stays the size of the rows',
    { skip: !fs.existsSync('/proc/self/io') && 'needs /proc/self/io (Linux)' },
    async () => {
      const { db, ingestor } = freshStore(undefined, undefined, { settle: false });
      await ingestor.ingest(bufferInput('big.xml', report(0, 20_000)));
      assert.equal(count(db, `SELECT length(firsts) FROM rollup_pending`), 20_000, 'its first records noted');
      // Bytes this process has written (Linux): the WAL and any temporary files of the sorts.
      const written = () => Number(/^wchar: (\d+)$/m.exec(fs.readFileSync('/proc/self/io', 'utf8'))![1]);
      const before = written();
      settleRollups(db);
      const bytes = written() - before;
      // The rows are a few MB; with the flags carried by the sort, 20,000 x 20,000 bytes.
      assert.ok(bytes < 50e6, `${bytes.toLocaleString('en-US')} bytes written`);
      assert.equal(rolledUp(db), 20_000 * 2);
      db.close();
    },
  );

  it('retention settles before it deletes records, so a queued report keeps its place in the history', async () => {
    const { db, ingestor } = freshStore(undefined, undefined, { settle: false });
    await ingestor.ingest(bufferInput('q0.xml', report(0, 20)));
    const result = prune(db, { recordsDays: 30, failureReportsDays: 30 }, (day + 400) * DAY, false);
    assert.equal(result.dmarc_records, 20);
    assert.equal(pending(db), 0);
    assert.equal(rolledUp(db), 20 * 2);
    db.close();
  });
});
