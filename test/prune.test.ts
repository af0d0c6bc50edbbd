import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { before, describe, it } from 'node:test';
import Database from 'better-sqlite3';
import { DAY } from '../src/analyse/index.js';
import { configSchema } from '../src/config/schema.js';
import { createLogger } from '../src/log.js';
import { runAlerts } from '../src/pipeline/alerts.js';
import { overview } from '../src/store/dashboard.js';
import { openDb, type Db } from '../src/store/db.js';
import { loadMigrations, migrate } from '../src/store/migrate.js';
import { reportTotals } from '../src/store/summary.js';
import { Worker } from '../src/worker/worker.js';
import { openApp } from '../src/app.js';
import { CLI, count, fixture, fixtureFiles, freshStore, ingestFile, tempDir } from './helpers/common.js';
import { D0, EXPECTED, ingestDays, reportsFor } from './helpers/scenario.js';
import { bufferInput } from './helpers/common.js';
import { dmarcXml, record } from './helpers/synth.js';
import { prune } from '../src/store/prune.js';

/**
 * Retention: six weeks of the alert scenario plus the failure reports among the fixtures, pruned
 * so that the first weeks lose their records. What people look at must not change.
 */

const ROLLUPS = [
  'dmarc_daily',
  'dkim_daily',
  'domain_daily',
  'daily_totals',
  'tls_daily',
  'tls_failure_daily',
  'policy_daily',
  'report_daily',
  'failure_daily',
];
const today = Math.floor(Date.now() / 1000 / DAY);
/** records_days that keeps the scenario's days from `d` on. */
const keepFrom = (d: number) => today - (D0 + d);

function snapshot(db: Db) {
  const config = configSchema.parse({ analysis: { reverse_dns: false } });
  return {
    rollups: Object.fromEntries(ROLLUPS.map((t) => [t, db.prepare(`SELECT * FROM ${t}`).all()])),
    totals: reportTotals(db, {}),
    weeks: [0, 1, 2, 3, 4, 5].map((w) => reportTotals(db, { since: (D0 + 7 * w) * DAY, until: (D0 + 7 * w + 7) * DAY })),
    dashboard: (({ generated_at, ...o }) => o)(overview(db, { days: 42, now: (D0 + 42) * DAY, recentDays: 7 })),
    config,
  };
}

describe('retention: ruawatch prune', () => {
  const { db, ingestor, file } = freshStore();
  let before_: ReturnType<typeof snapshot>;
  let failures = 0;
  let counted = { reports: 0, records: 0, policies: 0 };
  const toml = path.join(tempDir(), 'c.toml');

  before(async () => {
    await ingestDays({ ingestor }, 0, 41);
    for (const f of fixtureFiles('.eml')) {
      const r = await ingestFile(ingestor, fixture(f));
      failures += r.leaves.filter((l) => l.status === 'stored' && l.kind === 'failure').length;
    }
    assert.ok(failures >= 3, `${failures} failure reports`);
    before_ = snapshot(db);
    // Records of the first 20 days go; failure reports (years old) all go.
    fs.writeFileSync(toml, `[retention]\nrecords_days = ${keepFrom(20)}\nfailure_reports_days = 30\n`);
  });

  it('--dry-run counts what would go and deletes nothing', () => {
    const res = spawnSync(process.execPath, [CLI, 'prune', '--db', file, '--config', toml, '--dry-run', '--json'], { encoding: 'utf8' });
    assert.equal(res.status, 0, res.stderr);
    const r = JSON.parse(res.stdout) as Record<string, unknown>;
    // Days 0-19 of the scenario (two aggregate reports of 4 and 2 records and a TLS report a day),
    // the fixtures' reports (all older) and every failure report.
    const old = `FROM reports r WHERE r.kind <> 'failure' AND r.end_ts < ${(D0 + 20) * DAY}`;
    const want = {
      reports: count(db, `SELECT COUNT(*) ${old}`) + failures,
      records: count(db, `SELECT COUNT(*) FROM dmarc_records WHERE report_id IN (SELECT r.id ${old})`),
      policies: count(db, `SELECT COUNT(*) FROM tls_policies WHERE report_id IN (SELECT r.id ${old})`),
    };
    assert.ok(want.reports >= 60 + failures && want.records >= 20 * 6 && want.policies >= 20);
    assert.deepEqual(
      [r.dry_run, r.reports, r.dmarc_records, r.tls_policies, r.failure_reports],
      [true, want.reports, want.records, want.policies, failures],
    );
    counted = want;
    assert.equal(r.records_before, new Date((D0 + 20) * DAY * 1000).toISOString().slice(0, 10));
    assert.equal(count(db, 'SELECT COUNT(*) FROM reports WHERE pruned_at IS NOT NULL'), 0);
    assert.equal(count(db, 'SELECT COUNT(*) FROM failure_reports'), failures);
  });

  it('deletes the old rows and gives their space back, in a database that stays whole', () => {
    const pagesBefore = db.pragma('page_count', { simple: true }) as number;
    const res = spawnSync(process.execPath, [CLI, 'prune', '--db', file, '--config', toml], { encoding: 'utf8' });
    assert.equal(res.status, 0, res.stderr);
    assert.match(res.stdout, /^Retention: records of reports that ended before \d{4}-\d{2}-\d{2}; failure report summaries of reports/);
    assert.match(
      res.stdout,
      new RegExp(
        `Deleted the rows of ${counted.reports} reports \\(${counted.records} aggregate report records, ${counted.policies} TLS policies`,
      ),
    );
    assert.match(res.stdout, /Given back to the file system: \d+(\.\d MiB| KiB)\./);
    assert.equal(
      count(db, `SELECT COUNT(*) FROM dmarc_records d JOIN reports r ON r.id = d.report_id WHERE r.end_ts < ?`, (D0 + 20) * DAY),
      0,
    );
    // Days 20-41 keep theirs: 6 records a day, one more on the spoofer's days 30-34.
    assert.equal(
      count(db, `SELECT COUNT(*) FROM dmarc_records d JOIN reports r ON r.id = d.report_id WHERE r.begin_ts >= ?`, D0 * DAY),
      22 * 6 + 5,
    );
    assert.equal(count(db, `SELECT COUNT(*) FROM failure_reports`), 0);
    assert.equal(count(db, `SELECT COUNT(*) FROM reports WHERE pruned_at IS NOT NULL`), counted.reports);
    assert.equal(db.pragma('auto_vacuum', { simple: true }), 2);
    assert.ok((db.pragma('page_count', { simple: true }) as number) <= pagesBefore, 'no more pages than before');
    assert.equal(db.pragma('freelist_count', { simple: true }), 0);
    assert.equal(db.pragma('integrity_check', { simple: true }), 'ok');
    assert.deepEqual(db.pragma('foreign_key_check'), []);
  });

  it('leaves trends, report totals and the dashboard as they were', async () => {
    // A connection of its own: nothing cached from before.
    const fresh = openDb(file);
    const after = snapshot(fresh);
    fresh.close();
    assert.deepEqual(after.rollups, before_.rollups);
    assert.deepEqual(after.totals, before_.totals);
    assert.deepEqual(after.weeks, before_.weeks);
    assert.deepEqual(after.dashboard, before_.dashboard);
    const run = await runAlerts(db, after.config, {
      now: (D0 + 35) * DAY,
      dryRun: true,
      channels: [],
      lookup: null,
      log: createLogger('silent'),
    });
    assert.deepEqual(run.findings.map((f) => f.key).sort(), EXPECTED);
    const res = spawnSync(process.execPath, [CLI, 'report', '--db', file, '--json'], { encoding: 'utf8' });
    assert.deepEqual(JSON.parse(res.stdout), JSON.parse(JSON.stringify(before_.totals)));
  });

  it('still knows a re-delivered old report as a duplicate, and a second prune finds nothing', async () => {
    for (const r of reportsFor(3)) {
      const res = await ingestor.ingest(bufferInput(r.name, r.bytes));
      assert.deepEqual(
        res.leaves.map((l) => l.status),
        ['duplicate'],
      );
    }
    for (const f of fixtureFiles('.eml')) await ingestFile(ingestor, fixture(f));
    assert.equal(count(db, `SELECT COUNT(*) FROM failure_reports`), 0);
    assert.deepEqual(snapshot(db).rollups, before_.rollups);
    const res = spawnSync(process.execPath, [CLI, 'prune', '--db', file, '--config', toml, '--json'], { encoding: 'utf8' });
    assert.equal((JSON.parse(res.stdout) as { reports: number }).reports, 0);
  });

  it('a pruned database still migrates', () => {
    const copy = path.join(tempDir(), 'pruned.sqlite');
    db.prepare('VACUUM INTO ?').run(copy);
    const c = openDb(copy);
    const next = { id: 9999, name: '9999_index_sources.sql', sql: 'CREATE INDEX dmarc_records_source ON dmarc_records (source_ip);' };
    assert.deepEqual(migrate(c, [...loadMigrations(), next]), [9999]);
    assert.equal(c.pragma('integrity_check', { simple: true }), 'ok');
    assert.deepEqual(snapshot(c).rollups, before_.rollups);
    c.close();
  });

  it('runs inside ruawatch run, as its daily task', async () => {
    const { db: other, ingestor: into } = freshStore();
    await ingestDays({ ingestor: into }, 0, 9);
    const config = configSchema.parse({ retention: { records_days: keepFrom(5) }, analysis: { reverse_dns: false } });
    const worker = new Worker(openApp(config, { db: other, log: createLogger('silent'), lookup: null, channels: [] }));
    await worker.prune();
    assert.equal(count(other, `SELECT COUNT(*) FROM reports WHERE pruned_at IS NOT NULL`), 15);
    assert.equal(count(other, `SELECT COUNT(*) FROM dmarc_records`), 5 * 6);
    other.close();
  });

  it('gives the space of a large report back to the file system', async () => {
    const { db: big, ingestor: into, file: bigFile } = freshStore();
    const records = Array.from({ length: 30_000 }, (_, i) => record({ ip: `10.${i >> 16}.${(i >> 8) & 255}.${i & 255}`, count: 1 }));
    const old = dmarcXml({ reportId: 'big-old', begin: (D0 + 1) * DAY, end: (D0 + 2) * DAY - 1, records });
    assert.equal((await into.ingest(bufferInput('big.xml', old))).leaves[0]!.status, 'stored');
    big.pragma('wal_checkpoint(TRUNCATE)');
    const size = fs.statSync(bigFile).size;
    const rollups = big.prepare(`SELECT COUNT(*) AS n, SUM(messages) AS m FROM dmarc_daily`).get();
    const r = prune(big, { recordsDays: keepFrom(10), failureReportsDays: 0 }, Math.floor(Date.now() / 1000), false);
    assert.equal(r.dmarc_records, 30_000);
    assert.ok(r.freed_bytes > 5 * 1024 * 1024, `${r.freed_bytes} bytes freed`);
    big.pragma('wal_checkpoint(TRUNCATE)');
    assert.ok(fs.statSync(bigFile).size < size - r.freed_bytes / 2, `${fs.statSync(bigFile).size} < ${size}`);
    assert.deepEqual(big.prepare(`SELECT COUNT(*) AS n, SUM(messages) AS m FROM dmarc_daily`).get(), rollups);
    big.close();
  });
});

describe('migrating a database from before the rollups', () => {
  it('builds the same rollups from the records as ingest writes', async () => {
    const { db, ingestor, file } = freshStore();
    await ingestDays({ ingestor }, 0, 13);
    const want = Object.fromEntries(ROLLUPS.map((t) => [t, db.prepare(`SELECT * FROM ${t}`).all()]));
    db.close();
    // Take the database back to migration 3, as an older ruawatch left it.
    const old = new Database(file);
    old.exec(`DROP INDEX reports_end; DROP INDEX reports_begin; ALTER TABLE reports DROP COLUMN pruned_at;`);
    for (const t of [...ROLLUPS, 'domain_reporters']) old.exec(`DROP TABLE ${t}`);
    old.exec(`DELETE FROM schema_migrations WHERE id = 4`);
    old.close();
    const again = openDb(file);
    assert.ok(count(again, `SELECT COUNT(*) FROM schema_migrations WHERE id = 4`) === 1);
    for (const t of ROLLUPS) {
      const got = again.prepare(`SELECT * FROM ${t}`).all() as Record<string, unknown>[];
      assert.equal(got.length, want[t]!.length, t);
      assert.deepEqual(got, want[t], t);
    }
    again.close();
  });
});
