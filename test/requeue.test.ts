import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { after, before, describe, it } from 'node:test';
import type { Finding } from '../src/analyse/types.js';
import { createLogger } from '../src/log.js';
import { alertRenderer } from '../src/notify/render.js';
import type { Channel, ChannelName, Message, NotificationEvent, RetryPolicy } from '../src/notify/types.js';
import { deliverPending } from '../src/pipeline/alerts.js';
import { withChannels } from '../src/cli/notify.js';
import { AlertStore } from '../src/store/alerts.js';
import { emailChannels, startSmtp, type SmtpSink } from './helpers/chat-servers.js';
import { runCli } from './helpers/cli.js';
import { CLI, count, freshStore, otherHolder } from './helpers/common.js';

/**
 * `ruawatch notify requeue`: a parked notification goes back in its channel's queue, keeps its
 * id, starts over as never tried, and the fallback notice that stood for it does not go out.
 */

const log = createLogger('silent');
const T0 = 1_790_000_000;
const fast: RetryPolicy = { attempts: 2, baseMs: 20, maxWaitMs: 5000, timeoutMs: 1000 };

const SPAMMY: Finding = {
  key: 'new_failing_source:example.com:203.0.113.66',
  kind: 'new_failing_source',
  severity: 'warning',
  domain: 'example.com',
  source_ip: '203.0.113.66',
  source_name: null,
  reporter: null,
  summary: 'new source 203.0.113.66 (cheap-casino-pills.example) sent 400 messages as example.com in the last 7 days, 0.0% passing DMARC',
  details: {},
};
const ALERT_SUBJECT = '[WARNING] New failing source: example.com 203.0.113.66';
const NOTICE_SUBJECT = 'ruawatch: an alert could not be delivered';

/** The built program as a process, as an admin runs it; the test's own event loop keeps serving. */
function runProcess(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], {
      env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

function message(title: string, event: NotificationEvent = 'opened'): Message {
  return { event, tone: 'warning', title, text: title, html: `<p>${title}</p>`, fields: [], at: T0 };
}

interface RequeueJson {
  requeued: {
    id: number;
    channel: string;
    event: string;
    title: string;
    alert_key: string | null;
    parked_at: string;
    parked_reason: string;
  }[];
  removed: { id: number; channel: string; fallback_for: number }[];
  failed: { id: number; error: string }[];
}

describe('notify requeue: a refused message sent again once the filter is fixed', () => {
  const { db, file } = freshStore();
  const store = new AlertStore(db);
  let smtp: SmtpSink;
  let email: Channel[];
  let noticeDown = true;

  before(async () => {
    smtp = await startSmtp();
    // A content filter refuses the alert for good; the notice meets a server in trouble (451), so
    // it is still queued when the admin fixes the filter.
    smtp.refuse = (m) => {
      if (/casino-pills/.test(m.text ?? '')) return { code: 554, text: '5.7.1 Message content rejected: casino-pills' };
      if (noticeDown && m.subject === NOTICE_SUBJECT) return { code: 451, text: '4.3.0 try again later' };
      return null;
    };
    email = emailChannels(smtp.port, fast);
  });
  after(async () => {
    await Promise.all([...email.map((c) => c.close()), smtp.close()]);
    db.close();
  });

  let alertId = 0;
  let noticeId = 0;

  it('a message refused with 554 is parked and its notice stays queued', async () => {
    store.reconcile([SPAMMY], T0, { renotifySeconds: 0, channels: ['email'], silent: new Set(), render: alertRenderer });
    const r = await deliverPending(store, email, { retry: fast, log });
    assert.deepEqual(
      r.failed.map((f) => [f.event, f.outcome]),
      [
        ['opened', 'parked'],
        ['opened', 'kept'],
      ],
    );
    assert.equal(smtp.messages.length, 0);
    alertId = count(db, `SELECT id FROM notifications WHERE parked_at IS NOT NULL`);
    noticeId = count(db, `SELECT id FROM notifications WHERE fallback_for = ?`, alertId);
    assert.ok(alertId > 0 && noticeId > alertId);
    assert.equal(count(db, `SELECT COUNT(*) FROM notifications WHERE delivered_at IS NULL AND parked_at IS NULL`), 1);
  });

  it('after `notify requeue ID` and the filter fixed, the next delivery sends the message once and not the stale notice', async () => {
    const r = await runProcess(['notify', 'requeue', '--db', file, String(alertId)]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(
      r.stdout,
      new RegExp(
        `^Back in the queue, in its old place, for the next delivery: 1 notification\\n {2}#${alertId} email opened: \\[WARNING\\] New failing source: example\\.com 203\\.0\\.113\\.66 \\(email is not configured: it waits until it is\\)\\n {6}was parked \\d{4}-\\d\\d-\\d\\d \\d\\d:\\d\\d UTC: refused: .*554 5\\.7\\.1 Message content rejected`,
      ),
    );
    assert.match(
      r.stdout,
      new RegExp(
        `\\nDeleted 1 fallback notice not yet sent, standing for a message now back in the queue: #${noticeId} \\(for #${alertId}\\)\\n$`,
      ),
    );
    // The notice is gone, the message waits as one never tried.
    assert.equal(count(db, `SELECT COUNT(*) FROM notifications WHERE id = ?`, noticeId), 0);
    const row = db
      .prepare(`SELECT parked_at, parked_reason, unanswered, first_unanswered_at, last_error, delivered_at FROM notifications WHERE id = ?`)
      .get(alertId);
    assert.deepEqual(
      { ...(row as object) },
      { parked_at: null, parked_reason: null, unanswered: 0, first_unanswered_at: null, last_error: null, delivered_at: null },
    );

    smtp.refuse = null;
    noticeDown = false;
    const d = await deliverPending(store, email, { retry: fast, log });
    assert.deepEqual(d, { sent: 1, failed: [], pending: 0 });
    assert.deepEqual(
      smtp.messages.map((m) => m.subject),
      [ALERT_SUBJECT],
    );
    // A later delivery sends nothing more.
    assert.deepEqual(await deliverPending(store, email, { retry: fast, log }), { sent: 0, failed: [], pending: 0 });
    assert.equal(smtp.messages.length, 1);
  });

  it('a message refused again after a requeue is parked again, with a fresh notice', async () => {
    const id = store.enqueue('email', 'opened', message('casino-pills again'), null, T0);
    smtp.refuse = (m) => (/casino-pills/.test(m.text ?? '') ? { code: 554, text: '5.7.1 rejected' } : null);
    await deliverPending(store, email, { retry: fast, log });
    assert.equal(count(db, `SELECT COUNT(*) FROM notifications WHERE fallback_for = ? AND delivered_at IS NOT NULL`, id), 1);
    const r = await runCli(['notify', 'requeue', '--db', file, `#${id}`]);
    assert.equal(r.code, 0, r.stderr);
    // A delivered notice stays: it is history, not queued.
    assert.doesNotMatch(r.stdout, /Deleted/);
    await deliverPending(store, email, { retry: fast, log });
    assert.equal(count(db, `SELECT COUNT(*) FROM notifications WHERE id = ? AND parked_at IS NOT NULL`, id), 1);
    assert.equal(count(db, `SELECT COUNT(*) FROM notifications WHERE fallback_for = ?`, id), 2);
    assert.deepEqual(
      smtp.messages.slice(1).map((m) => m.subject),
      [NOTICE_SUBJECT, NOTICE_SUBJECT],
    );
  });
  it('a requeued message starts over: a 451 in its first run keeps it queued rather than parking it as deferred', async () => {
    const id = count(db, `SELECT id FROM notifications WHERE parked_at IS NOT NULL AND fallback_for IS NULL`);
    assert.ok(count(db, `SELECT attempts FROM notifications WHERE id = ?`, id) > 0);
    assert.equal((await runCli(['notify', 'requeue', '--db', file, String(id)])).code, 0);
    store.enqueue('email', 'opened', message('next in line'), null, T0);
    // The filter now defers it: the message may still be the trouble, or the server may be.
    smtp.refuse = (m) => (/casino-pills/.test(m.text ?? '') ? { code: 451, text: '4.7.1 try again later' } : null);
    const r = await deliverPending(store, email, { retry: fast, log });
    assert.deepEqual(
      r.failed.map((f) => f.outcome),
      ['kept'],
    );
    assert.equal(r.pending, 2);
    assert.equal(count(db, `SELECT COUNT(*) FROM notifications WHERE parked_at IS NOT NULL`), 0);
  });
});

describe('notify requeue: --all, --channel, ids that are not parked, JSON', () => {
  const { db, file } = freshStore();
  const store = new AlertStore(db);
  const ids: Record<string, number> = {};
  after(() => db.close());

  before(() => {
    const park = (name: string, channel: ChannelName, reason: string, fallbackFor: number | null = null) => {
      const id = store.enqueue(channel, 'opened', message(name), null, T0, fallbackFor);
      store.park(id, 1, reason, T0 + 60);
      ids[name] = id;
    };
    park('mail-1', 'email', 'refused: 554 5.7.1 rejected');
    // Its notice, refused as well: parked.
    park('mail-1-notice', 'email', 'refused: 554 5.7.1 rejected', ids['mail-1']!);
    park('room-1', 'matrix', 'refused: 413 M_TOO_LARGE');
    // Its notice still waiting.
    ids['room-1-notice'] = store.enqueue('matrix', 'opened', message('room-1-notice'), null, T0, ids['room-1']!);
    // Parked as unconfirmed: sent twice without an answer.
    ids['hook-1'] = store.enqueue('discord', 'digest', message('hook-1', 'digest'), null, T0);
    store.noteUnanswered(ids['hook-1'], T0 + 10);
    store.noteUnanswered(ids['hook-1'], T0 + 20);
    store.park(ids['hook-1'], 2, 'unconfirmed: sent 2 times without an answer', T0 + 20);
    ids['waiting'] = store.enqueue('email', 'opened', message('waiting'), null, T0);
    ids['sent'] = store.enqueue('email', 'opened', message('sent'), null, T0);
    store.markDelivered(ids['sent'], 1, T0 + 5);
  });

  it('names what is not a parked, undelivered notification, puts the others back, and exits 1', async () => {
    const r = await runCli([
      'notify',
      'requeue',
      '--db',
      file,
      '--json',
      String(ids['hook-1']),
      String(ids['waiting']),
      String(ids['sent']),
      '9999',
    ]);
    assert.equal(r.code, 1, r.stderr);
    const out = JSON.parse(r.stdout) as RequeueJson;
    assert.deepEqual(Object.keys(out), ['requeued', 'removed', 'failed']);
    assert.deepEqual(out.requeued, [
      {
        id: ids['hook-1'],
        channel: 'discord',
        event: 'digest',
        title: 'hook-1',
        alert_key: null,
        parked_at: new Date((T0 + 20) * 1000).toISOString(),
        parked_reason: 'unconfirmed: sent 2 times without an answer',
      },
    ]);
    assert.deepEqual(out.removed, []);
    assert.deepEqual(out.failed, [
      { id: ids['waiting'], error: 'not parked: it is waiting in the email queue' },
      { id: ids['sent'], error: `already delivered (${new Date((T0 + 5) * 1000).toISOString()})` },
      { id: 9999, error: 'no such notification' },
    ]);
    // Unanswered sends and attempts forgotten: it may go out (twice at most) again, and its first
    // failure holds the channel for a run, as a new message's would, rather than parking it at once.
    assert.deepEqual(
      {
        ...(db
          .prepare(`SELECT unanswered, first_unanswered_at, parked_at, last_error, attempts FROM notifications WHERE id = ?`)
          .get(ids['hook-1']) as object),
      },
      { unanswered: 0, first_unanswered_at: null, parked_at: null, last_error: null, attempts: 0 },
    );

    const text = await runCli(['notify', 'requeue', '--db', file, String(ids['waiting'])]);
    assert.equal(text.code, 1);
    assert.equal(
      text.stdout,
      `Nothing was put back.\nNot put back: 1 ID\n  #${ids['waiting']}: not parked: it is waiting in the email queue\n`,
    );
  });

  it('--all --channel puts back only that channel, and deletes the notice of a message going back', async () => {
    const r = await runCli(['notify', 'requeue', '--db', file, '--json', '--all', '--channel', 'matrix']);
    assert.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout) as RequeueJson;
    assert.deepEqual(
      out.requeued.map((n) => [n.id, n.channel, n.parked_reason]),
      [[ids['room-1'], 'matrix', 'refused: 413 M_TOO_LARGE']],
    );
    assert.deepEqual(out.removed, [{ id: ids['room-1-notice'], channel: 'matrix', fallback_for: ids['room-1'] }]);
    assert.deepEqual(out.failed, []);
    // The email ones stay parked.
    assert.equal(count(db, `SELECT COUNT(*) FROM notifications WHERE channel = 'email' AND parked_at IS NOT NULL`), 2);

    // --all: the parked notice of a message going back is deleted, not sent after it.
    const all = JSON.parse((await runCli(['notify', 'requeue', '--db', file, '--json', '--all'])).stdout) as RequeueJson;
    assert.deepEqual(
      all.requeued.map((n) => n.id),
      [ids['mail-1']],
    );
    assert.deepEqual(all.removed, [{ id: ids['mail-1-notice'], channel: 'email', fallback_for: ids['mail-1'] }]);
    assert.equal(count(db, `SELECT COUNT(*) FROM notifications WHERE parked_at IS NOT NULL`), 0);
    // Back in the queue in id order: each before what was queued after it.
    assert.deepEqual(
      store.pending('email').map((n) => n.id),
      [ids['mail-1'], ids['waiting']],
    );

    const none = await runCli(['notify', 'requeue', '--db', file, '--all']);
    assert.deepEqual([none.code, none.stdout], [0, 'Nothing is parked.\n']);
  });

  it('usage errors exit 2 and change nothing', async () => {
    for (const args of [[], ['--all', '1'], ['--channel', 'email', '1'], ['--all', '--channel', 'sms'], ['twelve'], ['0']]) {
      const r = await runCli(['notify', 'requeue', '--db', file, ...args]);
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.stdout}`);
      assert.match(r.stderr, /^ruawatch notify requeue: /);
    }
  });
});

describe('notify requeue: notify status shows it waiting again', () => {
  const { db, file } = freshStore();
  const store = new AlertStore(db);
  after(() => db.close());

  it('moves it from parked to waiting in notify status', async () => {
    const id = store.enqueue('email', 'opened', message('too big'), null, T0);
    store.park(id, 1, 'refused: 552 5.3.4 message too big', T0 + 60);
    const before = JSON.parse((await runCli(['notify', 'status', '--db', file, '--json'])).stdout) as {
      channels: { channel: string; pending: number; parked: number }[];
      parked: { id: number }[];
    };
    assert.deepEqual(
      before.channels.map((c) => [c.channel, c.pending, c.parked]),
      [['email', 0, 1]],
    );

    assert.equal((await runCli(['notify', 'requeue', '--db', file, String(id)])).code, 0);
    const json = JSON.parse((await runCli(['notify', 'status', '--db', file, '--json'])).stdout) as typeof before;
    assert.deepEqual(
      json.channels.map((c) => [c.channel, c.pending, c.parked]),
      [['email', 1, 0]],
    );
    assert.deepEqual(json.parked, []);
    const text = await runCli(['notify', 'status', '--db', file]);
    assert.equal(text.stdout, 'email (not configured): ok; 1 waiting, 0 parked; never delivered\n');
  });
});

describe('notify requeue: waits for a delivery under way', () => {
  const { db, file } = freshStore();
  const store = new AlertStore(db);
  let other: ChildProcess | null = null;
  after(() => {
    other?.kill();
    db.close();
  });

  it('changes nothing while another live process holds the channel, and goes on once it is released', async () => {
    const id = store.enqueue('email', 'opened', message('parked'), null, T0);
    store.park(id, 1, 'refused: 554', T0);
    const notice = store.enqueue('email', 'opened', message('notice'), null, T0, id);
    other = await otherHolder(db, 'email');

    // Given up after the wait: E_BUSY naming the holder, and nothing done.
    let ran = false;
    await assert.rejects(
      withChannels(store, ['email'], () => (ran = true), 600),
      (err: Error & { code?: string }) =>
        err.code === 'E_BUSY' && /the email queue is being delivered by another process \(ruawatch run, pid \d+ on /.test(err.message),
    );
    assert.equal(ran, false);

    const running = runCli(['notify', 'requeue', '--db', file, String(id)]);
    await new Promise((resolve) => setTimeout(resolve, 1200));
    // The delivery under way may still send from the queue it read: nothing changed yet.
    assert.equal(count(db, `SELECT COUNT(*) FROM notifications WHERE id = ? AND parked_at IS NOT NULL`, id), 1);
    assert.equal(count(db, `SELECT COUNT(*) FROM notifications WHERE id = ?`, notice), 1);

    db.prepare(`DELETE FROM channel_leases WHERE holder = 'other'`).run();
    const r = await running;
    assert.equal(r.code, 0, r.stderr);
    assert.equal(count(db, `SELECT COUNT(*) FROM notifications WHERE id = ? AND parked_at IS NULL`, id), 1);
    assert.equal(count(db, `SELECT COUNT(*) FROM notifications WHERE id = ?`, notice), 0);
    // Released when done.
    assert.equal(count(db, `SELECT COUNT(*) FROM channel_leases`), 0);
  });
});
