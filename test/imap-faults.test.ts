/**
 * Faults around `fetch` and `run` with a real Dovecot: two readers of one mailbox, a database
 * that fills up, is locked or is read-only, a server that stops answering, and connections that
 * never succeed. Each ends with every report stored once and every message acknowledged once.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import Database from 'better-sqlite3';
import { pino } from 'pino';
import { loadConfig } from '../src/config/load.js';
import { ImapMailbox } from '../src/sources/imap.js';
import { openDb } from '../src/store/db.js';
import { CLI, tempDir } from './helpers/common.js';
import { PASSWORD, findDovecot, startDovecot, type Dovecot } from '../devtools/dovecot.js';
import { base64Lines, dmarcXml, gzip, mail, record } from './helpers/synth.js';

const haveDovecot = findDovecot() !== null;
if (!haveDovecot && process.env.CI) throw new Error('dovecot is missing under CI');

/** A small file system of our own to fill (tmpfs): needs root. Without it those tests are skipped, loudly. */
const canMount = (() => {
  if (process.getuid?.() !== 0) return false;
  const dir = tempDir('ruawatch-mount-');
  const ok = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', dir]).status === 0;
  if (ok) spawnSync('umount', [dir]);
  fs.rmSync(dir, { recursive: true, force: true });
  return ok;
})();
if (!canMount) process.stderr.write('\n*** cannot mount a tmpfs (needs root): the full-disk tests are SKIPPED ***\n');

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
  ms: number;
}

type Summary = {
  inputs: number;
  reports: Record<string, number>;
  duplicates: number;
  failed: { input: string; error: string; code: string }[];
  skipped: { input: string; reason: string }[];
};

/** `ruawatch ARGS`, killed after `killAfterMs` if it has not ended (a fetch that hangs). */
function cli(args: string[], opts: { killAfterMs?: number; uid?: number } = {}): Promise<Run> {
  const t0 = Date.now();
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [CLI, ...args], {
      env: { PATH: process.env.PATH ?? '' },
      ...(opts.uid !== undefined ? { uid: opts.uid, gid: opts.uid } : {}),
    });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => p.kill('SIGKILL'), opts.killAfterMs ?? 120_000);
    p.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr, ms: Date.now() - t0 });
    });
  });
}

function summaryOf(r: Run): Summary {
  try {
    return JSON.parse(r.stdout) as Summary;
  } catch {
    throw new Error(`no JSON summary (exit ${r.code}):\n${r.stdout}\n${r.stderr}`);
  }
}

function reportMail(id: string, n = 1): Buffer {
  const xml = dmarcXml({ reportId: id, records: Array.from({ length: n }, (_, i) => record({ ip: `192.0.2.${(i % 250) + 1}` })) });
  return Buffer.from(
    mail([
      {
        headers:
          'Content-Type: application/gzip\r\nContent-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename="r.xml.gz"',
        body: base64Lines(gzip(xml)),
      },
    ]),
  );
}

/** Appends many messages over one connection. */
async function appendAll(dovecot: Dovecot, user: string, messages: Buffer[]): Promise<void> {
  const c = dovecot.client(user);
  await c.connect();
  try {
    for (const m of messages) await c.append('INBOX', m);
  } finally {
    await c.logout();
  }
}

async function folders(dovecot: Dovecot, user: string): Promise<[number, number, number]> {
  return [await dovecot.count(user, 'INBOX'), await dovecot.count(user, 'Processed'), await dovecot.count(user, 'Invalid')];
}

function dbCount(file: string, sql: string): number {
  const d = new Database(file, { readonly: true, fileMustExist: true });
  try {
    return (d.prepare(sql).get() as { n: number }).n;
  } finally {
    d.close();
  }
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

function writeConfig(dir: string, dovecot: Dovecot, user: string, extra: { db?: string; box?: string; top?: string } = {}) {
  const db = extra.db ?? path.join(dir, 'r.sqlite');
  const config = path.join(dir, 'c.toml');
  fs.writeFileSync(
    config,
    `[database]\npath = "${db}"\n\n[ingest]\nworkers = 2\n${extra.top ?? ''}\n[[mailbox]]\nname = "dmarc"\nhost = "127.0.0.1"\nport = ${dovecot.port}\nsecurity = "none"\nuser = "${user}"\npassword = "${PASSWORD}"\n${extra.box ?? ''}`,
  );
  return { db, config };
}

describe('IMAP faults against a real Dovecot', { skip: !haveDovecot && 'dovecot is not installed' }, () => {
  let dovecot: Dovecot;
  const mounts: string[] = [];
  before(async () => {
    dovecot = await startDovecot(['twice@example.com', 'full@example.com', 'locked@example.com', 'ro@example.com', 'port@example.com']);
  });
  after(async () => {
    for (const m of mounts) spawnSync('umount', ['-l', m]);
    await dovecot?.stop();
  });

  function mountTmpfs(size: string): string {
    const dir = tempDir('ruawatch-full-');
    const r = spawnSync('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', dir], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    mounts.push(dir);
    return dir;
  }

  it('two fetch at once on one mailbox: one reads, the other skips it and says so; no copies in Processed, nothing invalid', async () => {
    const user = 'twice@example.com';
    const total = 1000;
    await appendAll(
      dovecot,
      user,
      Array.from({ length: total }, (_, i) => reportMail(`twice-${i}`)),
    );
    const { db, config } = writeConfig(tempDir(), dovecot, user);
    // The database exists before both start, as beside a running `ruawatch run`.
    openDb(db).close();
    const [a, b] = await Promise.all([cli(['fetch', '--config', config, '--json']), cli(['fetch', '--config', config, '--json'])]);
    assert.equal(a.code, 0, a.stderr);
    assert.equal(b.code, 0, b.stderr);
    const [sa, sb] = [summaryOf(a), summaryOf(b)];
    assert.deepEqual(await folders(dovecot, user), [0, total, 0]);
    assert.equal(dbCount(db, 'SELECT COUNT(*) AS n FROM reports'), total);
    assert.equal(dbCount(db, `SELECT COUNT(*) AS n FROM mailbox_messages WHERE outcome = 'invalid'`), 0);
    assert.equal(sa.reports.dmarc! + sb.reports.dmarc!, total);
    assert.equal(sa.duplicates + sb.duplicates, 0);
    assert.deepEqual([...sa.failed, ...sb.failed], []);
    // Whichever came second found the mailbox busy (or, started after the first ended, empty).
    const second = sa.reports.dmarc === total ? sb : sa;
    if (second.skipped.length) {
      assert.deepEqual(
        second.skipped.map((s) => s.input),
        ['dmarc'],
      );
      assert.match(second.skipped[0]!.reason, /^not read: another ruawatch \(fetch, pid \d+ on .+\) has been reading this mailbox since /);
    } else {
      assert.equal(second.inputs, 0);
    }
    assert.equal(dbCount(db, 'SELECT COUNT(*) AS n FROM mailbox_leases'), 0, 'leases are released');
  });

  it(
    'a database that fills up during fetch: SQLITE_FULL with its path, nothing acknowledged, no reconnect; all stored once when there is room',
    {
      skip: !canMount && 'cannot mount a tmpfs',
    },
    async () => {
      const user = 'full@example.com';
      // Small reports around one of 100,000 records, which cannot fit in 4 MiB.
      const messages = [
        ...Array.from({ length: 5 }, (_, i) => reportMail(`full-a${i}`, 20)),
        reportMail('full-big', 100_000),
        ...Array.from({ length: 5 }, (_, i) => reportMail(`full-b${i}`, 20)),
      ];
      await appendAll(dovecot, user, messages);
      const fsDir = mountTmpfs('4m');
      const { db, config } = writeConfig(tempDir(), dovecot, user, { db: path.join(fsDir, 'r.sqlite') });
      const first = await cli(['fetch', '--config', config, '--json'], { killAfterMs: 60_000 });
      assert.equal(first.code, 1, first.stderr);
      const s = summaryOf(first);
      const box = s.failed.find((f) => f.input === 'dmarc');
      assert.ok(box, first.stdout);
      assert.equal(box.code, 'E_DB');
      assert.match(box.error, new RegExp(`^mailbox dmarc: database ${db}: database or disk is full \\[SQLITE_FULL\\]`));
      assert.doesNotMatch(first.stdout + first.stderr, /cannot rollback|reconnecting/);
      // Nothing acknowledged: the batch holding the failure stays in the folder, nothing went to Invalid.
      assert.deepEqual(await folders(dovecot, user), [messages.length, 0, 0]);
      assert.ok(s.inputs <= messages.length, `${s.inputs} inputs for ${messages.length} mails`);

      // Room again: every report stored once, every message in Processed once.
      assert.equal(spawnSync('mount', ['-o', 'remount,size=256m', fsDir]).status, 0);
      const second = await cli(['fetch', '--config', config, '--json']);
      assert.equal(second.code, 0, second.stdout + second.stderr);
      assert.equal(summaryOf(second).inputs, messages.length);
      assert.equal(dbCount(db, 'SELECT COUNT(*) AS n FROM reports'), messages.length);
      assert.equal(dbCount(db, `SELECT COUNT(*) AS n FROM dmarc_records`), 10 * 20 + 100_000);
      assert.deepEqual(await folders(dovecot, user), [0, messages.length, 0]);
    },
  );

  it(
    'a database that cannot be created on a full disk is not left behind as an empty file',
    { skip: !canMount && 'cannot mount a tmpfs' },
    async () => {
      const fsDir = mountTmpfs('64k');
      fs.writeFileSync(path.join(fsDir, 'filler'), Buffer.alloc(60 * 1024));
      const db = path.join(fsDir, 'new.sqlite');
      const { config } = writeConfig(tempDir(), dovecot, 'full@example.com', { db });
      const r = await cli(['fetch', '--config', config, '--json']);
      assert.equal(r.code, 1);
      assert.match(r.stderr, /database or disk is full/);
      assert.deepEqual(fs.readdirSync(fsDir), ['filler']);
    },
  );

  it('a database locked by another process during fetch: the pass stops with SQLITE_BUSY and the path; nothing lost or counted twice', async () => {
    const user = 'locked@example.com';
    const total = 150;
    await appendAll(
      dovecot,
      user,
      Array.from({ length: total }, (_, i) => reportMail(`locked-${i}`, 40)),
    );
    const { db, config } = writeConfig(tempDir(), dovecot, user);
    const running = cli(['fetch', '--config', config, '--json'], { killAfterMs: 90_000 });
    await waitFor('a first acknowledged batch', 30_000, async () => (await dovecot.count(user, 'Processed')) > 0);
    // Another process takes the write lock and keeps it.
    const holder = new Database(db, { timeout: 10_000 });
    holder.exec('BEGIN EXCLUSIVE');
    const lockedAt = Date.now();
    const first = await running;
    holder.exec('ROLLBACK');
    holder.close();
    const waited = Date.now() - lockedAt;
    assert.equal(first.code, 1, first.stderr);
    // busy_timeout is 5 s: the pass stops at the first, not after one wait per message in the
    // mailbox (the few messages already handed to worker threads still wait theirs, one at a time).
    assert.ok(waited < 40_000, `the fetch ended ${waited} ms after the lock was taken`);
    const s = summaryOf(first);
    const box = s.failed.find((f) => f.input === 'dmarc');
    assert.ok(box, first.stdout);
    assert.match(box.error, new RegExp(`database ${db}: database is locked \\[SQLITE_BUSY\\]`));
    assert.doesNotMatch(first.stderr, /reconnecting/);
    const [inbox, processed, invalid] = await folders(dovecot, user);
    assert.deepEqual([inbox + processed, invalid], [total, 0]);
    assert.ok(s.inputs <= total);

    const second = await cli(['fetch', '--config', config, '--json']);
    assert.equal(second.code, 0, second.stderr);
    // Reports committed but not acknowledged by the first pass come back as duplicates: each once.
    const s2 = summaryOf(second);
    assert.equal(s.reports.dmarc! + s2.reports.dmarc! + s2.duplicates, total);
    assert.equal(dbCount(db, 'SELECT COUNT(*) AS n FROM reports'), total);
    assert.deepEqual(await folders(dovecot, user), [0, total, 0]);
  });

  it(
    'a read-only database: fetch stops at once naming the file, without a reconnect, leaving every message where it was',
    { skip: !canMount && 'cannot mount (needs root)' },
    async () => {
      const user = 'ro@example.com';
      const total = 10;
      await appendAll(
        dovecot,
        user,
        Array.from({ length: total }, (_, i) => (i === 3 ? Buffer.from('Subject: hello\r\n\r\nno report\r\n') : reportMail(`ro-${i}`))),
      );
      const dir = tempDir();
      openDb(path.join(dir, 'r.sqlite')).close();
      // The same folder through a read-only bind mount: EROFS, which refuses root too.
      const ro = tempDir('ruawatch-ro-');
      for (const args of [
        ['--bind', dir, ro],
        ['-o', 'remount,ro,bind', ro],
      ]) {
        const m = spawnSync('mount', args, { encoding: 'utf8' });
        assert.equal(m.status, 0, m.stderr);
      }
      mounts.push(ro);
      const { db, config } = writeConfig(tempDir(), dovecot, user, { db: path.join(ro, 'r.sqlite') });
      const r = await cli(['fetch', '--config', config, '--json'], { killAfterMs: 60_000 });
      // A database the configuration puts where it cannot be written: a configuration error.
      assert.equal(r.code, 2, r.stderr);
      assert.ok(r.ms < 15_000, `took ${r.ms} ms`);
      assert.match(r.stdout + r.stderr, new RegExp(`database ${db}: .*(read-only|readonly|not writable)`));
      assert.doesNotMatch(r.stderr, /reconnecting/);
      assert.deepEqual(await folders(dovecot, user), [total, 0, 0]);
    },
  );

  it('a wrong port, TLS against a plain port, and plain IMAP against a TLS port fail at once with a hint', async () => {
    const { config } = writeConfig(tempDir(), dovecot, 'port@example.com');
    const text = fs.readFileSync(config, 'utf8');
    const unused = await new Promise<number>((resolve) => {
      const srv = net.createServer();
      srv.listen(0, '127.0.0.1', () => {
        const port = (srv.address() as { port: number }).port;
        srv.close(() => resolve(port));
      });
    });
    const cases: [string, string, RegExp][] = [
      [
        'wrong port',
        text.replace(`port = ${dovecot.port}`, `port = ${unused}`),
        new RegExp(`connect ECONNREFUSED 127\\.0\\.0\\.1:${unused}; nothing accepts connections on port ${unused}: a wrong port\\?`),
      ],
      [
        'TLS on a plain port',
        text.replace('security = "none"', 'security = "tls"'),
        new RegExp(
          `127\\.0\\.0\\.1:${dovecot.port} does not answer in TLS \\(ERR_SSL_WRONG_VERSION_NUMBER\\); it looks like a plain IMAP port: set security = "starttls"`,
        ),
      ],
      [
        'plain IMAP on the TLS port',
        text.replace(`port = ${dovecot.port}`, `port = ${dovecot.tlsPort}`) + 'timeout_seconds = 2\n',
        /no IMAP greeting within 2 s: if port \d+ speaks implicit TLS \(usually 993\), set security = "tls"/,
      ],
    ];
    for (const [what, toml, expected] of cases) {
      fs.writeFileSync(config, toml);
      const r = await cli(['fetch', '--config', config, '--json']);
      assert.equal(r.code, 1, `${what}: ${r.stderr}`);
      assert.ok(r.ms < 8_000, `${what}: took ${r.ms} ms`);
      assert.match(summaryOf(r).failed[0]!.error, expected, what);
      assert.doesNotMatch(r.stderr, /reconnecting/, what);
    }
  });
});

describe('a frozen IMAP server (SIGSTOP)', { skip: !haveDovecot && 'dovecot is not installed' }, () => {
  let dovecot: Dovecot;
  const procs: ChildProcess[] = [];
  before(async () => {
    dovecot = await startDovecot(['frozen@example.com', 'stuck@example.com', 'cutoff@example.com']);
  });
  after(async () => {
    dovecot?.thaw();
    for (const p of procs) p.kill('SIGKILL');
    await dovecot?.stop();
  });

  it('fetch notices within its timeouts, stops at its deadline, and the next fetch finishes the job once', async () => {
    const user = 'frozen@example.com';
    const total = 150;
    await appendAll(
      dovecot,
      user,
      Array.from({ length: total }, (_, i) => reportMail(`frozen-${i}`, 40)),
    );
    // The deadline counts from the start of the pass, and the freeze comes after the first batch
    // (several seconds in on a loaded machine): it must leave the 2 s idle-read timeout time to
    // notice the silence first. (With 8 s, a first batch that took 6 s or more under load let the
    // deadline stop the pass before the timeout noticed anything, and nothing reconnected.)
    const { db, config } = writeConfig(tempDir(), dovecot, user, {
      box: 'timeout_seconds = 2\n',
      top: '\n[schedule]\npoll_timeout_seconds = 20\n',
    });
    const running = cli(['fetch', '--config', config, '--json'], { killAfterMs: 60_000 });
    await waitFor('a first acknowledged batch', 30_000, async () => (await dovecot.count(user, 'Processed')) > 0);
    dovecot.freeze();
    const frozenAt = Date.now();
    let first: Run;
    try {
      first = await running;
    } finally {
      dovecot.thaw();
    }
    const took = Date.now() - frozenAt;
    // At most the deadline (20 s from the start) and its grace (10 s more), whatever the server does.
    assert.ok(took < 32_000, `fetch ended ${took} ms after the freeze`);
    assert.equal(first.code, 1, first.stderr);
    // The idle-read timeout (2 s) noticed the silence: the connection was dropped and opened again.
    assert.match(first.stderr, /mailbox connection lost; reconnecting/);
    const s = summaryOf(first);
    assert.equal(s.failed.at(-1)!.code, 'E_TIMEOUT', first.stdout);
    assert.match(s.failed.at(-1)!.error, /^mailbox dmarc: the pass stopped at its deadline \(\[schedule\] poll_timeout_seconds = 20\)/);

    const second = await cli(['fetch', '--config', config, '--json']);
    assert.equal(second.code, 0, second.stderr);
    assert.equal(dbCount(db, 'SELECT COUNT(*) AS n FROM reports'), total);
    assert.deepEqual(await folders(dovecot, user), [0, total, 0]);
  });

  it('a server that stops answering between the login and the folder: the kill signal of the pass cuts the opening off at once', async () => {
    const user = 'cutoff@example.com';
    // Between the client and Dovecot: passes the login through, then swallows everything from the
    // first command that opens folders, as a server that hangs right after the login would.
    let swallowing = false;
    const sockets: net.Socket[] = [];
    const proxy = net.createServer((c) => {
      const up = net.connect(dovecot.port, '127.0.0.1');
      sockets.push(c, up);
      up.on('data', (d: Buffer) => {
        if (!swallowing) c.write(d);
      });
      c.on('data', (d: Buffer) => {
        if (/ (CREATE|SELECT|EXAMINE) /i.test(d.toString('latin1'))) swallowing = true;
        if (!swallowing) up.write(d);
      });
      for (const s of [c, up]) s.on('error', () => undefined).on('close', () => (s === c ? up : c).destroy());
    });
    await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
    try {
      const dir = tempDir();
      const file = path.join(dir, 'c.toml');
      const port = (proxy.address() as net.AddressInfo).port;
      fs.writeFileSync(
        file,
        `[database]\npath = "${path.join(dir, 'r.sqlite')}"\n\n[[mailbox]]\nname = "dmarc"\nhost = "127.0.0.1"\nport = ${port}\nsecurity = "none"\nuser = "${user}"\npassword = "${PASSWORD}"\ntimeout_seconds = 30\n`,
      );
      const box = loadConfig(file, {}).config.mailbox[0]!;
      const kill = new AbortController();
      const opening = new ImapMailbox(box, pino({ level: 'silent' })).open(kill.signal);
      opening.catch(() => undefined);
      await waitFor('the login, then a command that gets no answer', 10_000, () => Promise.resolve(swallowing));
      await new Promise((r) => setTimeout(r, 200));
      const killedAt = Date.now();
      kill.abort();
      // Before, the signal was let go once logged in: the opening waited for timeout_seconds (30 s).
      await assert.rejects(opening, (e: Error) => /mailbox dmarc/.test(e.message));
      const took = Date.now() - killedAt;
      assert.ok(took < 5_000, `the opening ended ${took} ms after the kill`);
    } finally {
      for (const s of sockets) s.destroy();
      proxy.close();
    }
  });

  it('run: /healthz turns unhealthy while a poll hangs past its deadline, and healthy again once the server answers', async () => {
    const user = 'stuck@example.com';
    await appendAll(dovecot, user, [reportMail('stuck-1')]);
    const dir = tempDir();
    const { config } = writeConfig(dir, dovecot, user, {
      top: '\n[schedule]\npoll = "* * * * * *"\nretry_seconds = 1\npoll_timeout_seconds = 3\n\n[analysis]\nreverse_dns = false\n\n[web]\nlisten = "127.0.0.1:0"\n\n[log]\nlevel = "info"\n',
    });
    const proc = spawn(process.execPath, [CLI, 'run', '--config', config], { env: { PATH: process.env.PATH ?? '' } });
    procs.push(proc);
    let stdout = '';
    let stderr = '';
    proc.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    proc.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<number | null>((resolve) => proc.on('exit', (code) => resolve(code)));
    const url = await waitFor('the run banner', 10_000, async () => /on (http:\/\/\S+)/.exec(stdout)?.[1]);
    type Health = { status: string; polling: boolean; poll_started: string | null; poll_deadline: string | null };
    const health = async () => {
      const res = await fetch(`${url}/healthz`);
      return { code: res.status, body: (await res.json()) as Health };
    };
    await waitFor('a first successful poll', 15_000, async () => (await health()).body.status === 'ok');

    dovecot.freeze();
    let stuck: { code: number; body: Health };
    try {
      stuck = await waitFor('/healthz to say the poll is stuck', 15_000, async () => {
        const h = await health();
        return h.code === 503 && h.body.status === 'stuck' && h;
      });
      // The poll is cut off (deadline 3 s, then 3 s of grace): the poll fails rather than hangs.
      await waitFor('the stuck poll to be cut off', 15_000, async () => /the pass stopped at its deadline/.test(stderr));
    } finally {
      dovecot.thaw();
    }
    assert.ok(stuck.body.poll_started && stuck.body.poll_deadline && stuck.body.poll_deadline < new Date().toISOString());
    const healthy = await waitFor('/healthz to be ok again', 30_000, async () => {
      const h = await health();
      return h.code === 200 && h.body.status === 'ok' && h;
    });
    assert.equal(healthy.body.polling === false || healthy.body.poll_deadline !== null, true);
    await dovecot.append(user, reportMail('stuck-2'));
    await waitFor('the next report', 15_000, async () => (await dovecot.count(user, 'Processed')) === 2);
    proc.kill('SIGTERM');
    assert.equal(await exited, 0, stderr);
  });
});
