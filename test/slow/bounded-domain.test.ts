import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { DAY, type AnalysisInput, type Finding } from '../../src/analyse/index.js';
import { configSchema } from '../../src/config/schema.js';
import { createEnricher } from '../../src/enrich/index.js';
import { createLogger } from '../../src/log.js';
import { runAlerts, settingsOf } from '../../src/pipeline/alerts.js';
import { enrichEvaluation, labelFindings } from '../../src/pipeline/senders.js';
import { evaluateRules, type EvaluateOptions } from '../../src/store/analysis.js';
import type { Db } from '../../src/store/db.js';
import { freshStore, tempDir } from '../helpers/common.js';
import { D0, EXPECTED, ingestDays } from '../helpers/scenario.js';

/**
 * A forged flood: the five-week scenario of alerts.test.ts, and for the same domain 300,000 more
 * sources of one message each (what one report of the per-report cap can claim), spread over the
 * last two weeks: those of the baseline's last week pass by SPF, some of them through a known
 * service, one in a thousand also signed with a selector of the domain's (so it joins that
 * selector's known sources); those of the recent week fail, with a forged DKIM signature, 126 of
 * them from a known forwarder. The flood goes into
 * the daily rollups by SQL (ingesting 300,000 records would take the suite's time for nothing the
 * rollups do not already hold): rows as ingest writes them.
 */

const FLOOD = 300_000;

const SERVICES = `
[[service]]
id = "example-mailer"
name = "Example Mailer"
type = "marketing"
ip_ranges = ["203.0.113.0/24", "10.1.0.0/16"]

[[service]]
id = "example-lists"
name = "Example Lists"
type = "forwarder/list"
ip_ranges = ["10.0.0.0/24"]
`;

function flood(db: Db): void {
  const ip = `printf('10.%d.%d.%d', i >> 16 & 255, i >> 8 & 255, i & 255)`;
  const pass = `(i % 14 < 7)`;
  db.exec(`
    CREATE TEMP TABLE flood AS WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < ${FLOOD - 1})
      SELECT i, ${ip} AS ip, ${D0 + 21} + i % 14 AS day, ${pass} AS pass FROM n;
    INSERT INTO dmarc_daily (domain, day, source_ip, header_from, messages, dmarc_pass, dkim_aligned_pass, spf_aligned_pass,
        forwarded, quarantine, reject, reports, reporters)
      SELECT 'example.com', day, ip, 'example.com', 1, pass, 0, pass, 0, 0, 1 - pass, 1, 1 FROM flood;
    INSERT INTO dkim_daily (domain, day, source_ip, signing_domain, selector, result, messages)
      SELECT 'example.com', day, ip, 'example.com', CASE WHEN pass THEN 's1' ELSE 'forged' END, CASE WHEN pass THEN 'pass' ELSE 'fail' END, 1
      FROM flood WHERE NOT pass OR i % 1000 = 0;`);
}

describe('a domain with 300,000 one-message sources and a few real ones', () => {
  let store: ReturnType<typeof freshStore>;
  let db: Db;
  let dir: string;
  const now = (D0 + 35) * DAY;
  const log = createLogger('silent');

  before(async () => {
    store = freshStore();
    db = store.db;
    await ingestDays(store, 0, 34);
    flood(db);
    dir = tempDir();
    fs.writeFileSync(path.join(dir, 'services.toml'), SERVICES);
  });
  after(() => db.close());

  const config = () => configSchema.parse({ analysis: { reverse_dns: false }, enrich: { services_file: path.join(dir, 'services.toml') } });

  /** The findings, and the most rows of sources and DKIM signatures one group of domains held. */
  function evaluate(opts: EvaluateOptions, enriched: boolean): { findings: Finding[]; rows: number } {
    const c = config();
    const e = enriched ? enrichEvaluation(createEnricher(c.enrich, { cacheDir: null })) : null;
    let rows = 0;
    const prepare = (input: AnalysisInput) => {
      e?.prepare(input);
      rows = Math.max(rows, input.sources.length + input.dkim.length);
    };
    const findings = evaluateRules(db, now, settingsOf(c), { ...opts, unnamed: true, prepare, ...(e ? { examine: e.examine } : {}) });
    return { findings: labelFindings(findings, null, e?.facts ?? null), rows };
  }

  it('gives the same findings whether its sources are held one by one or the small ones summed, holding a few thousand rows', () => {
    for (const enriched of [false, true]) {
      const whole = evaluate({ maxSourceRows: Infinity }, enriched);
      const bounded = evaluate({}, enriched);
      assert.ok(whole.rows > FLOOD, `whole: ${whole.rows} rows`);
      assert.ok(bounded.rows < 5_000, `bounded: ${bounded.rows} rows`);
      assert.deepEqual(bounded.findings, whole.findings);
      // Every source summed: the same findings again.
      assert.deepEqual(evaluate({ maxSourceRows: 0 }, enriched).findings, whole.findings);

      const keys = bounded.findings.map((f) => f.key);
      for (const k of EXPECTED) assert.ok(keys.includes(k), `${k} in ${keys.join(', ')}`);
      // The flood shows as what it is: mail for the domain failing from some 150,000 sources.
      const drop = bounded.findings.find((f) => f.key === 'pass_rate_drop:example.com');
      assert.ok(drop, keys.join(', '));
      const failing = drop.details.failing_sources as number;
      let expected = 0;
      for (let i = 0; i < FLOOD; i++) if (i % 14 >= 7 && !(enriched && i < 256)) expected++;
      assert.equal(failing, expected);
      assert.equal((drop.details.source_ips as string[]).length, 20);
      if (enriched) {
        // The forwarder's 256 addresses are exempted, summed or not; a passing source of the mailer's
        // (summed) makes the failing one a configured service.
        const spoofer = bounded.findings.find((f) => f.key === 'new_failing_source:example.com:203.0.113.66');
        assert.equal(spoofer?.details.sender, 'configured_service_failing');
        assert.match(drop.summary, /\(most: 10\.\d+\.\d+\.\d+ \(AS|network unknown|private/);
      }
    }
  });

  it("runAlerts with enrichment finds the scenario's problems in it", async () => {
    const c = config();
    const r = await runAlerts(db, c, {
      now,
      dryRun: true,
      channels: [],
      lookup: null,
      enricher: createEnricher(c.enrich, { cacheDir: null }),
      log,
    });
    const keys = r.findings.map((f) => f.key);
    for (const k of EXPECTED) assert.ok(keys.includes(k), k);
  });
});
