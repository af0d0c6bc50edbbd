import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { runCli } from './helpers/cli.js';
import { CLI, fixture, tempDir } from './helpers/common.js';
import { dmarcXml, gzip, record } from './helpers/synth.js';

/**
 * The built program as a process: for what only a process shows (standard input, the working
 * directory, the exit code of the binary itself). Everything else runs in process (runCli).
 */
function run(args: string[], opts: { env?: Record<string, string>; input?: Buffer | string; cwd?: string } = {}) {
  const env: Record<string, string> = { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp', ...opts.env };
  const r = spawnSync(process.execPath, [CLI, ...args], { env, input: opts.input, cwd: opts.cwd, encoding: 'utf8' });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

function json<T = Record<string, unknown>>(s: string): T {
  return JSON.parse(s) as T;
}

const SUMMARY_KEYS = ['inputs', 'reports', 'records', 'duplicates', 'failed', 'skipped'];

describe('ruawatch ingest', () => {
  it('prints the JSON summary of the contract and exits 1 when an input failed', async () => {
    const dir = tempDir();
    const db = path.join(dir, 'r.sqlite');
    const args = [
      'ingest',
      '--db',
      db,
      '--json',
      fixture('dmarc-aggregate/drv_google.xml'),
      fixture('tlsrpt/drv_microsoft.json'),
      fixture('failure/mailauth_arf_004.eml'),
      fixture('dmarc-aggregate/kimon_malformed.xml'),
      fixture('dmarc-eml/pkerrigan_test.none.eml'),
      fixture('dmarc-aggregate/kimon_multi-report.zip'),
    ];
    const first = await runCli(args);
    assert.equal(first.code, 1, first.stderr);
    const s = json<{
      inputs: number;
      reports: Record<string, number>;
      records: number;
      duplicates: number;
      failed: { input: string; error: string }[];
      skipped: { input: string; reason: string }[];
    }>(first.stdout);
    assert.deepEqual(
      Object.keys(s).filter((k) => SUMMARY_KEYS.includes(k)),
      SUMMARY_KEYS,
    );
    assert.deepEqual(s.reports, { dmarc: 4, tlsrpt: 1, failure: 1 });
    assert.equal(s.inputs, 6);
    assert.equal(s.records, 1 + 2 + 1 + 6);
    assert.equal(s.duplicates, 0);
    assert.deepEqual(
      s.failed.map((f) => path.basename(f.input)),
      ['kimon_malformed.xml'],
    );
    assert.match(s.failed[0]!.error, /not well-formed XML/);
    assert.deepEqual(
      s.skipped.map((f) => path.basename(f.input)),
      ['pkerrigan_test.none.eml'],
    );
    // Idempotent: the same inputs again store nothing and count duplicates.
    const again = json<{ reports: Record<string, number>; duplicates: number }>((await runCli(args)).stdout);
    assert.deepEqual(again.reports, { dmarc: 0, tlsrpt: 0, failure: 0 });
    assert.equal(again.duplicates, 6);
  });

  it('exits 0 when everything was handled, reads stdin with -, and names zip entries path#entry', () => {
    const dir = tempDir();
    const db = path.join(dir, 'r.sqlite');
    const r = run(['ingest', '--db', db, '--json', '-', fixture('dmarc-aggregate/avvertix_dmarc.zip')], {
      input: gzip(dmarcXml({ reportId: 'stdin-1' })),
    });
    assert.equal(r.code, 0, r.stderr);
    const s = json<{ reports: { dmarc: number }; inputs: number }>(r.stdout);
    assert.deepEqual([s.inputs, s.reports.dmarc], [2, 2]);
    const table = run(['ingest', '--db', db, fixture('dmarc-aggregate/kimon_malformed.xml')]);
    assert.equal(table.code, 1);
    assert.match(
      table.stdout,
      /failed {6}1\n {2}.*kimon_malformed\.xml: not well-formed XML: end tag <\/feedback> does not match <report_metadata> \(line 9, column 1\) \[E_XML\]/,
    );
  });

  it('skips stray files next to the reports (a web page, JSON that is not a report, a PDF) and exits 0', () => {
    const dir = tempDir();
    const files: Record<string, string | Buffer> = {
      'a-report.xml': dmarcXml({ reportId: 'stray-1' }),
      'b-page.html': '<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>DMARC</title></head><body><p>Reports<br></body></html>\n',
      'c-page.htm': '\n<html lang="en"><body>unclosed<p>paragraphs</body>',
      'd-settings.json': '{"theme": "dark", "policies_seen": 3}',
      'e-list.json': '[1, 2, 3]',
      'f-scan.pdf': Buffer.concat([Buffer.from('%PDF-1.7\n%\xe2\xe3\xcf\xd3\n', 'latin1'), Buffer.alloc(64, 7)]),
    };
    for (const [name, body] of Object.entries(files)) fs.writeFileSync(path.join(dir, name), body);
    const r = run(['ingest', '--db', path.join(tempDir(), 'r.sqlite'), '--json', dir]);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    const s = json<{ reports: { dmarc: number }; failed: unknown[]; skipped: { input: string; reason: string }[] }>(r.stdout);
    assert.deepEqual([s.reports.dmarc, s.failed], [1, []]);
    assert.deepEqual(
      s.skipped.map((x) => [path.basename(x.input), x.reason]),
      [
        ['b-page.html', 'an HTML document, not a report'],
        ['c-page.htm', 'an HTML document, not a report'],
        ['d-settings.json', 'JSON with no "policies" array: not an SMTP TLS report (RFC 8460)'],
        ['e-list.json', 'JSON with no "policies" array: not an SMTP TLS report (RFC 8460)'],
        ['f-scan.pdf', 'a PDF document, not a report'],
      ],
    );
  });

  it('lists a report whose key is already stored with other bytes under conflicts, naming both inputs, and exits 0', () => {
    const dir = tempDir();
    const first = path.join(dir, 'a.xml');
    const second = path.join(dir, 'b.xml');
    const copy = path.join(dir, 'c.xml');
    fs.writeFileSync(first, dmarcXml({ reportId: 'same-key', records: [record({ count: 5 })] }));
    fs.writeFileSync(second, dmarcXml({ reportId: 'same-key', records: [record({ count: 7 })] }));
    fs.copyFileSync(first, copy);
    const db = path.join(tempDir(), 'r.sqlite');
    const r = run(['ingest', '--db', db, '--json', dir]);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    const s = json<{ reports: { dmarc: number }; duplicates: number; conflicts: unknown[] }>(r.stdout);
    assert.deepEqual(
      [s.reports.dmarc, s.duplicates, s.conflicts],
      [1, 1, [{ input: second, stored_input: first, kind: 'dmarc', reporter: 'receiver.example', report_id: 'same-key' }]],
    );
    const table = run(['ingest', '--db', db, second]);
    assert.equal(table.code, 0);
    assert.match(
      table.stdout,
      new RegExp(
        `conflicts {3}1\\n {2}.*b\\.xml: not stored; .*a\\.xml holds another report with the same key \\(receiver\\.example same-key\\)`,
      ),
    );
  });

  it('exits 2 on usage and configuration errors', () => {
    assert.equal(run(['ingest']).code, 2);
    assert.equal(run(['ingest', '--bogus', 'x']).code, 2);
    assert.equal(run(['frobnicate']).code, 2);
    const dir = tempDir();
    const cfg = path.join(dir, 'c.toml');
    fs.writeFileSync(cfg, '[database]\npth = "x"\n');
    const bad = run(['ingest', '--config', cfg, fixture('dmarc-aggregate/drv_google.xml')]);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /database\.pth: unknown key/);
  });

  it('finds the database from --db, then the config, then RUAWATCH_DB, then ./data', () => {
    const dir = tempDir();
    const input = fixture('dmarc-aggregate/drv_yahoo.xml');
    run(['ingest', input], { cwd: dir });
    assert.ok(fs.existsSync(path.join(dir, 'data/ruawatch.sqlite')));
    run(['ingest', input], { cwd: dir, env: { RUAWATCH_DB: path.join(dir, 'env.sqlite') } });
    assert.ok(fs.existsSync(path.join(dir, 'env.sqlite')));
    fs.writeFileSync(path.join(dir, 'c.toml'), `[database]\npath = "${path.join(dir, 'cfg.sqlite')}"\n`);
    run(['ingest', '--config', path.join(dir, 'c.toml'), input], { cwd: dir, env: { RUAWATCH_DB: path.join(dir, 'env2.sqlite') } });
    assert.ok(fs.existsSync(path.join(dir, 'cfg.sqlite')));
    assert.ok(!fs.existsSync(path.join(dir, 'env2.sqlite')));
  });
});

describe('ruawatch report', () => {
  const dir = tempDir();
  const db = path.join(dir, 'r.sqlite');
  const day = (d: string) => Date.parse(`${d}T00:00:00Z`) / 1000;
  const files = {
    a: dmarcXml({
      reportId: 'a',
      begin: day('2026-03-01'),
      end: day('2026-03-02') - 1,
      records: [
        record({ ip: '2001:DB8::0:1', count: 10, dkim: 'pass', spf: 'fail' }),
        record({ ip: '192.0.2.1', count: 5, dkim: 'fail', spf: 'pass' }),
        record({ ip: '198.51.100.9', count: 5, dkim: 'fail', spf: 'fail' }),
      ],
    }),
    b: dmarcXml({
      reportId: 'b',
      orgName: 'other.example',
      begin: day('2026-03-05'),
      end: day('2026-03-06') - 1,
      records: [record({ ip: '2001:db8::1', count: 30, dkim: 'Pass', spf: 'pass' })],
    }),
    c: dmarcXml({
      reportId: 'c',
      domain: 'example.org',
      begin: day('2026-03-05'),
      end: day('2026-03-06') - 1,
      records: [record({ ip: '203.0.113.5', count: 4, dkim: 'fail', spf: 'fail' })],
    }),
  };
  for (const [k, v] of Object.entries(files)) fs.writeFileSync(path.join(dir, `${k}.xml`), v);
  fs.copyFileSync(fixture('tlsrpt/dmarcanalyzerapp_sample-lenient-tls.json'), path.join(dir, 'tls.json'));

  it('totals by policy domain and canonical source IP', async () => {
    assert.equal((await runCli(['ingest', '--db', db, dir])).code, 0);
    const r = await runCli(['report', '--db', db, '--json']);
    assert.equal(r.code, 0, r.stderr);
    const t = json<{
      domains: { domain: string; messages: number; dmarc_pass: number; pass_rate: number; sources: Record<string, unknown>[] }[];
      tlsrpt: unknown[];
    }>(r.stdout);
    assert.deepEqual(
      t.domains.map((d) => [d.domain, d.messages, d.dmarc_pass, d.pass_rate]),
      [
        ['example.com', 50, 45, 0.9],
        ['example.org', 4, 0, 0],
      ],
    );
    const src = t.domains[0]!.sources;
    assert.deepEqual(
      src.map((s) => [s.ip, s.messages, s.dmarc_pass, s.dkim_aligned_pass, s.spf_aligned_pass, s.pass_rate]),
      [
        ['2001:db8::1', 40, 40, 40, 30, 1],
        ['192.0.2.1', 5, 5, 0, 5, 1],
        ['198.51.100.9', 5, 0, 0, 0, 0],
      ],
    );
    assert.deepEqual(t.tlsrpt, [
      {
        policy_domain: 'acme.example',
        successful: 43,
        failed: 7,
        reports: 1,
        failures: [
          { result_type: 'quantum-handshake-flux', count: 5 },
          { result_type: 'certificate-expired', count: 1 },
        ],
      },
    ]);
  });

  it('filters by --domain, --since and --until (inclusive days)', async () => {
    const only = async (args: string[]) =>
      json<{ domains: { domain: string; messages: number }[] }>(
        (await runCli(['report', '--db', db, '--json', ...args])).stdout,
      ).domains.map((d) => [d.domain, d.messages]);
    assert.deepEqual(await only(['--domain', 'Example.ORG']), [['example.org', 4]]);
    assert.deepEqual(await only(['--since', '2026-03-05']), [
      ['example.com', 30],
      ['example.org', 4],
    ]);
    assert.deepEqual(await only(['--until', '2026-03-01']), [['example.com', 20]]);
    assert.deepEqual(await only(['--since', '2026-03-02', '--until', '2026-03-04']), []);
    assert.equal((await runCli(['report', '--db', db, '--since', '2026-13-01'])).code, 2);
  });

  it('prints a readable table by default', async () => {
    const r = await runCli(['report', '--db', db]);
    assert.match(r.stdout, /^example\.com: 50 messages in 2 aggregate reports, DMARC pass 90\.0%/m);
    assert.match(r.stdout, /2001:db8::1 +40 +100\.0% +100\.0% +75\.0%/);
    assert.match(r.stdout, /acme\.example +43 +7 +quantum-handshake-flux 5, certificate-expired 1/);
  });
});

describe('ruawatch config check', () => {
  it('prints the effective config with secrets redacted, reading *_file and RUAWATCH_* variables', async () => {
    const dir = tempDir();
    fs.writeFileSync(path.join(dir, 'pw'), 's3cret-imap\n');
    fs.writeFileSync(path.join(dir, 'token'), 'matrix-token\n');
    fs.writeFileSync(
      path.join(dir, 'c.toml'),
      `[[mailbox]]\nname = "dmarc"\nhost = "mail.example.com"\nuser = "dmarc@example.com"\npassword_file = "${path.join(dir, 'pw')}"\n\n[alerts.matrix]\nhomeserver = "https://matrix.example.com"\nroom_id = "!abc:example.com"\n`,
    );
    const r = await runCli(['config', 'check', '--config', path.join(dir, 'c.toml')], {
      RUAWATCH_ALERTS_MATRIX_ACCESS_TOKEN_FILE: path.join(dir, 'token'),
      RUAWATCH_SCHEDULE_POLL: '*/5 * * * *',
      RUAWATCH_MAILBOX_DMARC_PORT: '1993',
      RUAWATCH_LIMITS_MAX_ZIP_ENTRIES: '7',
    });
    assert.equal(r.code, 0, r.stderr);
    assert.doesNotMatch(r.stdout, /s3cret-imap|matrix-token/);
    const c = json<{
      config: {
        mailbox: Record<string, unknown>[];
        alerts: { matrix: Record<string, unknown> };
        schedule: { poll: string };
        limits: Record<string, number>;
      };
    }>(r.stdout).config;
    assert.deepEqual(
      [c.mailbox[0]!.password, c.mailbox[0]!.port, c.mailbox[0]!.folder, c.mailbox[0]!.security],
      ['[redacted]', 1993, 'INBOX', 'tls'],
    );
    assert.equal(c.alerts.matrix.access_token, '[redacted]');
    assert.equal(c.schedule.poll, '*/5 * * * *');
    assert.equal(c.limits.max_zip_entries, 7);
  });

  it('names every bad key by its full path', async () => {
    const dir = tempDir();
    fs.writeFileSync(
      path.join(dir, 'c.toml'),
      `[[mailbox]]\nname = "dmarc"\nhost = "h"\nuser = "u"\npassword = "p"\nsecurity = "ssl"\nfoldr = "x"\n\n[alerts.discord]\n`,
    );
    const r = await runCli(['config', 'check', '--config', path.join(dir, 'c.toml')]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /mailbox "dmarc"\.foldr: unknown key/);
    assert.match(r.stderr, /mailbox "dmarc"\.security: /);
    assert.match(r.stderr, /alerts\.discord: set webhook_url, or bot_token together with channel_id/);
    assert.match((await runCli(['config', 'check'], { RUAWATCH_DATABASE_PAHT: 'x' })).stderr, /RUAWATCH_DATABASE_PAHT: no such setting/);
  });
});
