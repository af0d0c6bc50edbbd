import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { AnalysisInput } from '../../src/analyse/index.js';
import { MAX_SOURCE_SIGNATURES, type EvaluateOptions } from '../../src/store/analysis.js';
import type { Db } from '../../src/store/db.js';
import { D0, EXPECTED, scenarioWith } from '../helpers/scenario.js';

/**
 * The five-week scenario of alerts.test.ts, and for the same domain 2,000 more sources of a few
 * sources' worth of rows but a hundred DKIM signatures each (what a stranger's report can list per
 * record): some 50 KB of gzip that made `alerts` pass 1 GiB when the domain's DKIM rows were read
 * one by one. The flood goes into the rollups by SQL, rows as ingest writes them: 2,000 sources
 * failing over the last two days with 40 forged signatures each, and 300 of them also passing in
 * the baseline with 500 messages (so they are held) and 10 of the signatures (which then break).
 */
const SOURCES = 2000;
const SIGNATURES = 40;

function flood(db: Db): void {
  const ip = `printf('10.9.%d.%d', i >> 8 & 255, i & 255)`;
  db.exec(`
    CREATE TEMP TABLE src AS WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < ${SOURCES - 1})
      SELECT i, ${ip} AS ip FROM n;
    CREATE TEMP TABLE sig AS WITH RECURSIVE n(k) AS (SELECT 0 UNION ALL SELECT k + 1 FROM n WHERE k < ${SIGNATURES - 1}) SELECT k FROM n;
    CREATE TEMP TABLE days AS SELECT ${D0 + 33} AS day, 0 AS base UNION ALL SELECT ${D0 + 34}, 0
      UNION ALL SELECT ${D0 + 10}, 1 UNION ALL SELECT ${D0 + 12}, 1;
    INSERT INTO dmarc_daily (domain, day, source_ip, header_from, messages, dmarc_pass, dkim_aligned_pass, spf_aligned_pass,
        forwarded, quarantine, reject, reports, reporters)
      SELECT 'example.com', day, ip, 'example.com', CASE WHEN base THEN 500 ELSE 1 END, base * 500, 0, base * 500, 0, 0, 1 - base, 1, 1
      FROM src, days WHERE NOT base OR i < 300;
    INSERT INTO dkim_daily (domain, day, source_ip, signing_domain, selector, result, messages)
      SELECT 'example.com', day, ip, 'forged' || k || '.example', 's' || k, CASE WHEN base THEN 'pass' ELSE 'fail' END,
        CASE WHEN base THEN 500 ELSE 1 END
      FROM src, sig, days WHERE NOT base OR (i < 300 AND k < 10);`);
}

describe('a domain with 2,000 sources of 40 DKIM signatures each', () => {
  const scenario = scenarioWith(flood);

  /** The findings, and the most rows of sources and DKIM signatures one group of domains held. */
  function evaluate(opts: EvaluateOptions): { keys: string[]; rows: number; dkim: number } {
    let rows = 0;
    let dkim = 0;
    const prepare = (input: AnalysisInput) => {
      rows = Math.max(rows, input.sources.length + input.dkim.length);
      dkim = Math.max(dkim, input.dkim.length);
    };
    const findings = scenario.evaluate({ ...opts, prepare });
    return { keys: findings.map((f) => `${f.key} ${f.severity} ${f.summary}`), rows, dkim };
  }

  it('holds a bounded number of DKIM rows and finds what it finds with all of them held', () => {
    const whole = evaluate({ maxSourceRows: Infinity });
    const bounded = evaluate({});
    assert.ok(whole.dkim > 150_000, `whole: ${whole.dkim} DKIM rows`);
    // The 300 held sources' signatures, at most MAX_SOURCE_SIGNATURES passing and as many others
    // each, over their windows.
    assert.ok(bounded.dkim <= 300 * 2 * MAX_SOURCE_SIGNATURES * 4 + 1000, `bounded: ${bounded.dkim} DKIM rows`);
    assert.deepEqual(bounded.keys, whole.keys);
    assert.equal(bounded.keys.filter((k) => k.startsWith('dkim_selector_broken:example.com:forged')).length, 10);
    for (const k of EXPECTED)
      assert.ok(
        bounded.keys.some((f) => f.startsWith(`${k} `)),
        `${k} in ${bounded.keys.join('\n')}`,
      );
  });
});
