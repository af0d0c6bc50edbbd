import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import Database from 'better-sqlite3';
import { CLI, tempDir } from './helpers/common.js';
import { PASSWORD, findDovecot, startDovecot, type Dovecot } from '../devtools/dovecot.js';
import { base64Lines, dmarcXml, gzip, mail, record } from './helpers/synth.js';

const haveDovecot = findDovecot() !== null;
if (!haveDovecot && process.env.CI) throw new Error('dovecot is missing under CI');

function reportMail(id: string, n = 1): string {
  const xml = dmarcXml({ reportId: id, records: Array.from({ length: n }, (_, i) => record({ ip: `198.51.100.${(i % 250) + 1}` })) });
  return mail([
    {
      headers:
        'Content-Type: application/gzip\r\nContent-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename="r.xml.gz"',
      body: base64Lines(gzip(xml)),
    },
  ]);
}

async function waitFor<T>(what: string, timeoutMs: number, probe: () => Promise<T | null | undefined | false>): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      const v = await probe();
      if (v) return v;
    } catch (err) {
      last = err;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${String(last)}` : ''}`);
}

interface Running {
  proc: ChildProcess;
  url: string;
  stdout: () => string;
  stderr: () => string;
  exited: Promise<{ code: number | null; at: number }>;
}

async function startRun(config: string): Promise<Running> {
  const proc = spawn(process.execPath, [CLI, 'run', '--config', config], { env: { PATH: process.env.PATH ?? '' } });
  let stdout = '';
  let stderr = '';
  proc.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
  proc.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<{ code: number | null; at: number }>((resolve) =>
    proc.on('exit', (code) => resolve({ code, at: Date.now() })),
  );
  const url = await waitFor('the run banner', 10_000, async () => /on (http:\/\/\S+)/.exec(stdout)?.[1]);
  return { proc, url, stdout: () => stdout, stderr: () => stderr, exited };
}

async function health(url: string): Promise<{ status: number; body: { status: string; last_success: string | null } }> {
  const res = await fetch(`${url}/healthz`);
  return { status: res.status, body: (await res.json()) as never };
}

/**
 * Keys that appear twice in one object of a JSON text. JSON.parse keeps the last silently, so
 * `{"stage":"poll","stage":"fetch"}` has to be read token by token.
 */
function duplicateKeys(json: string): string[] {
  const dups: string[] = [];
  const stack: (Set<string> | null)[] = [];
  for (let i = 0; i < json.length; i++) {
    const c = json[i];
    if (c === '{') stack.push(new Set());
    else if (c === '[') stack.push(null);
    else if (c === '}' || c === ']') stack.pop();
    else if (c === '"') {
      let j = i + 1;
      while (json[j] !== '"') j += json[j] === '\\' ? 2 : 1;
      const top = stack.at(-1);
      // A string followed by ":" in an object is a key.
      if (top && /^\s*:/.test(json.slice(j + 1, j + 3))) {
        const key = JSON.parse(json.slice(i, j + 1)) as string;
        if (top.has(key)) dups.push(key);
        top.add(key);
      }
      i = j;
    }
  }
  return dups;
}

/** The last poll error, from the authenticated /api/status. */
async function lastError(url: string): Promise<string | undefined> {
  const res = await fetch(`${url}/api/status`, { headers: { authorization: 'Bearer metrics-token' } });
  return ((await res.json()) as { worker: { lastError: { message: string } | null } }).worker.lastError?.message;
}

function countReports(db: string): number {
  if (!fs.existsSync(db)) return 0;
  const d = new Database(db, { readonly: true, fileMustExist: true });
  try {
    return (d.prepare(`SELECT COUNT(*) AS n FROM reports`).get() as { n: number }).n;
  } catch {
    return 0;
  } finally {
    d.close();
  }
}

describe('ruawatch run against a real Dovecot', { skip: !haveDovecot && 'dovecot is not installed' }, () => {
  let dovecot: Dovecot;
  const running: Running[] = [];
  before(async () => {
    dovecot = await startDovecot(['run@example.com', 'stop@example.com', 'idle@example.com', 'half@example.com', 'logs@example.com']);
  });
  after(async () => {
    for (const r of running) r.proc.kill('SIGKILL');
    await dovecot?.stop();
  });

  function setup(user: string, schedule = 'poll = "* * * * * *"', extraBoxes = ''): { db: string; config: string } {
    const dir = tempDir();
    const db = path.join(dir, 'r.sqlite');
    const config = path.join(dir, 'c.toml');
    fs.writeFileSync(
      config,
      `[database]\npath = "${db}"\n\n[[mailbox]]\nname = "dmarc"\nhost = "127.0.0.1"\nport = ${dovecot.port}\nsecurity = "none"\nuser = "${user}"\npassword = "${PASSWORD}"\n${extraBoxes}\n` +
        `[analysis]\nreverse_dns = false\n\n[schedule]\n${schedule}\nretry_seconds = 1\n\n[web]\nlisten = "127.0.0.1:0"\ntoken = "metrics-token"\n\n[log]\nlevel = "info"\n`,
    );
    return { db, config };
  }

  it('stores a report appended to the mailbox, shows it on /metrics, and reports a dead server on /healthz until it is back', async (t) => {
    const { db, config } = setup('run@example.com');
    const run = await startRun(config);
    running.push(run);
    await waitFor('a first successful poll', 10_000, async () => (await health(run.url)).body.last_success);

    await dovecot.append('run@example.com', reportMail('run-1', 3));
    await waitFor('the report in the database', 10_000, async () => countReports(db) === 1);
    const metrics = await waitFor('the report on /metrics', 5_000, async () => {
      const text = await (await fetch(`${run.url}/metrics`, { headers: { authorization: 'Bearer metrics-token' } })).text();
      return text.includes('ruawatch_reports_ingested_total{kind="dmarc"} 1') && text;
    });
    assert.match(metrics, /^ruawatch_reports_stored\{kind="dmarc"\} 1$/m);
    assert.match(metrics, /^# TYPE ruawatch_polls_total counter$/m);
    assert.equal((await fetch(`${run.url}/metrics`)).status, 401);
    assert.equal(await dovecot.count('run@example.com', 'Processed'), 1);

    await dovecot.kill();
    const down = await waitFor('/healthz to turn 503', 20_000, async () => {
      const h = await health(run.url);
      return h.status === 503 && h;
    });
    assert.equal(down.body.status, 'failing');
    // /healthz says why in general terms; the error itself is behind the auth.
    assert.doesNotMatch(JSON.stringify(down.body), /mailbox dmarc|127\.0\.0\.1|run@example\.com/);
    assert.match((await lastError(run.url)) ?? '', /mailbox dmarc/);

    await dovecot.start();
    const up = await waitFor('/healthz to turn 200 again', 20_000, async () => {
      const h = await health(run.url);
      return h.status === 200 && h;
    });
    assert.equal(up.body.status, 'ok');
    // Reports that arrived while the server was down are picked up once it is back.
    await dovecot.append('run@example.com', reportMail('run-2', 2));
    await waitFor('the second report', 10_000, async () => countReports(db) === 2);

    const t0 = Date.now();
    run.proc.kill('SIGTERM');
    const { code, at } = await run.exited;
    assert.equal(code, 0, run.stderr());
    assert.ok(at - t0 < 10_000, `stopped in ${at - t0} ms`);
    t.diagnostic(`stopped ${at - t0} ms after SIGTERM`);
  });

  it('says where the dashboard is; its log lines carry each key once; a failed input is a warning of its own', async () => {
    assert.deepEqual(duplicateKeys('{"stage":"poll","a":{"stage":1},"stage":"fetch"}'), ['stage']);
    const { db, config } = setup('logs@example.com');
    fs.writeFileSync(config, fs.readFileSync(config, 'utf8').replace('level = "info"', 'level = "debug"'));
    await dovecot.append('logs@example.com', reportMail('logs-1', 2));
    const broken = mail([
      {
        headers: 'Content-Type: application/gzip\r\nContent-Transfer-Encoding: base64',
        body: base64Lines(gzip(dmarcXml({ reportId: 'cut' })).subarray(0, 40)),
      },
    ]);
    await dovecot.append('logs@example.com', broken);
    const run = await startRun(config);
    running.push(run);
    assert.match(run.stdout(), /^ruawatch: running; the dashboard, \/healthz and \/metrics on http:\/\/127\.0\.0\.1:\d+\n$/);
    await waitFor('the report', 10_000, async () => countReports(db) === 1);
    await waitFor('the poll to end', 10_000, async () => run.stderr().includes('"msg":"poll done"'));
    run.proc.kill('SIGTERM');
    assert.equal((await run.exited).code, 0, run.stderr());
    const lines = run.stderr().trim().split('\n');
    assert.ok(lines.length > 10, run.stderr());
    for (const line of lines) assert.deepEqual(duplicateKeys(line), [], line);
    const failed = lines.map((l) => JSON.parse(l) as { level: number; msg: string; input?: string }).filter((l) => l.level === 40);
    assert.deepEqual(
      failed.map((l) => [l.msg, l.input]),
      [['input failed', 'dmarc:2']],
    );
  });

  it('SIGTERM in the middle of a long poll: exits 0 within 10 s, and nothing is lost or counted twice', async (t) => {
    const user = 'stop@example.com';
    const total = 300;
    for (let i = 0; i < total; i++) await dovecot.append(user, reportMail(`stop-${i}`, 150));
    const { db, config } = setup(user);
    const run = await startRun(config);
    running.push(run);
    await waitFor('the poll to be under way', 20_000, async () => countReports(db) >= 20);
    const t0 = Date.now();
    run.proc.kill('SIGTERM');
    const { code, at } = await run.exited;
    assert.equal(code, 0, run.stderr());
    assert.ok(at - t0 < 10_000, `stopped in ${at - t0} ms`);
    const stored = countReports(db);
    t.diagnostic(`stopped ${at - t0} ms after SIGTERM with ${stored} of ${total} messages done`);
    assert.ok(stored < total, `the poll was cut short (${stored} of ${total} stored)`);
    // Every committed report was acknowledged before the exit, and only those.
    const processed = await dovecot.count(user, 'Processed');
    assert.equal(processed, stored);
    assert.equal(await dovecot.count(user, 'INBOX'), total - stored);

    // The next pass reads the rest: every report stored once, nothing counted twice.
    const rest = await new Promise<string>((resolve) => {
      const p = spawn(process.execPath, [CLI, 'fetch', '--config', config, '--json'], { env: { PATH: process.env.PATH ?? '' } });
      let out = '';
      p.stdout.on('data', (d: Buffer) => (out += d.toString()));
      p.on('close', () => resolve(out));
    });
    const summary = JSON.parse(rest) as { reports: { dmarc: number }; duplicates: number };
    assert.deepEqual([summary.reports.dmarc, summary.duplicates], [total - stored, 0]);
    assert.equal(countReports(db), total);
    assert.deepEqual([await dovecot.count(user, 'INBOX'), await dovecot.count(user, 'Processed')], [0, total]);
  });

  it('with idle = true, picks a new report up within seconds when polls are a year apart', async (t) => {
    const user = 'idle@example.com';
    const { db, config } = setup(user, 'poll = "0 0 1 1 *"\nidle = true');
    const run = await startRun(config);
    running.push(run);
    await waitFor('the first poll, at start', 10_000, async () => (await health(run.url)).body.last_success);
    await waitFor('the IDLE connection', 10_000, async () => run.stderr().includes('watching for new mail'));
    const t0 = Date.now();
    await dovecot.append(user, reportMail('idle-1', 2));
    await waitFor('the report, woken by IDLE', 5_000, async () => countReports(db) === 1);
    t.diagnostic(`stored ${Date.now() - t0} ms after APPEND`);
    assert.equal(await dovecot.count(user, 'Processed'), 1);
    run.proc.kill('SIGTERM');
    assert.equal((await run.exited).code, 0, run.stderr());
  });

  it('a mailbox that cannot be read fails the poll on /healthz, but the others are read and alerts still run', async () => {
    const broken = `\n[[mailbox]]\nname = "tlsrpt"\nhost = "127.0.0.1"\nport = ${dovecot.port}\nsecurity = "none"\nuser = "half@example.com"\npassword = "wrong"\n`;
    const { db, config } = setup('half@example.com', 'poll = "0 0 1 1 *"', broken);
    await dovecot.append('half@example.com', reportMail('half-1', 2));
    const run = await startRun(config);
    running.push(run);
    const h = await waitFor('the first poll to fail', 10_000, async () => {
      const x = await health(run.url);
      return x.status === 503 && x;
    });
    assert.equal(h.body.status, 'failing');
    assert.match((await lastError(run.url)) ?? '', /mailbox tlsrpt \(127\.0\.0\.1\): authentication failed/);
    assert.equal(countReports(db), 1);
    assert.match(run.stderr(), /"msg":"alerts evaluated"/);
    run.proc.kill('SIGTERM');
    assert.equal((await run.exited).code, 0, run.stderr());
  });
});
