import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { after, before, describe, it } from 'node:test';
import { openApp } from '../src/app.js';
import type { Finding, FindingKind } from '../src/analyse/types.js';
import { configSchema, type Config } from '../src/config/schema.js';
import { createLogger } from '../src/log.js';
import { DiscordChannel } from '../src/notify/discord.js';
import { MatrixChannel } from '../src/notify/matrix.js';
import { alertRenderer } from '../src/notify/render.js';
import type { Channel, ChannelName, Message, RetryPolicy } from '../src/notify/types.js';
import { buildDigest, channelsOf, deliverPending, sendDigest } from '../src/pipeline/alerts.js';
import { AlertStore } from '../src/store/alerts.js';
import { startWeb, type WebServer } from '../src/web/server.js';
import { Worker } from '../src/worker/worker.js';
import {
  embedChars,
  startDiscord,
  startMatrix,
  emailChannels,
  startSmtp,
  type DiscordStub,
  type MatrixStub,
  type SmtpSink,
} from './helpers/chat-servers.js';
import { runCli } from './helpers/cli.js';
import { count, freshStore, otherHolder } from './helpers/common.js';

/**
 * Delivery against the real SMTP server (smtp-server) and the Matrix and Discord stand-ins: a
 * message refused for good is parked and its channel goes on; a refusal of every message holds the
 * channel; a receiver that takes a message but answers too late does not get it again and again.
 */

const log = createLogger('silent');
const T0 = 1_790_000_000;
const fast: RetryPolicy = { attempts: 3, baseMs: 20, maxWaitMs: 5000, timeoutMs: 1000 };
const ROOM = '!alerts:example.org';
const DISCORD = { webhookId: '123456789012345678', webhookToken: 'hook-token_abc', botToken: 'bot.token', channelId: '987654321098765432' };

function finding(kind: FindingKind, domain: string, summary: string, ip: string | null = null): Finding {
  return {
    key: `${kind}:${domain}${ip ? `:${ip}` : ''}`,
    kind,
    severity: 'warning',
    domain,
    source_ip: ip,
    source_name: null,
    reporter: null,
    summary,
    details: {},
  };
}

/** Brings the alert state to `findings` (queueing what that calls for) on the channels named. */
function reconcile(store: AlertStore, findings: Finding[], now: number, channels: ChannelName[]): void {
  store.reconcile(findings, now, { renotifySeconds: 86_400, channels, silent: new Set(), render: alertRenderer });
}

const SPAMMY = finding(
  'new_failing_source',
  'example.com',
  'new source 203.0.113.66 (cheap-casino-pills.example) sent 400 messages as example.com in the last 7 days, 0.0% passing DMARC',
  '203.0.113.66',
);
const TLS = finding('tls_failures', 'example.com', 'TLS to mx2.example.com (example.com) failed in 300 of 1,300 sessions');
const SILENT = finding('reporter_silent', 'example.org', 'Google Inc. has sent no aggregate report for example.org for 3 days');
const POLICY = finding('policy_changed', 'example.org', 'reporters see p=none for example.org, p=reject before');

describe('delivery: a message refused for good is parked, and the channel goes on', () => {
  const { db, file } = freshStore();
  const store = new AlertStore(db);
  let smtp: SmtpSink;
  let matrix: MatrixStub;
  let discord: DiscordStub;
  let config: Config;
  let email: Channel[];

  before(async () => {
    smtp = await startSmtp();
    // A content filter: report data can make an alert look like spam.
    smtp.refuse = (m) => (/casino-pills/.test(m.text ?? '') ? { code: 554, text: '5.7.1 Message content rejected: casino-pills' } : null);
    matrix = await startMatrix({ token: 'syt_right', roomId: ROOM });
    discord = await startDiscord(DISCORD);
    config = configSchema.parse({
      alerts: {
        email: { host: '127.0.0.1', port: smtp.port, security: 'none', from: 'ruawatch@example.com', to: ['postmaster@example.com'] },
      },
    });
    email = channelsOf(config, fast);
  });
  after(async () => {
    await Promise.all([...email.map((c) => c.close()), smtp.close(), matrix.close(), discord.close()]);
    db.close();
  });

  it('parks the message an SMTP server refuses with 554, and sends the fallback notice in its place', async () => {
    reconcile(store, [SPAMMY], T0, ['email']);
    const r = await deliverPending(store, email, { retry: fast, log });
    assert.equal(r.sent, 1);
    assert.equal(r.pending, 0);
    assert.deepEqual(
      r.failed.map((f) => [f.channel, f.event, f.outcome]),
      [['email', 'opened', 'parked']],
    );
    assert.match(r.failed[0]!.error, /^refused: .*554 5\.7\.1 Message content rejected/);
    assert.equal(smtp.refused.length, 1);
    assert.equal(smtp.refused[0]!.subject, '[WARNING] New failing source: example.com 203.0.113.66');

    assert.equal(smtp.messages.length, 1);
    const notice = smtp.messages[0]!;
    assert.equal(notice.subject, 'ruawatch: an alert could not be delivered');
    assert.match(
      notice.text!,
      /^An alert of kind new_failing_source for example\.com could not be delivered in full: this channel refused it \(SMTP 554\)\./,
    );
    // Nothing of what made the filter refuse the alert: no summary, no IP, no reply text.
    assert.doesNotMatch(`${notice.text} ${String(notice.html)}`, /casino|203\.0\.113\.66|rejected/);
    assert.equal(notice.headers.get('auto-submitted'), 'auto-generated');

    assert.equal(count(db, `SELECT COUNT(*) FROM notifications WHERE parked_at IS NOT NULL`), 1);
    assert.equal(count(db, `SELECT COUNT(*) FROM notifications WHERE delivered_at IS NULL AND parked_at IS NULL`), 0);
  });

  it('delivers the next alert on that channel, and does not try the parked one again', async () => {
    reconcile(store, [SPAMMY, TLS], T0 + 3600, ['email']);
    const r = await deliverPending(store, email, { retry: fast, log });
    assert.deepEqual(r, { sent: 1, failed: [], pending: 0 });
    assert.equal(smtp.messages.at(-1)!.subject, '[WARNING] TLS failures: example.com');
    assert.equal(smtp.refused.length, 1);
    assert.equal(smtp.messages.length, 2);
  });

  it('the digest, which quotes the open alert, is refused as well: parked, its notice sent, the channel goes on', async () => {
    const digest = await sendDigest(db, buildDigest(db, 'daily', T0 + 7200), T0 + 7200, { channels: email, retry: fast, log });
    assert.equal(digest.sent, 1);
    assert.deepEqual(
      digest.failed.map((f) => [f.event, f.outcome]),
      [['digest', 'parked']],
    );
    assert.match(smtp.refused.at(-1)!.subject!, /^ruawatch daily digest: /);
    assert.equal(smtp.messages.at(-1)!.subject, 'ruawatch: a digest could not be delivered');
    assert.match(smtp.messages.at(-1)!.text!, /^The digest could not be delivered in full: this channel refused it \(SMTP 554\)\./);

    reconcile(store, [SPAMMY, TLS, SILENT], T0 + 7300, ['email']);
    assert.deepEqual(await deliverPending(store, email, { retry: fast, log }), { sent: 1, failed: [], pending: 0 });
    assert.equal(smtp.messages.at(-1)!.subject, '[WARNING] Reporter silent: example.org');
    assert.deepEqual([smtp.messages.length, smtp.refused.length], [4, 2]);
  });

  it('holds a channel whose token is refused: one request a run, nothing parked, all sent in order once it is right', async () => {
    reconcile(store, [SPAMMY, TLS, SILENT, POLICY], T0 + 10_800, ['matrix']);
    // The other alerts were opened for email only; POLICY is new: one message for Matrix.
    const settings = { homeserver: matrix.url, room_id: ROOM };
    const wrong = new MatrixChannel({ ...settings, access_token: 'syt_wrong' }, fast.timeoutMs);
    for (const run of [1, 2]) {
      const r = await deliverPending(store, [wrong], { retry: fast, log });
      assert.deepEqual(
        r.failed.map((f) => [f.channel, f.outcome, f.error]),
        [['matrix', 'kept', '401 M_UNKNOWN_TOKEN Invalid access token']],
      );
      assert.equal(r.pending, 1);
      assert.equal(matrix.requests, run);
    }
    const held = store.channelStatus().find((c) => c.channel === 'matrix')!;
    assert.deepEqual([held.held, held.pending, held.parked, held.last_error], [true, 1, 0, '401 M_UNKNOWN_TOKEN Invalid access token']);
    assert.ok(held.failing_since !== null);

    const right = new MatrixChannel({ ...settings, access_token: 'syt_right' }, fast.timeoutMs);
    assert.deepEqual(await deliverPending(store, [right], { retry: fast, log }), { sent: 1, failed: [], pending: 0 });
    assert.deepEqual(
      matrix.events.map((e) => e.content.body.split('\n')[0]),
      ['[WARNING] DMARC policy changed: example.org'],
    );
    const ok = store.channelStatus().find((c) => c.channel === 'matrix')!;
    assert.deepEqual([ok.held, ok.failing_since, ok.last_error], [false, null, null]);
    assert.ok(ok.last_delivered_at !== null);
  });

  it('parks a Discord message refused with 400, posts the notice, then the next message', async () => {
    const hook = new DiscordChannel({ webhook_url: discord.webhookUrl }, 5000, fast.timeoutMs);
    const spam = finding('pass_rate_drop', 'example.net', 'mail from 198.51.100.7 for example.net passing DMARC fell', '198.51.100.7');
    const next = finding('dkim_selector_broken', 'example.net', 'DKIM selector s1._domainkey.example.net passed 100.0%');
    reconcile(store, [SPAMMY, TLS, SILENT, POLICY, spam], T0 + 14_400, ['discord']);
    reconcile(store, [SPAMMY, TLS, SILENT, POLICY, spam, next], T0 + 14_401, ['discord']);
    discord.script = ['400'];
    const r = await deliverPending(store, [hook], { retry: fast, log });
    await hook.close();
    assert.equal(r.sent, 2);
    assert.deepEqual(
      r.failed.map((f) => [f.channel, f.outcome, f.error]),
      [['discord', 'parked', 'refused: 400 Invalid Form Body']],
    );
    assert.deepEqual(discord.violations, []);
    assert.deepEqual(
      discord.messages.map((m) => m.embeds[0]!.title),
      ['ruawatch: an alert could not be delivered', '[WARNING] DKIM selector broken: example.net'],
    );
    assert.match(discord.messages[0]!.embeds[0]!.description!, /pass_rate_drop for example\.net .*\(HTTP 400\)/);
  });

  it('ruawatch notify status shows the parked messages with their reasons, as text and as JSON', async () => {
    const json = await runCli(['notify', 'status', '--db', file, '--json']);
    assert.equal(json.code, 0, json.stderr);
    const out = JSON.parse(json.stdout) as {
      channels: {
        channel: string;
        configured: boolean;
        pending: number;
        parked: number;
        state: string;
        last_delivered_at: string | null;
      }[];
      parked: { id: number; channel: string; event: string; title: string; alert_key: string | null; reason: string; attempts: number }[];
    };
    assert.deepEqual(
      out.channels.map((c) => [c.channel, c.configured, c.pending, c.parked, c.state]),
      [
        ['email', false, 0, 2, 'ok'],
        ['matrix', false, 0, 0, 'ok'],
        ['discord', false, 0, 1, 'ok'],
      ],
    );
    assert.ok(out.channels.every((c) => c.last_delivered_at !== null && /^\d{4}-\d\d-\d\dT/.test(c.last_delivered_at)));
    assert.deepEqual(
      out.parked.map((p) => [p.channel, p.event, p.title.replace(/\d{4}-\d\d-\d\d/, 'DAY'), p.alert_key, p.attempts]),
      [
        ['discord', 'opened', '[WARNING] DMARC pass rate dropped: example.net 198.51.100.7', 'pass_rate_drop:example.net:198.51.100.7', 1],
        ['email', 'digest', 'ruawatch daily digest: DAY', null, 1],
        ['email', 'opened', '[WARNING] New failing source: example.com 203.0.113.66', 'new_failing_source:example.com:203.0.113.66', 1],
      ],
    );
    assert.match(out.parked[2]!.reason, /^refused: .*554/);

    const text = await runCli(['notify', 'status', '--db', file]);
    assert.equal(text.code, 0, text.stderr);
    assert.match(text.stdout, /^email \(not configured\): ok; 0 waiting, 2 parked; last delivered \d{4}-\d\d-\d\d \d\d:\d\d UTC\n/);
    assert.match(
      text.stdout,
      /\nParked: 3 notifications\n {2}#\d+ discord opened parked .*: \[WARNING\] DMARC pass rate dropped: example\.net 198\.51\.100\.7\n {6}refused: 400 Invalid Form Body\n/,
    );
  });

  it('counts parked messages in /metrics and lists them in the dashboard API', async () => {
    const web: WebServer = await startWeb(
      configSchema.parse({ web: { listen: '127.0.0.1:0' } }),
      db,
      new Worker(openApp(config, { db, log, lookup: null, channels: [] })),
      log,
    );
    try {
      const metrics = await (await fetch(`${web.url}/metrics`)).text();
      assert.match(metrics, /\n# TYPE ruawatch_notifications_parked gauge\n/);
      assert.match(metrics, /\nruawatch_notifications_parked\{channel="email"\} 2\n/);
      assert.match(metrics, /\nruawatch_notifications_parked\{channel="discord"\} 1\n/);
      assert.match(metrics, /\nruawatch_notifications_pending\{channel="email"\} 0\n/);
      assert.match(metrics, /\nruawatch_notification_channel_held\{channel="matrix"\} 0\n/);
      const api = (await (await fetch(`${web.url}/api/overview`)).json()) as {
        notifications: { channels: { channel: string; parked: number }[]; parked: { channel: string; reason: string }[] };
      };
      assert.deepEqual(
        api.notifications.channels.map((c) => [c.channel, c.parked]),
        [
          ['email', 2],
          ['matrix', 0],
          ['discord', 1],
        ],
      );
      assert.deepEqual(
        api.notifications.parked.map((p) => p.channel),
        ['discord', 'email', 'email'],
      );
    } finally {
      await web.close();
    }
  });
});

describe('delivery: Discord embeds within the 6,000-character total', () => {
  it('clips a long digest to the total and Discord takes it', async () => {
    const discord = await startDiscord(DISCORD);
    const { db } = freshStore();
    const store = new AlertStore(db);
    const hook = new DiscordChannel({ webhook_url: discord.webhookUrl }, 5000, fast.timeoutMs);
    try {
      const long: Message = {
        event: 'digest',
        tone: 'info',
        title: 'ruawatch weekly digest: 2026-11-02 to 2026-11-08',
        text: `DMARC\n${'  example.com: 4,320 messages, 75.2% passing DMARC\n'.repeat(120)}`,
        html: '<p>digest</p>',
        fields: Array.from({ length: 20 }, (_, i) => ({ name: `mail${i}.example.com`, value: `75.2% of 4,320 ${'x'.repeat(900)}` })),
        at: T0,
      };
      store.enqueue('discord', 'digest', long, null, T0);
      assert.deepEqual(await deliverPending(store, [hook], { retry: fast, log }), { sent: 1, failed: [], pending: 0 });
      assert.deepEqual(discord.violations, []);
      const embed = discord.messages[0]!.embeds[0]!;
      assert.equal(embedChars(embed), 6000);
      assert.equal(embed.title, long.title);
      assert.equal(embed.description!.length, 4096);
      assert.ok(embed.description!.startsWith('DMARC\n  example.com: 4,320 messages'));
      assert.equal(embed.footer!.text, 'ruawatch · digest');
    } finally {
      await hook.close();
      await discord.close();
      db.close();
    }
  });
});

describe('delivery: a receiver that takes a message but answers too late', () => {
  const { db } = freshStore();
  const store = new AlertStore(db);
  let smtp: SmtpSink;
  let matrix: MatrixStub;
  let discord: DiscordStub;
  const SLOW = 2500; // answers come this long after the message was taken; the client waits 1 s
  const closers: Channel[] = [];
  /** Queues one message per title on the channel. */
  const open = (channel: ChannelName, ...titles: string[]) => {
    for (const title of titles) {
      const text = `${title}: a reporter has sent nothing for 3 days`;
      store.enqueue(
        channel,
        'opened',
        { event: 'opened', tone: 'warning', title, text, html: `<p>${text}</p>`, fields: [], at: T0 },
        null,
        T0,
      );
    }
  };

  before(async () => {
    smtp = await startSmtp();
    matrix = await startMatrix({ token: 'syt_right', roomId: ROOM });
    discord = await startDiscord(DISCORD);
    smtp.slowMs = matrix.slowMs = discord.slowMs = SLOW;
  });
  after(async () => {
    await Promise.all([...closers.map((c) => c.close()), smtp.close(), matrix.close(), discord.close()]);
    db.close();
  });

  it('a Discord webhook gets a timed-out message twice at most, then it is parked as unconfirmed', async () => {
    const hook = new DiscordChannel({ webhook_url: discord.webhookUrl }, 5000, fast.timeoutMs);
    closers.push(hook);
    open('discord', 'hook-1', 'hook-2');
    discord.slowNext = 100;
    const r = await deliverPending(store, [hook], { retry: fast, log });
    assert.deepEqual(
      discord.messages.map((m) => m.embeds[0]!.title),
      ['hook-1', 'hook-1'],
    );
    assert.deepEqual(
      r.failed.map((f) => [f.outcome, f.error.replace(/within [\d.]+ s/, 'within N s')]),
      [
        [
          'parked',
          `unconfirmed: ${discord.url}/api did not answer within N s; sent 2 times without an answer, it may have arrived; not sent again so as not to post it twice`,
        ],
      ],
    );
    // The endpoint is in trouble: the next message waits for the next run.
    assert.equal(r.pending, 1);

    discord.slowNext = 0;
    const again = await deliverPending(store, [hook], { retry: fast, log });
    assert.deepEqual(again, { sent: 1, failed: [], pending: 0 });
    assert.deepEqual(
      discord.messages.map((m) => m.embeds[0]!.title),
      ['hook-1', 'hook-1', 'hook-2'],
    );
  });

  it('a Discord webhook that answers the repeat in time: two posts, delivered', async () => {
    const hook = new DiscordChannel({ webhook_url: discord.webhookUrl }, 5000, fast.timeoutMs);
    closers.push(hook);
    open('discord', 'hook-3');
    discord.slowNext = 1;
    const before = discord.messages.length;
    assert.deepEqual(await deliverPending(store, [hook], { retry: fast, log }), { sent: 1, failed: [], pending: 0 });
    assert.deepEqual(
      discord.messages.slice(before).map((m) => m.embeds[0]!.title),
      ['hook-3', 'hook-3'],
    );
  });

  it('a Discord bot posts it once: every repeat carries the same nonce with enforce_nonce', async () => {
    const bot = new DiscordChannel(
      { bot_token: DISCORD.botToken, channel_id: DISCORD.channelId, api_url: `${discord.url}/api` },
      5000,
      fast.timeoutMs,
    );
    closers.push(bot);
    open('discord', 'bot-1');
    discord.slowNext = 100;
    const [requests, before] = [discord.requests, discord.messages.length];
    const r = await deliverPending(store, [bot], { retry: fast, log });
    assert.deepEqual(
      r.failed.map((f) => f.outcome),
      ['kept'],
    );
    assert.equal(discord.requests - requests, 3);
    discord.slowNext = 0;
    assert.deepEqual(await deliverPending(store, [bot], { retry: fast, log }), { sent: 1, failed: [], pending: 0 });
    assert.equal(discord.requests - requests, 4);
    assert.deepEqual(
      discord.messages.slice(before).map((m) => [m.via, m.embeds[0]!.title]),
      [['bot', 'bot-1']],
    );
    assert.match(discord.messages.at(-1)!.nonce!, /^rw[0-9a-f]{23}$/);
    assert.deepEqual(discord.violations, []);
  });

  it('a Matrix homeserver posts it once: every repeat carries the same transaction id', async () => {
    const m = new MatrixChannel({ homeserver: matrix.url, access_token: 'syt_right', room_id: ROOM }, fast.timeoutMs);
    open('matrix', 'matrix-1');
    matrix.slowNext = 2;
    assert.deepEqual(await deliverPending(store, [m], { retry: fast, log }), { sent: 1, failed: [], pending: 0 });
    assert.equal(matrix.requests, 3);
    assert.deepEqual(
      matrix.events.map((e) => e.content.body.split('\n')[0]),
      ['matrix-1'],
    );
  });

  it('an SMTP server whose reply to the data is lost gets the mail twice at most, with one Message-ID', async () => {
    const [mail] = emailChannels(smtp.port, fast);
    closers.push(mail!);
    open('email', 'mail-1', 'mail-2');
    smtp.slowNext = 100;
    const r = await deliverPending(store, [mail!], { retry: fast, log });
    assert.deepEqual(
      smtp.messages.map((m) => m.subject),
      ['mail-1', 'mail-1'],
    );
    assert.equal(smtp.messages[0]!.messageId, smtp.messages[1]!.messageId);
    assert.match(smtp.messages[0]!.messageId!, /^<rw-[0-9a-f-]{36}@ruawatch\.invalid>$/);
    assert.deepEqual(
      r.failed.map((f) => f.outcome),
      ['parked'],
    );
    assert.match(r.failed[0]!.error, /^unconfirmed: .*sent 2 times without an answer/);

    smtp.slowNext = 0;
    assert.deepEqual(await deliverPending(store, [mail!], { retry: fast, log }), { sent: 1, failed: [], pending: 0 });
    assert.deepEqual(
      smtp.messages.map((m) => m.subject),
      ['mail-1', 'mail-1', 'mail-2'],
    );
  });

  it('two deliveries at once (the digest schedule meeting a poll) send each message once', async () => {
    const hook = new DiscordChannel({ webhook_url: discord.webhookUrl }, 5000, fast.timeoutMs);
    closers.push(hook);
    open('discord', 'both-1', 'both-2', 'both-3');
    const before = discord.messages.length;
    const [a, b] = await Promise.all([
      deliverPending(store, [hook], { retry: fast, log }),
      deliverPending(store, [hook], { retry: fast, log }),
    ]);
    assert.equal(a.sent + b.sent, 3);
    assert.deepEqual(
      discord.messages.slice(before).map((m) => m.embeds[0]!.title),
      ['both-1', 'both-2', 'both-3'],
    );
  });

  it('an SMTP failure before the data went out is retried as usual', async () => {
    const [mail] = channelsOf(
      configSchema.parse({
        // No server listens on port 1: refused before anything was sent.
        alerts: { email: { host: '127.0.0.1', port: 1, security: 'none', from: 'ruawatch@example.com', to: ['postmaster@example.com'] } },
      }),
      fast,
    );
    closers.push(mail!);
    open('email', 'mail-3');
    const r = await deliverPending(store, [mail!], { retry: fast, log });
    assert.deepEqual(
      r.failed.map((f) => f.outcome),
      ['kept'],
    );
    assert.equal(count(db, `SELECT unanswered FROM notifications WHERE json_extract(message, '$.title') = 'mail-3'`), 0);
    assert.equal(count(db, `SELECT attempts FROM notifications WHERE json_extract(message, '$.title') = 'mail-3'`), 3);
  });
});

describe('a message the channel keeps deferring does not hold the ones behind it', () => {
  const { db } = freshStore();
  const store = new AlertStore(db);
  let smtp: SmtpSink;
  let email: Channel[];
  const subjects = () => smtp.messages.map((m) => m.subject);
  const parked = () =>
    db.prepare(`SELECT id, parked_reason FROM notifications WHERE parked_at IS NOT NULL ORDER BY id`).all() as {
      id: number;
      parked_reason: string;
    }[];

  before(async () => {
    smtp = await startSmtp();
    // A filter's "soft reject": report data made the alert look like spam, and the answer is 451, not 554.
    smtp.refuse = (m) => (/casino-pills/.test(m.text ?? '') ? { code: 451, text: '4.7.1 Try again later (soft reject)' } : null);
    email = emailChannels(smtp.port, fast);
  });
  after(async () => {
    await Promise.all([...email.map((c) => c.close()), smtp.close()]);
    db.close();
  });

  it('first run: deferred once, it stays queued and the next message waits behind it, in order', async () => {
    reconcile(store, [SPAMMY, TLS], T0, ['email']);
    const r = await deliverPending(store, email, { retry: fast, log });
    assert.equal(r.sent, 0);
    assert.equal(r.pending, 2);
    assert.deepEqual(
      r.failed.map((f) => f.outcome),
      ['kept'],
    );
    assert.equal(smtp.refused.length, fast.attempts);
    assert.deepEqual(subjects(), []);
    assert.deepEqual(parked(), []);
  });

  it('next run: deferred again while the channel takes the next message, so it is parked as deferred with a notice', async () => {
    const r = await deliverPending(store, email, { retry: fast, log });
    // The TLS alert, then the notice standing for the deferred one.
    assert.deepEqual(subjects(), ['[WARNING] TLS failures: example.com', 'ruawatch: an alert could not be delivered']);
    assert.equal(r.sent, 2);
    assert.equal(r.pending, 0);
    assert.deepEqual(
      r.failed.map((f) => [f.event, f.outcome]),
      [['opened', 'parked']],
    );
    const [p] = parked();
    assert.match(p!.parked_reason, /^deferred: .*451 4\.7\.1 Try again later.*; failed in two runs while the channel took other messages$/);
    assert.match(
      smtp.messages[1]!.text!,
      /^An alert of kind new_failing_source for example\.com could not be delivered: this channel kept deferring it \(SMTP 451\) while it took other messages\./,
    );
    // This run: the failing one with its retries, the next one once, the failing one once more.
    assert.equal(smtp.refused.length, fast.attempts * 2 + 1);
  });

  it('a later run sends what comes next and does not try the parked one again', async () => {
    const tried = smtp.refused.length;
    reconcile(store, [SPAMMY, TLS, SILENT], T0 + 3600, ['email']);
    const r = await deliverPending(store, email, { retry: fast, log });
    assert.deepEqual(r, { sent: 1, failed: [], pending: 0 });
    assert.equal(smtp.messages.at(-1)!.subject, '[WARNING] Reporter silent: example.org');
    assert.equal(smtp.refused.length, tried);
  });

  it('an endpoint that defers everything (greylisting, an outage) parks nothing: all stay queued and go out in order', async () => {
    const { db: db2 } = freshStore();
    const store2 = new AlertStore(db2);
    try {
      reconcile(store2, [TLS, SILENT, POLICY], T0, ['email']);
      const before = smtp.messages.length;
      smtp.failNext = 1000;
      for (let run = 0; run < 3; run++) {
        const r = await deliverPending(store2, email, { retry: fast, log });
        assert.equal(r.sent, 0);
        assert.equal(r.pending, 3);
      }
      assert.equal(count(db2, `SELECT COUNT(*) FROM notifications WHERE parked_at IS NOT NULL`), 0);
      smtp.failNext = 0;
      const r = await deliverPending(store2, email, { retry: fast, log });
      assert.deepEqual(r, { sent: 3, failed: [], pending: 0 });
      assert.deepEqual(
        smtp.messages.slice(before).map((m) => m.subject),
        ['[WARNING] TLS failures: example.com', '[WARNING] Reporter silent: example.org', '[WARNING] DMARC policy changed: example.org'],
      );
    } finally {
      db2.close();
    }
  });
});

describe('reminders: only when an alert got worse, and no timed ones to a channel that parks them', () => {
  const { db } = freshStore();
  const store = new AlertStore(db);
  let smtp: SmtpSink;
  let email: Channel[];
  const DAY = 86_400;
  const spam = (severity: 'warning' | 'critical', messages: number): Finding => ({
    ...SPAMMY,
    severity,
    details: { recent_messages: messages, recent_pass_rate: 0 },
  });
  const tls = (failed: number): Finding => ({ ...TLS, details: { failed_sessions: failed, sessions: 1300 } });
  const rows = () =>
    db.prepare(`SELECT a.key, n.event, n.message FROM notifications n JOIN alerts a ON a.id = n.alert_id ORDER BY n.id`).all() as {
      key: string;
      event: string;
      message: string;
    }[];
  const queue = (findings: Finding[], now: number, renotifySeconds = 0) =>
    store.reconcile(findings, now, { renotifySeconds, channels: ['email'], silent: new Set(), render: alertRenderer });

  before(async () => {
    smtp = await startSmtp();
    smtp.refuse = (m) => (/casino-pills/.test(m.text ?? '') ? { code: 554, text: '5.7.1 Message content rejected' } : null);
    email = emailChannels(smtp.port, fast);
  });
  after(async () => {
    await Promise.all([...email.map((c) => c.close()), smtp.close()]);
    db.close();
  });

  it('sends nothing more while an open alert stays the same, or grows by less than double', async () => {
    queue([spam('warning', 200), tls(300)], T0);
    await deliverPending(store, email, { retry: fast, log });
    const n = rows().length;
    // Over a week: a new source's 7-day count grows every day while it sends as much as before.
    for (let d = 1; d <= 7; d++) {
      const r = queue([spam('warning', 200 * Math.min(7, d + 1)), tls(300 + 40 * d)], T0 + d * DAY);
      assert.deepEqual([r.reminded, r.ongoing.length], [[], 2]);
    }
    assert.equal(rows().length, n);
  });

  it('sends a reminder saying what got worse: the severity, or the volume doubled', () => {
    let r = queue([spam('critical', 1400), tls(300)], T0 + 8 * DAY);
    assert.deepEqual(
      r.reminded.map((f) => f.key),
      [SPAMMY.key],
    );
    r = queue([spam('critical', 1400), tls(700)], T0 + 9 * DAY);
    assert.deepEqual(
      r.reminded.map((f) => f.key),
      [TLS.key],
    );
    const reminders = rows().filter((x) => x.event === 'reminder');
    assert.deepEqual(
      reminders.map((x) => (JSON.parse(x.message) as Message).text.split('\n')[0]),
      [
        `Open since ${new Date(T0 * 1000).toISOString().slice(0, 16).replace('T', ' ')} UTC. Worse: now critical, was warning.`,
        `Open since ${new Date(T0 * 1000).toISOString().slice(0, 16).replace('T', ' ')} UTC. Worse: 700 failed sessions now, 300 when last sent.`,
      ],
    );
    // Once sent, the new figures are what the next change is measured against.
    assert.deepEqual(queue([spam('critical', 1400), tls(1000)], T0 + 10 * DAY).reminded, []);
  });

  it("timed reminders (renotify_hours set) skip a channel that parked the alert's last message", async () => {
    await deliverPending(store, email, { retry: fast, log });
    const parked = db.prepare(`SELECT COUNT(*) AS n FROM notifications WHERE parked_at IS NOT NULL AND fallback_for IS NULL`).get() as {
      n: number;
    };
    assert.equal(parked.n, 2); // the spam alert's opening and its reminder: refused by the content filter
    const before = rows().length;
    const r = queue([spam('critical', 1400), tls(1000)], T0 + 12 * DAY, DAY);
    // Both are due; only the TLS alert, whose messages got through, is queued.
    assert.deepEqual(
      r.reminded.map((f) => f.key),
      [SPAMMY.key, TLS.key],
    );
    assert.deepEqual(
      rows()
        .slice(before)
        .map((x) => [x.key, x.event]),
      [[TLS.key, 'reminder']],
    );
  });
});

describe('delivery: one process at a time delivers a channel', () => {
  const { db } = freshStore();
  const store = new AlertStore(db);
  let smtp: SmtpSink;
  let mail: Channel;
  let other: ChildProcess | null = null;

  before(async () => {
    smtp = await startSmtp();
    [mail] = emailChannels(smtp.port, fast) as [Channel];
  });
  after(async () => {
    other?.kill();
    await Promise.all([mail.close(), smtp.close()]);
    db.close();
  });

  it('leaves the queue to another live process delivering it, and takes it over once that process is gone', async () => {
    const text = 'a reporter has sent nothing for 3 days';
    store.enqueue(
      'email',
      'opened',
      { event: 'opened', tone: 'warning', title: 'lease-1', text, html: `<p>${text}</p>`, fields: [], at: T0 },
      null,
      T0,
    );
    // Another ruawatch on this host, alive, holding the email channel's lease (as its deliverPending would).
    other = await otherHolder(db, 'email');

    const left = await deliverPending(store, [mail], { retry: fast, log });
    assert.deepEqual(left, { sent: 0, failed: [], pending: 1 });
    assert.equal(smtp.messages.length, 0);
    assert.equal(count(db, `SELECT count(*) FROM notifications WHERE delivered_at IS NULL`), 1);

    // The holder dies without releasing the lease (kill -9): its lease is taken over at once.
    other.kill('SIGKILL');
    await new Promise((resolve) => other!.once('exit', resolve));
    other = null;
    const taken = await deliverPending(store, [mail], { retry: fast, log });
    assert.equal(taken.sent, 1);
    assert.deepEqual(
      smtp.messages.map((m) => m.subject),
      ['lease-1'],
    );
    // Released when done: the next process finds the channel free.
    assert.equal(count(db, `SELECT count(*) FROM channel_leases`), 0);
  });
});
