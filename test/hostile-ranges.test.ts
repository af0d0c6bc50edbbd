import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { describe, it } from 'node:test';
import Database from 'better-sqlite3';
import { CLI, count, freshStore } from './helpers/common.js';
import { D0, dayIso, EXPECTED, ingestDays } from './helpers/scenario.js';

/**
 * Issue 19: a report with an absurd date range, already in the database (stored before parse-time
 * checks refused such ranges), must cost what a normal one does. Before, `alerts` built one entry
 * per day of <begin>0</begin><end>9007199254740991</end> and died at 5 GB; a TLS report from
 * 0001-01-01 to 9999-12-31 cost 404 MB. Here such rows sit in a database from before the rollups;
 * `alerts` and `report` migrate it and answer, under a 96 MiB JavaScript heap.
 */
describe('reports with absurd date ranges in the database', () => {
  it('cost alerts and report no more than normal ones: bounded time and memory', async () => {
    const { db, ingestor, file } = freshStore();
    await ingestDays({ ingestor }, 0, 34);
    db.close();
    const old = new Database(file);
    // As an older ruawatch left it: no rollups; then the poisoned rows, as it stored them.
    old.exec(`DROP INDEX reports_end; DROP INDEX reports_begin; ALTER TABLE reports DROP COLUMN pruned_at;`);
    for (const t of ['dmarc_daily', 'dkim_daily', 'domain_daily', 'daily_totals', 'tls_daily', 'tls_failure_daily', 'policy_daily']) {
      old.exec(`DROP TABLE ${t}`);
    }
    for (const t of ['report_daily', 'failure_daily', 'domain_reporters']) old.exec(`DROP TABLE ${t}`);
    old.exec(`DELETE FROM schema_migrations WHERE id = 4`);
    const report =
      old.prepare(`INSERT INTO reports (kind, reporter, report_id, policy_domain, begin_ts, end_ts, raw_sha256, raw_size, input, ingested_at)
      VALUES (?, 'evil.example', ?, 'example.com', ?, ?, '', 0, 'evil', 0)`);
    const record =
      old.prepare(`INSERT INTO dmarc_records (report_id, source_ip, count, disposition, dkim_aligned, spf_aligned, header_from, dkim_results)
      VALUES (?, ?, 5000, 'none', 'fail', 'fail', 'example.com', '[{"domain":"example.com","selector":"esp1","result":"fail","human_result":null}]')`);
    const ranges: [string, number, number][] = [
      ['dmarc', 0, 9007199254740991],
      ['dmarc', 9007199254740991, 0],
      ['dmarc', 0, Date.UTC(2100, 0, 1) / 1000],
      ['tlsrpt', -62135596800, 253402300799],
    ];
    ranges.forEach(([kind, begin, end], i) => {
      const id = Number(report.run(kind, `evil-${i}`, begin, end).lastInsertRowid);
      if (kind === 'dmarc') {
        old.prepare(`INSERT INTO dmarc_policies (report_id, domain, p) VALUES (?, 'example.com', 'none')`).run(id);
        for (const ip of ['203.0.113.200', '2001:db8::bad']) record.run(id, ip);
      } else {
        const p = old
          .prepare(
            `INSERT INTO tls_policies (report_id, policy_type, policy_domain, policy_strings, mx_hosts, successful, failed) VALUES (?, 'sts', 'example.com', '[]', '["mx2.example.com"]', 1000000000000, 5000)`,
          )
          .run(id).lastInsertRowid;
        old.prepare(`INSERT INTO tls_failures (policy_id, result_type, failed_sessions) VALUES (?, 'certificate-expired', 5000)`).run(p);
      }
    });
    old.close();

    const cli = (...args: string[]) => {
      const started = Date.now();
      const res = spawnSync(process.execPath, ['--max-old-space-size=96', CLI, ...args, '--db', file], {
        encoding: 'utf8',
        env: { ...process.env, RUAWATCH_ANALYSIS_REVERSE_DNS: 'false' },
        timeout: 60_000,
      });
      return { ...res, seconds: (Date.now() - started) / 1000 };
    };
    const alerts = cli('alerts', '--at', dayIso(D0 + 34), '--dry-run', '--json');
    assert.equal(alerts.status, 0, alerts.stderr);
    assert.ok(alerts.seconds < 30, `${alerts.seconds} s`);
    // The poisoned reports are attributed to the 31 days their ranges end with: none of them is
    // in the windows, so the findings are the scenario's.
    assert.deepEqual((JSON.parse(alerts.stdout) as { findings: { key: string }[] }).findings.map((f) => f.key).sort(), EXPECTED);

    const check = new Database(file);
    assert.ok(count(check, `SELECT COUNT(*) FROM dmarc_daily WHERE source_ip IN ('203.0.113.200', '2001:db8::bad')`) <= 3 * 2 * 32);
    assert.ok(count(check, `SELECT COUNT(*) FROM tls_daily`) <= 35 * 2 + 32);
    assert.equal(count(check, `SELECT COUNT(*) FROM domain_daily WHERE date(day * 86400, 'unixepoch') IS NULL`), 0);
    check.close();

    const reported = cli('report', '--json');
    assert.equal(reported.status, 0, reported.stderr);
    const totals = JSON.parse(reported.stdout) as { domains: { messages: number }[]; tlsrpt: { successful: number }[] };
    // Every message is still counted once, on bounded days.
    assert.equal(totals.domains[0]!.messages, 35 * 560 + 5 * 80 + 3 * 2 * 5000);
    assert.equal(totals.tlsrpt[0]!.successful, 35 * 500 + 1e12);
  });
});
