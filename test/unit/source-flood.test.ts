import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { DAY, type AnalysisInput, type Finding, type OpenAlert } from '../../src/analyse/index.js';
import { configSchema } from '../../src/config/schema.js';
import { settingsOf } from '../../src/pipeline/alerts.js';
import { evaluateRules, type EvaluateOptions } from '../../src/store/analysis.js';
import type { Db } from '../../src/store/db.js';
import { freshStore } from '../helpers/common.js';
import { D0, scenarioWith } from '../helpers/scenario.js';

/**
 * The five-week scenario of alerts.test.ts, and for the same domain 3,000 more sources, each
 * failing DMARC with 100 messages over the last two days: enough for new_failing_source to judge
 * every one of them. A stranger's reports can name any number of such sources (120,000 in two
 * 540 KB gzips had `alerts` peak at 762 MiB when a large domain's judgeable sources were all held
 * one by one). The flood goes into the rollups by SQL, rows as ingest writes them.
 */
const SOURCES = 3000;

function flood(db: Db): void {
  db.exec(`
    CREATE TEMP TABLE src AS WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < ${SOURCES - 1})
      SELECT i, printf('10.8.%d.%d', i >> 8 & 255, i & 255) AS ip FROM n;
    INSERT INTO dmarc_daily (domain, day, source_ip, header_from, messages, dmarc_pass, dkim_aligned_pass, spf_aligned_pass,
        forwarded, quarantine, reject, reports, reporters)
      SELECT 'example.com', day, ip, 'example.com', 50, 0, 0, 0, 0, 0, 0, 1, 1
      FROM src, (SELECT ${D0 + 33} AS day UNION ALL SELECT ${D0 + 34});`);
}

describe('a domain with 3,000 new sources failing DMARC, each enough to be judged', () => {
  const scenario = scenarioWith(flood);

  function evaluate(opts: EvaluateOptions): { findings: Finding[]; sources: number } {
    let sources = 0;
    const prepare = (input: AnalysisInput) => {
      sources = Math.max(sources, new Set(input.sources.filter((r) => r.domain === 'example.com').map((r) => r.sourceIp)).size);
    };
    return { findings: scenario.evaluate({ ...opts, prepare }), sources };
  }

  it('holds at most maxHeldSources of them one by one, and the finding counts the others as holding all does', () => {
    const whole = evaluate({ maxSourceRows: Infinity });
    const run = (r: { findings: Finding[] }) => r.findings.find((f) => f.key === 'new_failing_source:example.com');
    const keys = (r: { findings: Finding[] }) => r.findings.map((f) => `${f.key} ${f.severity}`);
    assert.ok(whole.sources > SOURCES, `whole: ${whole.sources} sources`);
    const all = Number(run(whole)!.details.sources);
    assert.ok(all > SOURCES, `${all} new failing sources`);
    assert.equal(run(whole)!.details.sources_not_judged, undefined);
    // 500 held, and 4 (the domain's three known senders and, of the new ones, the spoofer, whose
    // mail fails most; none of the 3,000): the same findings, every new failing source counted
    // with its mail, those summed said so.
    for (const cap of [500, 4]) {
      const bounded = evaluate({ maxSourceRows: 2000, maxHeldSources: cap });
      assert.ok(bounded.sources <= cap + 1, `bounded: ${bounded.sources} sources`);
      assert.deepEqual(keys(bounded), keys(whole));
      const r = run(bounded)!;
      assert.equal(r.details.sources, all);
      assert.equal(r.details.recent_messages, run(whole)!.details.recent_messages);
      assert.equal(r.details.rejected, run(whole)!.details.rejected);
      const notJudged = Number(r.details.sources_not_judged);
      assert.ok(notJudged >= all - cap && notJudged <= all, `${notJudged} not judged of ${all}`);
      assert.match(
        r.summary,
        new RegExp(`; ${notJudged.toLocaleString('en-US')} of them judged from their sums, more sources than are judged one by one$`),
      );
    }
  });

  it('while the run is open as one finding, sources too small to open one carry it, held or summed', () => {
    // 400 more sources failing with 5 messages each yesterday: fewer than new_source_min_messages.
    scenario.db().exec(`
      INSERT INTO dmarc_daily (domain, day, source_ip, header_from, messages, dmarc_pass, dkim_aligned_pass, spf_aligned_pass,
          forwarded, quarantine, reject, reports, reporters)
        SELECT 'example.com', ${D0 + 34}, printf('10.5.%d.%d', i >> 8 & 255, i & 255), 'example.com', 5, 0, 0, 0, 0, 0, 0, 1, 1
        FROM (WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 399) SELECT i FROM n);`);
    const open = new Map<string, OpenAlert>([
      [
        'new_failing_source:example.com',
        { key: 'new_failing_source:example.com', domain: 'example.com', severity: 'critical', firstSeen: (D0 + 33) * DAY, baseline: {} },
      ],
    ]);
    const run = (r: { findings: Finding[] }) => r.findings.find((f) => f.key === 'new_failing_source:example.com')!;
    const whole = evaluate({ maxSourceRows: Infinity, open });
    const bounded = evaluate({ maxSourceRows: 2000, maxHeldSources: 4, open });
    assert.ok(Number(run(whole).details.sources) > SOURCES + 400, JSON.stringify(run(whole).details));
    assert.equal(run(bounded).details.sources, run(whole).details.sources);
    assert.equal(run(bounded).details.recent_messages, run(whole).details.recent_messages);
    assert.deepEqual(
      bounded.findings.map((f) => `${f.key} ${f.severity}`),
      whole.findings.map((f) => `${f.key} ${f.severity}`),
    );
  });
});

/**
 * The same scenario, and 3,000 more sources sending 50 messages a day that pass DMARC, known from
 * the baseline: more sources to judge than are held, none of them new.
 */
function passingFlood(db: Db): void {
  db.exec(`
    CREATE TEMP TABLE good AS WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < ${SOURCES - 1})
      SELECT i, printf('10.6.%d.%d', i >> 8 & 255, i & 255) AS ip FROM n;
    INSERT INTO dmarc_daily (domain, day, source_ip, header_from, messages, dmarc_pass, dkim_aligned_pass, spf_aligned_pass,
        forwarded, quarantine, reject, reports, reporters)
      SELECT 'example.com', day, ip, 'example.com', 50, 50, 50, 50, 0, 0, 0, 1, 1
      FROM good, (SELECT ${D0 + 10} AS day UNION ALL SELECT ${D0 + 20} UNION ALL SELECT ${D0 + 33} UNION ALL SELECT ${D0 + 34});`);
}

describe('a domain with 3,000 more known sources passing DMARC, each enough to be judged', () => {
  const scenario = scenarioWith(passingFlood);

  it("holds 500 of them, and the scenario's new failing source is still judged one by one", () => {
    const keys = (opts: EvaluateOptions) => scenario.evaluate(opts).map((f) => `${f.key} ${f.severity} ${f.summary}`);
    const whole = keys({ maxSourceRows: Infinity });
    assert.ok(
      whole.some((k) => k.startsWith('new_failing_source:example.com:203.0.113.66 ')),
      whole.join('\n'),
    );
    assert.deepEqual(keys({ maxSourceRows: 2000, maxHeldSources: 500 }), whole);
  });
});

/**
 * The same scenario, and 3,000 new sources that a stranger's reports say sent 100,000 messages each
 * over the last two days, all passing: far more mail than any of the domain's own senders. Held
 * by mail alone, they would take every place and leave the domain's own sources to the sums.
 */
function loudFlood(db: Db): void {
  db.exec(`
    CREATE TEMP TABLE loud AS WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < ${SOURCES - 1})
      SELECT i, printf('10.9.%d.%d', i >> 8 & 255, i & 255) AS ip FROM n;
    INSERT INTO dmarc_daily (domain, day, source_ip, header_from, messages, dmarc_pass, dkim_aligned_pass, spf_aligned_pass,
        forwarded, quarantine, reject, reports, reporters)
      SELECT 'example.com', day, ip, 'example.com', 50000, 50000, 50000, 50000, 0, 0, 0, 1, 1
      FROM loud, (SELECT ${D0 + 33} AS day UNION ALL SELECT ${D0 + 34});`);
}

describe('a domain with 3,000 new sources claiming more mail than its own senders', () => {
  const scenario = scenarioWith(loudFlood);

  it("holds the domain's known sources first: their findings are those of holding every source", () => {
    let held: string[] = [];
    const keys = (opts: EvaluateOptions) =>
      scenario
        .evaluate({
          ...opts,
          prepare: (input) => {
            held = [...new Set(input.sources.filter((r) => r.domain === 'example.com').map((r) => r.sourceIp))];
          },
        })
        .map((f) => `${f.key} ${f.severity} ${f.summary}`);
    const whole = keys({ maxSourceRows: Infinity });
    // The newsletter provider's broken selector, judged on the source that sends with it.
    assert.ok(
      whole.some((k) => k.startsWith('dkim_selector_broken:example.com:')),
      whole.join('\n'),
    );
    // Four held: the three known sources (the domain's own server, the newsletter provider, the
    // forwarder), then of the new ones the spoofer, whose mail fails, before any of the loud ones.
    assert.deepEqual(keys({ maxSourceRows: 2000, maxHeldSources: 4 }), whole);
    assert.deepEqual(held.sort(), ['192.0.2.10', '192.0.2.200', '198.51.100.20', '203.0.113.66']);
  });
});

/**
 * No attacker: a large domain with 4,500 senders of its own, each passing 50 messages on two
 * baseline days and on the last two days, and 1,500 IPs new this week passing 15 messages a day
 * each (a provider's new outbound pool, forwarders, list servers: ordinary churn). One more sender
 * of its own, 10.7.200.1, passed 50 messages on two baseline days and now fails all its 60. At the
 * real cap of 5,000 the new passing sources must not take places from the known ones: no rule can
 * judge a new source that passes.
 */
function churn(db: Db): void {
  const days = (list: number[]) => list.map((d) => `SELECT ${D0 + d} AS day`).join(' UNION ALL ');
  const pool = (prefix: string, count: number) =>
    `(WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < ${count - 1})
      SELECT printf('${prefix}.%d.%d', i >> 8 & 255, i & 255) AS ip FROM n)`;
  db.exec(`
    INSERT INTO dmarc_daily (domain, day, source_ip, header_from, messages, dmarc_pass, dkim_aligned_pass, spf_aligned_pass,
        forwarded, quarantine, reject, reports, reporters)
      SELECT 'example.com', day, ip, 'example.com', 50, 50, 50, 50, 0, 0, 0, 1, 1 FROM ${pool('10.6', 4500)}, (${days([10, 20, 33, 34])});
    INSERT INTO dmarc_daily (domain, day, source_ip, header_from, messages, dmarc_pass, dkim_aligned_pass, spf_aligned_pass,
        forwarded, quarantine, reject, reports, reporters)
      SELECT 'example.com', day, ip, 'example.com', 15, 15, 15, 15, 0, 0, 0, 1, 1 FROM ${pool('10.9', 1500)}, (${days([33, 34])});
    INSERT INTO dmarc_daily (domain, day, source_ip, header_from, messages, dmarc_pass, dkim_aligned_pass, spf_aligned_pass,
        forwarded, quarantine, reject, reports, reporters)
      SELECT 'example.com', day, '10.7.200.1', 'example.com', CASE WHEN day < ${D0 + 30} THEN 50 ELSE 30 END,
             CASE WHEN day < ${D0 + 30} THEN 50 ELSE 0 END, CASE WHEN day < ${D0 + 30} THEN 50 ELSE 0 END,
             CASE WHEN day < ${D0 + 30} THEN 50 ELSE 0 END, 0, 0, 0, 1, 1 FROM (${days([10, 20, 33, 34])});`);
}

describe('a domain with 4,500 senders of its own and 1,500 new ones that pass, at the real cap', () => {
  const scenario = scenarioWith(churn);

  it("judges a known sender's drop one by one, as when every source is held", () => {
    const keys = (opts: EvaluateOptions) => scenario.evaluate(opts).map((f) => `${f.key} ${f.severity} ${f.summary}`);
    const whole = keys({ maxSourceRows: Infinity });
    assert.ok(
      whole.some((k) => k.startsWith('pass_rate_drop:example.com:10.7.200.1 ')),
      whole.join('\n'),
    );
    // maxHeldSources left at MAX_HELD_SOURCES.
    assert.deepEqual(keys({ maxSourceRows: 2000 }), whole);
  });
});

/**
 * The same scenario, and 3,000 more sources of one message each whose DKIM signature
 * forged.example/x passed in the baseline and fails over the last two days: each too small to be
 * held, but dkim_selector_broken judges a selector on every source it passed for.
 */
function signatureFlood(db: Db): void {
  db.exec(`
    CREATE TEMP TABLE sig AS WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < ${SOURCES - 1})
      SELECT i, printf('10.7.%d.%d', i >> 8 & 255, i & 255) AS ip FROM n;
    CREATE TEMP TABLE sigdays AS SELECT ${D0 + 10} AS day, 1 AS base UNION ALL SELECT ${D0 + 33}, 0 UNION ALL SELECT ${D0 + 34}, 0;
    INSERT INTO dmarc_daily (domain, day, source_ip, header_from, messages, dmarc_pass, dkim_aligned_pass, spf_aligned_pass,
        forwarded, quarantine, reject, reports, reporters)
      SELECT 'example.com', day, ip, 'example.com', 1, base, base, 0, 0, 0, 0, 1, 1 FROM sig, sigdays;
    INSERT INTO dkim_daily (domain, day, source_ip, signing_domain, selector, result, messages)
      SELECT 'example.com', day, ip, 'forged.example', 'x', CASE WHEN base THEN 'pass' ELSE 'fail' END, 1 FROM sig, sigdays;`);
}

describe('a domain with 3,000 sources of one message whose DKIM signature passed in the baseline', () => {
  const scenario = scenarioWith(signatureFlood);

  function evaluate(opts: EvaluateOptions): { keys: string[]; forged: number } {
    let forged = 0;
    const prepare = (input: AnalysisInput) => {
      forged = Math.max(forged, input.dkim.filter((r) => r.signingDomain === 'forged.example').length);
    };
    const findings = scenario.evaluate({ ...opts, prepare });
    return { keys: findings.map((f) => `${f.key} ${f.severity}`), forged };
  }

  it('holds the signatures of at most maxHeldSources of them, and judges the selector as with all of them', () => {
    const whole = evaluate({ maxSourceRows: Infinity });
    const bounded = evaluate({ maxSourceRows: 2000, maxHeldSources: 500 });
    assert.ok(whole.forged >= 3 * SOURCES, `whole: ${whole.forged} rows of forged.example`);
    assert.ok(bounded.forged <= 3 * 500, `bounded: ${bounded.forged} rows of forged.example`);
    assert.ok(
      whole.keys.some((k) => k.startsWith('dkim_selector_broken:example.com:forged.example:x ')),
      whole.keys.join('\n'),
    );
    assert.deepEqual(bounded.keys, whole.keys);
  });
});

/**
 * Small domains read as large ones (20 source rows, 2 sources held), each case compared with
 * holding every source: the domain's baseline made only by the new sources' own mail, a run open
 * on a domain not watched, a domain-wide drop open on one, and reports shared out in fractions
 * with rejected mail.
 */
describe('new failing sources judged from their sums, in the corners', () => {
  const dom = 's.example';
  const now = (D0 + 35) * DAY;
  const settings = settingsOf(configSchema.parse({ analysis: { reverse_dns: false } }));
  const add = (db: Db, day: number, ip: string, messages: number, pass: number, reject = 0) =>
    db
      .prepare(
        `INSERT INTO dmarc_daily (domain, day, source_ip, header_from, messages, dmarc_pass, dkim_aligned_pass, spf_aligned_pass,
           forwarded, quarantine, reject, reports, reporters) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0, 0, ?, 1, 1)`,
      )
      .run(dom, day, ip, dom, messages, pass, pass, pass, reject);
  const open = (key: string, baseline: Record<string, unknown> = {}) =>
    new Map<string, OpenAlert>([[key, { key, domain: dom, severity: 'critical', firstSeen: (D0 + 30) * DAY, baseline }]]);
  const cases: { name: string; fill: (db: Db) => void; open?: Map<string, OpenAlert>; expect: string }[] = [
    {
      name: "watched only through the new sources' own baseline mail",
      fill: (db) => {
        for (const ip of ['192.0.2.1', '192.0.2.2']) {
          add(db, D0 + 10, ip, 20, 20);
          add(db, D0 + 33, ip, 40, 40);
        }
        for (let i = 0; i < 30; i++) {
          add(db, D0 + 20, `10.9.0.${i}`, 1, 0);
          add(db, D0 + 34, `10.9.0.${i}`, 25, 0);
        }
      },
      expect: `new_failing_source:${dom}`,
    },
    {
      name: 'a run open as one finding on a domain not watched',
      fill: (db) => {
        for (const ip of ['192.0.2.1', '192.0.2.2']) {
          add(db, D0 + 10, ip, 20, 20);
          add(db, D0 + 33, ip, 40, 40);
        }
        for (let i = 0; i < 100; i++) add(db, D0 + 34, `10.9.0.${i}`, 5, 0);
      },
      open: open(`new_failing_source:${dom}`),
      expect: `new_failing_source:${dom}`,
    },
    {
      name: 'a domain-wide drop open on a domain not watched',
      fill: (db) => {
        for (const ip of ['192.0.2.1', '192.0.2.2']) {
          add(db, D0 + 10, ip, 20, 20);
          add(db, D0 + 33, ip, 40, 40);
          add(db, D0 + 34, ip, 40, 40);
        }
        for (let i = 0; i < 30; i++) add(db, D0 + 34, `10.9.0.${i}`, 25, 0);
      },
      open: open(`pass_rate_drop:${dom}`, { baseline_pass_rate: 100 }),
      expect: `pass_rate_drop:${dom}`,
    },
    {
      name: 'mail shared out in fractions, some rejected',
      fill: (db) => {
        for (let i = 0; i < 60; i++) {
          add(db, D0 + 10, `192.0.3.${i}`, 10, 10);
          add(db, D0 + 33, `192.0.3.${i}`, 10, 10);
        }
        for (let i = 0; i < 40; i++) {
          add(db, D0 + 33, `10.9.0.${i}`, 10.5, 0, 10.5);
          add(db, D0 + 34, `10.9.0.${i}`, 10, 0);
        }
      },
      expect: `new_failing_source:${dom}`,
    },
  ];
  for (const c of cases) {
    it(`${c.name}: the findings of holding every source`, () => {
      const { db } = freshStore();
      c.fill(db);
      const run = (opts: EvaluateOptions) =>
        evaluateRules(db, now, settings, { domains: [dom], ...(c.open ? { open: c.open } : {}), ...opts }).map((f) => {
          const { sources_not_judged: _, ...details } = f.details;
          return { key: f.key, severity: f.severity, details };
        });
      const whole = run({ maxSourceRows: Infinity });
      assert.ok(
        whole.some((f) => f.key === c.expect),
        JSON.stringify(whole),
      );
      assert.deepEqual(run({ maxSourceRows: 20, maxHeldSources: 2 }), whole);
      db.close();
    });
  }
});
