import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { reportXml, writeRealisticCorpus } from '../../devtools/corpus.js';
import { count, freshStore, ingestFile, tempDir } from '../helpers/common.js';

/**
 * The benchmark corpora (devtools/corpus.ts): the realistic one has the shape docs/performance.md
 * describes, is the same on every run, and the older ones have not moved (the figures recorded
 * for them compare only if they are the same bytes).
 */

const SMALL = { days: 3, large: 1, medium: 1, small: 4 } as const;

/** SHA-256 over a folder's file names and bytes, in name order. */
function digest(dir: string): string {
  const h = createHash('sha256');
  for (const f of fs.readdirSync(dir).sort()) h.update(f).update(fs.readFileSync(path.join(dir, f)));
  return h.digest('hex');
}

describe('benchmark corpora', () => {
  it('the gz corpus is byte for byte what it was when its figures were recorded', () => {
    const h = createHash('sha256');
    for (let n = 0; n < 2000; n++) h.update(reportXml(n, 50));
    assert.equal(h.digest('hex'), 'eb47c66b1738597264323787f7ed034cc37e40e1d155c43c35c61aa204762c2c');
  });

  it('the realistic corpus is the same bytes on every run, and by default the size of the gz corpus', () => {
    const small = tempDir();
    assert.equal(writeRealisticCorpus(small, SMALL).reports, fs.readdirSync(small).length);
    assert.equal(digest(small), 'e243065d3820526e25d1e239a79a5ee09b5a095cb31714cec78d9209c5f89adc');
    const full = tempDir();
    assert.deepEqual(writeRealisticCorpus(full), { reports: 1990, records: 97_992 });
    // The corpus docs/performance.md gives figures for.
    assert.equal(digest(full), '302c21a260b3c0a86d59c80c0a1d446c5b12315cf3754cb98206d456e2a1d1a3');
    for (const d of [small, full]) fs.rmSync(d, { recursive: true });
  });

  it('has reporters with their real date ranges, sources that come back, and the odd records real reports carry', async () => {
    const dir = tempDir();
    const written = writeRealisticCorpus(dir, SMALL);
    const { db, ingestor } = freshStore();
    for (const f of fs.readdirSync(dir)) {
      const r = await ingestFile(ingestor, path.join(dir, f));
      assert.equal(r.leaves[0]?.status, 'stored', f);
    }
    assert.equal(count(db, 'SELECT COUNT(*) FROM reports'), written.reports);
    assert.equal(count(db, 'SELECT COUNT(*) FROM dmarc_records'), written.records);
    // Six reporters cover one UTC day (ending at 23:59:59 or at the next midnight), two a local day.
    const ranges = db
      .prepare('SELECT DISTINCT reporter, begin_ts % 86400 AS offset, end_ts - begin_ts AS span FROM reports ORDER BY reporter')
      .all() as { reporter: string; offset: number; span: number }[];
    assert.deepEqual(ranges, [
      { reporter: 'Fastmail Pty Ltd', offset: 0, span: 86_399 },
      { reporter: 'GMX', offset: 0, span: 86_399 },
      { reporter: 'Mail.Ru', offset: 0, span: 86_400 },
      { reporter: 'Outlook.com', offset: 0, span: 86_400 },
      { reporter: 'Yahoo', offset: 0, span: 86_399 },
      { reporter: 'google.com', offset: 0, span: 86_399 },
      { reporter: 'mailgw.example.de', offset: 82_800, span: 86_400 },
      { reporter: 'zoho.com', offset: 28_800, span: 86_400 },
    ]);
    // One record per source in a report; sources seen by several reporters and on several days.
    assert.equal(count(db, 'SELECT COUNT(*) FROM (SELECT 1 FROM dmarc_records GROUP BY report_id, source_ip HAVING COUNT(*) > 1)'), 0);
    const domainSourceDays = count(
      db,
      'SELECT COUNT(*) FROM (SELECT DISTINCT r.policy_domain, r.end_ts / 86400, d.source_ip FROM dmarc_records d JOIN reports r ON r.id = d.report_id)',
    );
    assert.ok(domainSourceDays < written.records / 2, `${domainSourceDays} domain-source-days for ${written.records} records`);
    const domainSources = count(
      db,
      'SELECT COUNT(*) FROM (SELECT DISTINCT r.policy_domain, d.source_ip FROM dmarc_records d JOIN reports r ON r.id = d.report_id)',
    );
    assert.ok(domainSources < domainSourceDays / 2, `${domainSources} domain-sources over ${domainSourceDays} domain-source-days`);
    // Some sources serve several domains (ESPs, forwarders).
    assert.ok(
      count(
        db,
        'SELECT COUNT(*) FROM (SELECT d.source_ip FROM dmarc_records d JOIN reports r ON r.id = d.report_id GROUP BY d.source_ip HAVING COUNT(DISTINCT r.policy_domain) > 1)',
      ) > 0,
    );
    const share = (where: string) => count(db, `SELECT COUNT(*) FROM dmarc_records WHERE ${where}`) / written.records;
    const v6 = share("source_ip LIKE '%:%'");
    assert.ok(v6 > 0.03 && v6 < 0.2, `IPv6 ${v6}`);
    assert.ok(share('json_array_length(dkim_results) = 2') > 0);
    assert.ok(share("reasons LIKE '%forwarded%'") > 0 && share("reasons LIKE '%mailing_list%'") > 0);
    // Spoofing: no DKIM signature at all, DMARC failing.
    assert.ok(share("json_array_length(dkim_results) = 0 AND dkim_aligned = 'fail' AND spf_aligned = 'fail'") > 0);
    // The rollups merge what several reporters say of one source and day.
    assert.ok(count(db, 'SELECT COUNT(*) FROM dmarc_daily') < written.records / 2);
    db.close();
    fs.rmSync(dir, { recursive: true });
  });
});
