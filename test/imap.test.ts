import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import Database from 'better-sqlite3';
import { CLI, fixture, tempDir } from './helpers/common.js';
import { PASSWORD, findDovecot, startDovecot, type Dovecot } from '../devtools/dovecot.js';
import { base64Lines, dmarcXml, gzip, mail, nestedZip, record } from './helpers/synth.js';

const haveDovecot = findDovecot() !== null;
if (!haveDovecot) {
  const msg = '\n*** dovecot is not installed: the IMAP tests are SKIPPED (apt-get install dovecot-imapd) ***\n';
  process.stderr.write(msg);
  // Under CI a missing server is a failure, never a silent skip.
  if (process.env.CI) throw new Error('dovecot is missing under CI');
}

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Prints the process's peak RSS (KiB) on standard error as it exits. */
const PEAK_RSS = `data:text/javascript,${encodeURIComponent(
  "import fs from 'node:fs'; process.on('exit', () => fs.writeSync(2, `\\npeak-rss-kib ${process.resourceUsage().maxRSS}\\n`));",
)}`;

function cli(args: string[], node: string[] = []): Promise<Run> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [...node, CLI, ...args], { env: { PATH: process.env.PATH ?? '' } });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    p.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

type Summary = {
  inputs: number;
  reports: Record<string, number>;
  duplicates: number;
  failed: { input: string; error: string }[];
  skipped: { input: string; reason: string }[];
};

function reportMail(id: string, n = 1): string {
  const xml = dmarcXml({ reportId: id, records: Array.from({ length: n }, (_, i) => record({ ip: `192.0.2.${(i % 250) + 1}` })) });
  return mail([
    {
      headers:
        'Content-Type: application/gzip\r\nContent-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename="r.xml.gz"',
      body: base64Lines(gzip(xml)),
    },
  ]);
}

describe('IMAP fetch against a real Dovecot', { skip: !haveDovecot && 'dovecot is not installed' }, () => {
  let dovecot: Dovecot;
  let user = 0;
  const users = Array.from({ length: 8 }, (_, i) => `dmarc${i}@example.com`);
  before(async () => {
    dovecot = await startDovecot(users);
  });
  after(async () => {
    await dovecot?.stop();
  });

  /**
   * A fresh mailbox user and database for each test. Two ingest worker threads unless told
   * otherwise, whatever this machine's core count: both paths are tested everywhere.
   */
  function setup(extra = '', workers = 2) {
    const u = users[user++]!;
    const dir = tempDir();
    const db = path.join(dir, 'r.sqlite');
    const config = path.join(dir, 'c.toml');
    const write = (box: string) =>
      fs.writeFileSync(
        config,
        `[database]\npath = "${db}"\n\n[ingest]\nworkers = ${workers}\n\n[[mailbox]]\nname = "dmarc"\nhost = "127.0.0.1"\nport = ${dovecot.port}\nsecurity = "none"\nuser = "${u}"\npassword = "${PASSWORD}"\n${box}`,
      );
    write(extra);
    return { u, db, config, dir, write };
  }

  it('fetches a normal batch, stores every report and moves each message to Processed', async () => {
    const { u, config, db } = setup();
    const files = [
      'dmarc-eml/mox_google.eml',
      'dmarc-eml/freitagsrunde_yahoo.eml',
      'tlsrpt/mox_microsoft.eml',
      'failure/mailauth_arf_004.eml',
      'dmarc-eml/pdm_mimecast-weird-gzip.eml',
    ];
    for (const f of files) await dovecot.append(u, fs.readFileSync(fixture(f)));
    const r = await cli(['fetch', '--config', config, '--json']);
    assert.equal(r.code, 0, r.stderr);
    const s = JSON.parse(r.stdout) as Summary;
    assert.deepEqual(s.reports, { dmarc: 3, tlsrpt: 1, failure: 1 });
    assert.equal(s.inputs, 5);
    assert.deepEqual([await dovecot.count(u, 'INBOX'), await dovecot.count(u, 'Processed'), await dovecot.count(u, 'Invalid')], [0, 5, 0]);
    const inputs = new Database(db, { readonly: true }).prepare('SELECT input FROM reports ORDER BY input').all() as { input: string }[];
    assert.deepEqual(
      inputs.map((x) => x.input.replace(/#.*/, '')),
      ['dmarc:1', 'dmarc:2', 'dmarc:3', 'dmarc:4', 'dmarc:5'],
    );
    // A second pass finds nothing new.
    const again = JSON.parse((await cli(['fetch', '--config', config, '--json'])).stdout) as Summary;
    assert.equal(again.inputs, 0);
  });

  it('counts the same report in two messages once, and sends mails without a report to Invalid with the reason', async () => {
    const { u, config, db } = setup();
    await dovecot.append(u, reportMail('same'));
    await dovecot.append(u, reportMail('same'));
    await dovecot.append(u, fs.readFileSync(fixture('dmarc-eml/pkerrigan_test.none.eml')));
    await dovecot.append(u, mail([{ headers: 'Content-Type: application/xml', body: '<feedback><report_metadata>' }]));
    const r = await cli(['fetch', '--config', config, '--json']);
    assert.equal(r.code, 1, 'a malformed report is a failed input');
    const s = JSON.parse(r.stdout) as Summary;
    assert.deepEqual(
      [s.reports.dmarc, s.duplicates, s.skipped.map((x) => x.input), s.failed.map((x) => x.input)],
      [1, 1, ['dmarc:3'], ['dmarc:4']],
    );
    assert.deepEqual([await dovecot.count(u, 'INBOX'), await dovecot.count(u, 'Processed'), await dovecot.count(u, 'Invalid')], [0, 2, 2]);
    const rows = new Database(db, { readonly: true }).prepare('SELECT uid, outcome, reason FROM mailbox_messages ORDER BY uid').all() as {
      uid: number;
      outcome: string;
      reason: string | null;
    }[];
    assert.deepEqual(
      rows.map((x) => [x.uid, x.outcome]),
      [
        [1, 'processed'],
        [2, 'processed'],
        [3, 'invalid'],
        [4, 'invalid'],
      ],
    );
    assert.match(rows[2]!.reason!, /no report in it/);
    assert.match(rows[3]!.reason!, /not well-formed XML.*\[E_XML\]/);
  });

  it('survives Dovecot being killed mid-fetch: every report stored once, every message acknowledged once', async () => {
    const { u, config, db } = setup();
    const total = 150;
    for (let i = 0; i < total; i++) await dovecot.append(u, reportMail(`k${i}`, 40));
    const running = cli(['fetch', '--config', config, '--json']);
    // Kill the server once some, but not all, messages were moved.
    let seen = 0;
    for (let i = 0; i < 400 && seen < 10; i++) {
      await new Promise((r) => setTimeout(r, 25));
      seen = await dovecot.count(u, 'Processed').catch(() => seen);
    }
    await dovecot.kill();
    const movedBeforeKill = seen;
    await new Promise((r) => setTimeout(r, 300));
    await dovecot.start();
    const first = await running;
    // The fetch reconnected by itself, or gave up; a second pass finishes the job either way.
    const second = await cli(['fetch', '--config', config, '--json']);
    assert.equal(second.code, 0, second.stderr);
    assert.ok(movedBeforeKill > 0 && movedBeforeKill < total, `killed after ${movedBeforeKill} of ${total} messages`);
    const conn = new Database(db, { readonly: true });
    assert.equal((conn.prepare('SELECT COUNT(*) AS n FROM reports').get() as { n: number }).n, total);
    assert.equal((conn.prepare('SELECT COUNT(*) AS n FROM dmarc_records').get() as { n: number }).n, total * 40);
    assert.deepEqual(
      [await dovecot.count(u, 'INBOX'), await dovecot.count(u, 'Processed'), await dovecot.count(u, 'Invalid')],
      [0, total, 0],
    );
    const a = JSON.parse(first.stdout || '{"reports":{"dmarc":0}}') as Summary;
    const b = JSON.parse(second.stdout) as Summary;
    assert.equal(
      (a.reports.dmarc ?? 0) + (b.reports.dmarc ?? 0),
      total,
      `each report reported as stored exactly once\n${first.stdout}\n${first.stderr}`,
    );
  });

  it('refuses a nested-zip mail (4 levels of 100 entries) in bounded time and memory, sends it to Invalid, and reads the rest of the batch', async (t) => {
    const { u, config, db } = setup();
    const bomb = nestedZip(4, 100, dmarcXml({ reportId: 'amplified' }));
    const bombMail = mail([
      {
        headers:
          'Content-Type: application/zip\r\nContent-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename="reports.zip"',
        body: base64Lines(bomb),
      },
    ]);
    assert.ok(bombMail.length > 700_000 && bombMail.length < 1_000_000, `${bombMail.length} bytes`);
    await dovecot.append(u, reportMail('before'));
    await dovecot.append(u, bombMail);
    await dovecot.append(u, reportMail('after-1'));
    await dovecot.append(u, reportMail('after-2'));
    const started = Date.now();
    const r = await cli(['fetch', '--config', config, '--json'], ['--import', PEAK_RSS]);
    const seconds = (Date.now() - started) / 1000;
    const peakMiB = Number(/peak-rss-kib (\d+)/.exec(r.stderr)?.[1]) / 1024;
    t.diagnostic(`fetch took ${seconds.toFixed(1)} s, peak RSS ${peakMiB.toFixed(0)} MiB`);
    assert.equal(r.code, 1, r.stderr);
    const s = JSON.parse(r.stdout) as Omit<Summary, 'failed'> & { failed: { input: string; error: string; code: string }[] };
    assert.deepEqual([s.inputs, s.reports.dmarc, s.duplicates], [4, 3, 0]);
    assert.deepEqual(
      s.failed.map((f) => [f.input, f.code]),
      [['dmarc:2', 'E_LIMIT']],
    );
    assert.match(s.failed[0]!.error, /more than 200 archive entries and mail parts in all .*\(limit: \[limits\] max_input_leaves\)/);
    assert.deepEqual([await dovecot.count(u, 'INBOX'), await dovecot.count(u, 'Processed'), await dovecot.count(u, 'Invalid')], [0, 3, 1]);
    const conn = new Database(db, { readonly: true });
    const row = conn.prepare('SELECT outcome, reason FROM mailbox_messages WHERE uid = 2').get() as { outcome: string; reason: string };
    assert.equal(row.outcome, 'invalid');
    assert.match(row.reason, /max_input_leaves\) \[E_LIMIT\]$/);
    assert.equal((conn.prepare("SELECT COUNT(*) AS n FROM reports WHERE report_id = 'amplified'").get() as { n: number }).n, 0);
    // Before, the pass grew past 1.8 GB in 150 s without acknowledging any mail of its batch.
    assert.ok(seconds < 60, `${seconds} s`);
    assert.ok(peakMiB > 0 && peakMiB < 400, `peak RSS ${peakMiB} MiB`);
  });

  it('fails clearly on a wrong password (exit 1)', async () => {
    const { config, write } = setup();
    write('');
    fs.writeFileSync(config, fs.readFileSync(config, 'utf8').replace(`password = "${PASSWORD}"`, 'password = "wrong"'));
    const r = await cli(['fetch', '--config', config, '--json']);
    assert.equal(r.code, 1);
    const s = JSON.parse(r.stdout) as Summary;
    assert.match(s.failed[0]!.error, /^mailbox dmarc \(127\.0\.0\.1\): authentication failed for dmarc\d@example\.com/);
  });

  it('speaks implicit TLS to a self-signed server with ca_file, and refuses it without', async () => {
    const { u, config, write } = setup();
    await dovecot.append(u, reportMail('tls'));
    write(`ca_file = "${dovecot.certFile}"\n`);
    const tls = (s: string) => s.replace(`port = ${dovecot.port}\nsecurity = "none"`, `port = ${dovecot.tlsPort}\nsecurity = "tls"`);
    fs.writeFileSync(config, tls(fs.readFileSync(config, 'utf8')));
    const ok = await cli(['fetch', '--config', config, '--json']);
    assert.equal(ok.code, 0, ok.stdout + ok.stderr);
    assert.equal((JSON.parse(ok.stdout) as Summary).reports.dmarc, 1);
    write('');
    fs.writeFileSync(config, tls(fs.readFileSync(config, 'utf8')));
    const refused = await cli(['fetch', '--config', config, '--json']);
    assert.equal(refused.code, 1);
    assert.match((JSON.parse(refused.stdout) as Summary).failed[0]!.error, /TLS certificate is not trusted/);
  });

  it("creates nested folders with the server's own delimiter and namespace prefix", async () => {
    const other = await startDovecot(['dmarc@example.com'], { separator: '.', prefix: 'INBOX.' });
    try {
      const dir = tempDir();
      const config = path.join(dir, 'c.toml');
      fs.writeFileSync(
        config,
        `[database]\npath = "${path.join(dir, 'r.sqlite')}"\n\n[[mailbox]]\nname = "dmarc"\nhost = "127.0.0.1"\nport = ${other.port}\nsecurity = "none"\nuser = "dmarc@example.com"\npassword = "${PASSWORD}"\nprocessed_folder = "Archive/DMARC"\ninvalid_folder = "Archive/Invalid"\n`,
      );
      await other.append('dmarc@example.com', reportMail('ns'));
      const r = await cli(['fetch', '--config', config, '--json']);
      assert.equal(r.code, 0, r.stdout + r.stderr);
      assert.deepEqual(await other.folders('dmarc@example.com'), [
        'INBOX',
        'INBOX.Archive',
        'INBOX.Archive.DMARC',
        'INBOX.Archive.Invalid',
      ]);
      assert.equal(await other.count('dmarc@example.com', 'INBOX.Archive.DMARC'), 1);
    } finally {
      await other.stop();
    }
  });

  it('with mark_seen_only leaves messages in place, remembers its position, and rescans when UIDVALIDITY changes', async () => {
    // On the calling thread: the in-process path through the same pass.
    const { u, config, db } = setup('mark_seen_only = true\n', 1);
    for (const id of ['s1', 's2', 's3']) await dovecot.append(u, reportMail(id));
    const first = JSON.parse((await cli(['fetch', '--config', config, '--json'])).stdout) as Summary;
    assert.equal(first.reports.dmarc, 3);
    assert.equal(await dovecot.count(u, 'INBOX'), 3);
    assert.equal(await dovecot.count(u, 'Processed'), 0);
    await dovecot.append(u, reportMail('s4'));
    const second = JSON.parse((await cli(['fetch', '--config', config, '--json'])).stdout) as Summary;
    assert.deepEqual([second.inputs, second.reports.dmarc], [1, 1]);
    // Make Dovecot renumber the folder (as after a restore or a migration): a new UIDVALIDITY.
    const maildir = path.join(dovecot.dir, 'home', u, 'Maildir');
    for (const f of fs.readdirSync(maildir))
      if (f.startsWith('dovecot-uidlist') || f.startsWith('dovecot.index')) fs.rmSync(path.join(maildir, f));
    const before = new Database(db, { readonly: true }).prepare('SELECT uidvalidity FROM mailbox_state').get() as { uidvalidity: number };
    const third = JSON.parse((await cli(['fetch', '--config', config, '--json'])).stdout) as Summary;
    assert.deepEqual([third.inputs, third.reports.dmarc, third.duplicates], [4, 0, 4]);
    const afterwards = new Database(db, { readonly: true }).prepare('SELECT uidvalidity, last_uid FROM mailbox_state').get() as {
      uidvalidity: number;
      last_uid: number;
    };
    assert.notEqual(afterwards.uidvalidity, before.uidvalidity);
    assert.equal(afterwards.last_uid, 4);
  });
});
