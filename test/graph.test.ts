/**
 * Mailboxes of kind "graph" (Microsoft 365 through Microsoft Graph) against a loopback stand-in
 * that checks every request against Microsoft's documented API (test/helpers/graph-server.ts), with
 * tokens from the identity platform stand-in (test/helpers/oauth-server.ts): the same
 * acknowledge-after-commit, duplicate and crash tests as the IMAP source, and Graph's own paging
 * and throttling.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import Database from 'better-sqlite3';
import { CLI, fixture, tempDir } from './helpers/common.js';
import { GraphServer } from './helpers/graph-server.js';
import { OAuthServer } from './helpers/oauth-server.js';
import { base64Lines, dmarcXml, gzip, mail, record } from './helpers/synth.js';

const TENANT = 'contoso.onmicrosoft.com';

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

type Summary = {
  inputs: number;
  reports: Record<string, number>;
  duplicates: number;
  failed: { input: string; error: string; code: string }[];
  skipped: { input: string; reason: string }[];
};

function start(args: string[]): { proc: ChildProcess; done: Promise<Run> } {
  const proc = spawn(process.execPath, [CLI, ...args], { env: { PATH: process.env.PATH ?? '' } });
  let stdout = '';
  let stderr = '';
  proc.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
  proc.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const done = new Promise<Run>((resolve) => proc.on('close', (code) => resolve({ code, stdout, stderr })));
  return { proc, done };
}

const cli = (args: string[]) => start(args).done;

function summaryOf(r: Run): Summary {
  try {
    return JSON.parse(r.stdout) as Summary;
  } catch {
    throw new Error(`no JSON summary (exit ${r.code}):\n${r.stdout}\n${r.stderr}`);
  }
}

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

function db(file: string): Database.Database {
  return new Database(file, { readonly: true, fileMustExist: true });
}

function scalar(file: string, sql: string): number {
  const d = db(file);
  try {
    return d.prepare(sql).pluck().get() as number;
  } finally {
    d.close();
  }
}

async function waitFor<T>(what: string, timeoutMs: number, probe: () => T | null | undefined | false): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const v = probe();
    if (v) return v;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
}

describe('Microsoft Graph mailboxes against a loopback stand-in', () => {
  let oauth: OAuthServer;
  let graph: GraphServer;
  let n = 0;
  before(async () => {
    oauth = await new OAuthServer().start();
    graph = await new GraphServer(oauth).start();
  });
  after(async () => {
    await graph?.close();
    await oauth?.close();
  });

  /** A fresh mailbox, an app with Mail.ReadWrite on it, a database and a config. */
  function setup(opts: { box?: string; top?: string; workers?: number; app?: boolean } = {}) {
    const user = `dmarc${n++}@example.com`;
    graph.addMailbox(user);
    const clientId = `graph-app-${n}`;
    if (opts.app !== false) oauth.microsoft.push({ tenant: TENANT, clientId, secret: 'graph-secret', mailboxes: [user] });
    const dir = tempDir();
    const dbFile = path.join(dir, 'r.sqlite');
    const config = path.join(dir, 'c.toml');
    fs.writeFileSync(
      config,
      `[database]\npath = "${dbFile}"\n\n[ingest]\nworkers = ${opts.workers ?? 2}\n${opts.top ?? ''}\n[[mailbox]]\nname = "dmarc"\nkind = "graph"\nuser = "${user}"\ntenant_id = "${TENANT}"\nclient_id = "${clientId}"\nclient_secret = "graph-secret"\ntoken_url = "${oauth.microsoftTokenUrl(TENANT)}"\nscope = "https://graph.microsoft.com/.default"\ngraph_url = "${graph.url}"\n${opts.box ?? ''}`,
    );
    const folders = () => [graph.count(user, 'inbox'), graph.count(user, 'Processed'), graph.count(user, 'Invalid')];
    return { user, clientId, dbFile, config, dir, folders };
  }

  it('reads a folder: each message as MIME, stored, moved to Processed (created); duplicates counted once; no report to Invalid with the reason', async () => {
    const { user, config, dbFile, folders, clientId } = setup();
    for (const f of [
      'dmarc-eml/mox_google.eml',
      'dmarc-eml/freitagsrunde_yahoo.eml',
      'tlsrpt/mox_microsoft.eml',
      'failure/mailauth_arf_004.eml',
    ]) {
      graph.deliver(user, fs.readFileSync(fixture(f)));
    }
    graph.deliver(user, reportMail('same'));
    graph.deliver(user, reportMail('same'));
    graph.deliver(user, fs.readFileSync(fixture('dmarc-eml/pkerrigan_test.none.eml')));
    graph.deliver(user, mail([{ headers: 'Content-Type: application/xml', body: '<feedback><report_metadata>' }]));
    const r = await cli(['fetch', '--config', config, '--json']);
    assert.equal(r.code, 1, 'a malformed report is a failed input');
    const s = summaryOf(r);
    assert.deepEqual(s.reports, { dmarc: 3, tlsrpt: 1, failure: 1 });
    assert.equal(s.duplicates, 1);
    assert.equal(s.inputs, 8);
    assert.equal(s.skipped.length, 1);
    assert.match(s.failed[0]!.error, /not well-formed XML/);
    assert.match(s.failed[0]!.input, /^dmarc:AAMkAM/);
    assert.deepEqual(folders(), [0, 6, 2]);
    const rows = db(dbFile).prepare('SELECT outcome, reason FROM mailbox_messages ORDER BY handled_at, rowid').all() as {
      outcome: string;
      reason: string | null;
    }[];
    assert.deepEqual(rows.map((x) => x.outcome).sort(), ['invalid', 'invalid', ...Array(6).fill('processed')]);
    assert.ok(rows.some((x) => /no report in it/.test(x.reason ?? '')));
    // The folders were created under the mailbox's root, once.
    assert.equal(
      graph.requests.filter(
        (q) => q.method === 'POST' && q.path.endsWith('/childFolders') && q.status === 201 && q.path.includes(encodeURIComponent(user)),
      ).length,
      2,
    );
    assert.deepEqual([...new Set(oauth.issuedFor(clientId).map((t) => t.resource))], ['https://graph.microsoft.com']);
    // A second pass finds nothing new.
    const again = summaryOf(await cli(['fetch', '--config', config, '--json']));
    assert.equal(again.inputs, 0);
    assert.deepEqual(graph.violations, []);
    assert.deepEqual(oauth.violations, []);
  });

  it('pages through a folder of 600 messages, at most 4 requests at once, each message downloaded and moved once', async () => {
    const { user, config, dbFile, folders } = setup();
    const total = 600;
    for (let i = 0; i < total; i++) graph.deliver(user, reportMail(`p${i}`));
    graph.maxInFlight = 0;
    // Each answer takes 5 ms, so requests overlap when the client sends them together.
    graph.delayMs = 5;
    const r = await cli(['fetch', '--config', config, '--json']).finally(() => (graph.delayMs = 0));
    assert.equal(r.code, 0, r.stderr);
    assert.equal(summaryOf(r).reports.dmarc, total);
    assert.deepEqual(folders(), [0, total, 0]);
    assert.equal(scalar(dbFile, 'SELECT COUNT(*) FROM reports'), total);
    const mine = graph.requests.filter((q) => q.path.includes(encodeURIComponent(user)));
    const listings = mine.filter((q) => q.path.endsWith('/messages'));
    assert.deepEqual(
      listings.map((q) => q.query.$skip ?? '0'),
      ['0', '250', '500'],
      'three pages of 250 by @odata.nextLink',
    );
    assert.equal(listings[0]!.query.$orderby, 'receivedDateTime asc');
    assert.equal(mine.filter((q) => q.path.endsWith('/$value')).length, total);
    assert.equal(mine.filter((q) => q.path.endsWith('/move')).length, total);
    assert.ok(graph.maxInFlight >= 2 && graph.maxInFlight <= 4, `${graph.maxInFlight} requests at once`);
    assert.deepEqual(graph.violations, []);
  });

  it('waits out 429 as Retry-After asks, and 503 and 504 too; the pass finishes with everything once', async () => {
    const { user, config, folders } = setup();
    for (let i = 0; i < 5; i++) graph.deliver(user, reportMail(`t${i}`));
    const mine = (p: string) => p.includes(encodeURIComponent(user));
    graph.throttle(2, { retryAfter: '1', match: (m, p) => m === 'GET' && p.endsWith('/messages') });
    graph.throttle(1, { status: 503, retryAfter: null, match: (_m, p) => p.endsWith('/$value') });
    graph.throttle(1, { status: 504, retryAfter: '1', match: (_m, p) => p.endsWith('/move') });
    const from = graph.requests.length;
    const r = await cli(['fetch', '--config', config, '--json']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(summaryOf(r).reports.dmarc, 5);
    assert.deepEqual(folders(), [0, 5, 0]);
    const reqs = graph.requests.slice(from).filter((q) => mine(q.path));
    const listings = reqs.filter((q) => q.path.endsWith('/messages'));
    assert.deepEqual(
      listings.map((q) => q.status),
      [429, 429, 200],
    );
    assert.ok(listings[1]!.at - listings[0]!.at >= 950 && listings[2]!.at - listings[1]!.at >= 950, 'Retry-After: 1 waited for');
    assert.ok(reqs.some((q) => q.status === 503) && reqs.some((q) => q.status === 504));
    assert.match(r.stderr, /Graph throttled the request; waiting as Retry-After asks/);
    assert.deepEqual(graph.violations, []);
  });

  it('a Retry-After longer than a pass should wait: gives up without acknowledging anything; the next pass reads it all', async () => {
    const { user, config, folders } = setup();
    for (let i = 0; i < 3; i++) graph.deliver(user, reportMail(`l${i}`));
    graph.throttle(1, { retryAfter: '3600', match: (_m, p) => p.endsWith('/$value') });
    const r = await cli(['fetch', '--config', config, '--json']);
    assert.equal(r.code, 1);
    const f = summaryOf(r).failed[0]!;
    assert.equal(f.code, 'E_GRAPH');
    assert.match(
      f.error,
      /HTTP 429 TooManyRequests: .*; Graph asks to wait 3600 s \(Retry-After\), longer than a pass waits: the rest is read on a later pass/,
    );
    assert.deepEqual(folders(), [3, 0, 0]);
    const again = await cli(['fetch', '--config', config, '--json']);
    assert.equal(again.code, 0, again.stderr);
    assert.equal(summaryOf(again).reports.dmarc, 3);
    assert.deepEqual(folders(), [0, 3, 0]);
  });

  it('survives being killed (SIGKILL) mid-fetch: every report stored once, every message moved once', async () => {
    const { user, config, dbFile, folders } = setup();
    const total = 150;
    for (let i = 0; i < total; i++) graph.deliver(user, reportMail(`k${i}`, 40));
    const running = start(['fetch', '--config', config, '--json']);
    await waitFor('some messages moved', 60_000, () => graph.count(user, 'Processed') >= 10);
    running.proc.kill('SIGKILL');
    const first = await running.done;
    assert.equal(first.code, null, 'killed');
    const movedBeforeKill = graph.count(user, 'Processed');
    assert.ok(movedBeforeKill < total, `killed after ${movedBeforeKill} of ${total} messages`);
    const second = await cli(['fetch', '--config', config, '--json']);
    assert.equal(second.code, 0, second.stderr);
    const s = summaryOf(second);
    assert.equal(scalar(dbFile, 'SELECT COUNT(*) FROM reports'), total);
    assert.equal(scalar(dbFile, 'SELECT COUNT(*) FROM dmarc_records'), total * 40);
    assert.deepEqual(folders(), [0, total, 0]);
    // What the second pass stored plus what the first had committed is every report, once.
    assert.equal(s.reports.dmarc! + s.duplicates, total - movedBeforeKill);
    assert.deepEqual(graph.violations, []);
  });

  it('a connection cut in the middle of downloads is tried again; nothing lost or counted twice', async () => {
    const { user, config, folders } = setup();
    for (let i = 0; i < 6; i++) graph.deliver(user, reportMail(`c${i}`, 200));
    graph.cutNextDownloads(3);
    const r = await cli(['fetch', '--config', config, '--json']);
    assert.equal(r.code, 0, r.stderr);
    const s = summaryOf(r);
    assert.deepEqual([s.reports.dmarc, s.duplicates, s.failed.length], [6, 0, 0]);
    assert.deepEqual(folders(), [0, 6, 0]);
    assert.match(r.stderr, /Graph request failed; trying again/);
  });

  it('a message larger than max_message_bytes: not downloaded when its stated size says so, cut off when its MIME form is larger; both Invalid', async () => {
    const { user, config, dbFile, folders } = setup({ top: '[limits]\nmax_message_bytes = 200000\n' });
    graph.deliver(user, reportMail('small'));
    const big = mail([
      { headers: 'Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64', body: base64Lines(randomBytes(180_000)) },
    ]);
    assert.ok(big.length > 200_000);
    const stated = graph.deliver(user, big);
    const understated = graph.deliver(user, big, { statedSize: 150_000 });
    const r = await cli(['fetch', '--config', config, '--json']);
    assert.equal(r.code, 1);
    const s = summaryOf(r);
    assert.equal(s.reports.dmarc, 1);
    assert.deepEqual(
      s.failed.map((f) => [f.input, f.code]),
      [
        [`dmarc:${stated}`, 'E_LIMIT'],
        [`dmarc:${understated}`, 'E_LIMIT'],
      ],
    );
    assert.deepEqual(folders(), [0, 1, 2]);
    const downloads = graph.requests.filter((q) => q.path.endsWith('/$value') && q.path.includes(encodeURIComponent(user)));
    assert.equal(downloads.length, 2, 'the one stated as too large is not downloaded');
    assert.equal(
      scalar(dbFile, `SELECT COUNT(*) FROM mailbox_messages WHERE outcome = 'invalid' AND reason LIKE '%max_message_bytes%'`),
      2,
    );
  });

  it('with mark_seen_only marks messages read, keeps its position, lists from it, and reads a recreated folder again', async () => {
    const { user, config, dbFile } = setup({ box: 'folder = "Inbox/DMARC"\nmark_seen_only = true\n', workers: 1 });
    // The folder is made by hand (mark_seen_only creates nothing).
    graph.addFolder(user, 'inbox', 'DMARC');
    for (const id of ['s1', 's2', 's3']) graph.deliver(user, reportMail(id), { folder: 'inbox/DMARC' });
    const first = summaryOf(await cli(['fetch', '--config', config, '--json']));
    assert.equal(first.reports.dmarc, 3);
    const box = graph.folder(user, 'inbox/DMARC')!;
    assert.deepEqual(
      box.messages.map((m) => m.isRead),
      [true, true, true],
    );
    assert.equal(graph.folder(user, 'Processed'), null, 'nothing created');
    graph.deliver(user, reportMail('s4'), { folder: 'inbox/DMARC' });
    const second = summaryOf(await cli(['fetch', '--config', config, '--json']));
    assert.deepEqual([second.inputs, second.reports.dmarc], [1, 1]);
    const lastListing = graph.requests.filter((q) => q.path.endsWith('/messages') && q.path.includes(encodeURIComponent(user))).at(-1)!;
    assert.equal(lastListing.query.$filter, `receivedDateTime ge ${box.messages[2]!.receivedDateTime}`);
    // The folder deleted and restored (a new id, as a restore gives): a new epoch, read again.
    const before = db(dbFile).prepare('SELECT uidvalidity FROM mailbox_state').pluck().get() as number;
    graph.recreate(user, 'inbox/DMARC');
    const third = summaryOf(await cli(['fetch', '--config', config, '--json']));
    assert.deepEqual([third.inputs, third.reports.dmarc, third.duplicates], [4, 0, 4]);
    assert.notEqual(db(dbFile).prepare('SELECT uidvalidity FROM mailbox_state').pluck().get(), before);
    assert.deepEqual(graph.violations, []);
  });

  it('renews a token that expires or is revoked during a pass (401), once; an app without the mailbox gets 403 and what to grant', async () => {
    const { user, config, clientId, folders } = setup();
    for (let i = 0; i < 40; i++) graph.deliver(user, reportMail(`r${i}`));
    oauth.lifetimeSeconds = 2;
    graph.delayMs = 60;
    try {
      const running = start(['fetch', '--config', config, '--json']);
      await waitFor('a few messages moved', 30_000, () => graph.count(user, 'Processed') >= 5);
      oauth.revokeAll();
      const r = await running.done;
      assert.equal(r.code, 0, r.stderr);
      assert.equal(summaryOf(r).reports.dmarc, 40);
      assert.deepEqual(folders(), [0, 40, 0]);
      assert.ok(
        oauth.issuedFor(clientId).length >= 3,
        `${oauth.issuedFor(clientId).length} tokens: one, a renewal before expiry, one after the revocation`,
      );
      assert.ok(
        graph.requests.some((q) => q.status === 401 && q.path.includes(encodeURIComponent(user))),
        'the revoked token was refused',
      );
    } finally {
      oauth.lifetimeSeconds = 3600;
      graph.delayMs = 0;
    }
    const denied = setup({ app: false });
    oauth.microsoft.push({ tenant: TENANT, clientId: denied.clientId, secret: 'graph-secret', mailboxes: ['someone-else@example.com'] });
    graph.deliver(denied.user, reportMail('d1'));
    const r = await cli(['fetch', '--config', denied.config, '--json']);
    assert.equal(r.code, 1);
    const f = summaryOf(r).failed[0]!;
    assert.equal(f.code, 'E_GRAPH');
    assert.match(
      f.error,
      /HTTP 403 ErrorAccessDenied: Access is denied\. Check credentials and try again\. \[request-id [0-9a-f-]+\]; the app may not read dmarc\d+@example\.com: grant it Mail\.ReadWrite for this mailbox \(RBAC for Applications/,
    );
    assert.deepEqual(graph.violations, []);
  });

  it('config check --connect: a token, the folder and its count, missing destinations said, nothing created; a 403 at its stage', async () => {
    const { user, config } = setup();
    graph.deliver(user, reportMail('probe'));
    const from = graph.requests.length;
    const r = await cli(['config', 'check', '--config', config, '--connect', '--json']);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    type Probe = {
      ok: boolean;
      kind: string;
      error?: string;
      token: { source: string; expires_in_seconds?: number };
      folders: { role: string; exists: boolean; messages?: number; unseen?: number }[];
    };
    const [m] = (JSON.parse(r.stdout) as { mailboxes: Probe[] }).mailboxes;
    assert.deepEqual([m!.ok, m!.kind], [true, 'graph']);
    assert.match(m!.token.source, /^the Microsoft identity platform \(tenant contoso\.onmicrosoft\.com, client graph-app-\d+\)$/);
    assert.deepEqual(
      m!.folders.map((f) => [f.role, f.exists, f.messages, f.unseen]),
      [
        ['folder', true, 1, 1],
        ['processed_folder', false, undefined, undefined],
        ['invalid_folder', false, undefined, undefined],
      ],
    );
    assert.deepEqual(
      graph.requests.slice(from).filter((q) => q.method !== 'GET'),
      [],
      'nothing created, moved or marked',
    );
    const text = await cli(['config', 'check', '--config', config, '--connect']);
    assert.match(
      text.stdout,
      /^mailbox dmarc \(Microsoft Graph at http:\/\/127\.0\.0\.1:\d+\/v1\.0\): opened dmarc\d+@example\.com with a token from the Microsoft identity platform .* \(good for \d+ s\)\n {2}folder {11}INBOX: 1 message, 1 unseen\n {2}processed_folder Processed: missing; created by the first fetch\n/,
    );
    const denied = setup({ app: false });
    oauth.microsoft.push({ tenant: TENANT, clientId: denied.clientId, secret: 'graph-secret', mailboxes: [] });
    const bad = await cli(['config', 'check', '--config', denied.config, '--connect', '--json']);
    assert.equal(bad.code, 1);
    const [d] = (JSON.parse(bad.stdout) as { mailboxes: Probe[] }).mailboxes;
    assert.equal(d!.ok, false);
    assert.match(d!.error!, /^GET folder INBOX: HTTP 403 ErrorAccessDenied: .*; the app may not read/);
  });

  it('run: polls a graph mailbox (no IDLE: says so), reads new mail on the next poll', async () => {
    const { user, config, dbFile } = setup({ top: '[schedule]\npoll = "*/1 * * * * *"\nidle = true\n\n[web]\nlisten = "127.0.0.1:0"\n' });
    const running = start(['run', '--config', config]);
    try {
      await waitFor(
        'the first poll',
        20_000,
        () =>
          fs.existsSync(dbFile) && graph.requests.some((q) => q.path.endsWith('/messages') && q.path.includes(encodeURIComponent(user))),
      );
      graph.deliver(user, reportMail('run-1'));
      await waitFor('the report stored', 20_000, () => scalar(dbFile, 'SELECT COUNT(*) FROM reports') === 1);
      await waitFor('the message moved', 5_000, () => graph.count(user, 'Processed') === 1);
    } finally {
      running.proc.kill('SIGTERM');
    }
    const r = await running.done;
    assert.match(r.stderr, /this kind of mailbox has no IDLE; it is polled on the schedule/);
    assert.deepEqual(graph.violations, []);
  });
});
