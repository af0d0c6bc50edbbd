import { randomUUID } from 'node:crypto';
import { RuawatchError, errorMessage } from '../errors.js';
import { isoTime, renderTest } from '../notify/render.js';
import { CHANNEL_NAMES, defaultRetry, withRetry, type ChannelName, type RetryPolicy } from '../notify/types.js';
import { AlertStore, type ChannelStatus, type ParkedNotification, type RequeueResult } from '../store/alerts.js';
import { leaseHolder } from '../store/leases.js';
import { configFlag, dbFlag, defineCommand, jsonFlag, usageLine } from './command.js';
import { appFor, EXIT_FAILED, EXIT_OK, plural } from './common.js';

// A test should answer quickly: one retry, one second apart.
const TEST_RETRY: RetryPolicy = { ...defaultRetry, attempts: 2 };

export const notifyTestCommand = defineCommand(
  {
    name: 'notify test',
    summary: 'send a test message through the [alerts] channels',
    flags: {
      config: configFlag,
      channel: { type: 'string', value: 'email|matrix|discord', help: 'only this channel (default: every configured one)' },
      json: jsonFlag,
    },
    about: `Sends a test message through every configured [alerts] channel, or the one named, and prints
per channel "sent" or "FAILED: <reason>". Nothing is queued or written to the database.
Exit 1 when a channel failed, 2 when none is configured.`,
    examples: ['ruawatch notify test --config /etc/ruawatch.toml', 'ruawatch notify test --config /etc/ruawatch.toml --channel matrix'],
  },
  async ({ values }, io) => {
    if (values.channel !== undefined && !CHANNEL_NAMES.includes(values.channel as never)) {
      throw new RuawatchError('E_USAGE', `--channel is one of ${CHANNEL_NAMES.join(', ')}, not "${values.channel}"`);
    }
    // No database: a test message is sent, not queued.
    const app = appFor(values, io, { level: 'warn' });
    const channels = app.channels(TEST_RETRY).filter((c) => values.channel === undefined || c.name === values.channel);
    if (channels.length === 0) {
      throw new RuawatchError(
        'E_CONFIG',
        values.channel ? `[alerts.${values.channel}] is not configured` : 'no [alerts] channel is configured',
      );
    }
    const results: { channel: string; ok: boolean; error?: string }[] = [];
    try {
      const now = Math.floor(Date.now() / 1000);
      await Promise.all(
        channels.map(async (c) => {
          try {
            // A fresh id per send: a second test within the same second must not be taken for a retry.
            const txnId = `rw-${randomUUID()}`;
            await withRetry(TEST_RETRY, () => c.send(renderTest(c.name, now), txnId));
            results.push({ channel: c.name, ok: true });
          } catch (err) {
            results.push({ channel: c.name, ok: false, error: errorMessage(err) });
          }
        }),
      );
    } finally {
      await Promise.all(channels.map((c) => c.close()));
      await app.close();
    }
    results.sort((a, b) => CHANNEL_NAMES.indexOf(a.channel as never) - CHANNEL_NAMES.indexOf(b.channel as never));
    if (values.json) io.stdout.write(`${JSON.stringify({ results })}\n`);
    else for (const r of results) io.stdout.write(`${r.channel}: ${r.ok ? 'sent' : `FAILED: ${r.error}`}\n`);
    return results.every((r) => r.ok) ? EXIT_OK : EXIT_FAILED;
  },
);

/** Parked messages listed by `notify status` and the dashboard API, the latest first. */
export const PARKED_SHOWN = 50;

export const notifyStatusCommand = defineCommand(
  {
    name: 'notify status',
    summary: 'notifications waiting or parked, and the state of each channel',
    flags: { db: dbFlag, config: configFlag, json: jsonFlag },
    about: `Shows per channel (those configured and any with messages in the database) the notifications
waiting, the ones parked (refused for good, or unanswered as often as is safe) and whether the
channel is ok, failing (the last run could not deliver; retried each run) or held (its last
failure refuses every message: a bad token, no permission); then the latest 50 parked
notifications with their reasons. Reads the database only.`,
    examples: ['ruawatch notify status --config /etc/ruawatch.toml'],
  },
  async ({ values }, io) => {
    const app = appFor(values, io, { level: 'warn', mustExist: true });
    try {
      const configured = CHANNEL_NAMES.filter((c) => app.config.alerts[c] !== undefined);
      const store = new AlertStore(app.db);
      const channels = store.channelStatus(configured);
      const parked = store.parked(PARKED_SHOWN);
      if (values.json) {
        io.stdout.write(`${JSON.stringify(statusJson(channels, parked, configured))}\n`);
      } else {
        io.stdout.write(statusText(channels, parked, configured));
      }
      return EXIT_OK;
    } finally {
      await app.close();
    }
  },
);

/**
 * How long `notify requeue` waits for a channel another process is delivering (its lease): a
 * delivery holds the queue it read, fallback notices included, so the queue is changed only
 * between deliveries. A delivery takes seconds, or a few minutes when a receiver times out.
 */
export const REQUEUE_WAIT_MS = 30_000;

export const notifyRequeueCommand = defineCommand(
  {
    name: 'notify requeue',
    summary: 'put parked notifications back in their queue, to be sent again',
    flags: {
      db: dbFlag,
      config: configFlag,
      all: { type: 'boolean', default: false, help: 'every parked notification, instead of IDs' },
      channel: { type: 'string', value: 'email|matrix|discord', help: 'with --all: only the ones of this channel' },
      json: jsonFlag,
    },
    args: 'ID...',
    about: `Puts parked notifications (the ids \`ruawatch notify status\` lists), or with --all every parked
one, back in their channel's queue, once the cause is fixed (a content filter, a size limit, an
endpoint that timed out). Each keeps its id and so its place: it goes out at the next delivery
(\`ruawatch alerts\`, a poll of \`ruawatch run\`, a digest), ahead of every message queued after it.
It starts over as a message never tried: a refusal parks it again, with a new notice.

A message parked as "unconfirmed" (sent twice without an answer) may have arrived already: sent
again, it may show twice. The short notice queued in place of a refused message is deleted when it
has not gone out yet: the message itself goes instead. Everything is changed in one transaction,
between two deliveries of a channel (this waits up to 30 s for one under way).

With --json it prints {"requeued": [{"id", "channel", "event", "title", "alert_key", "parked_at",
"parked_reason"}], "removed": [{"id", "channel", "fallback_for"}], "failed": [{"id", "error"}]}:
the notifications put back (with why they had been parked), the notices deleted, and the IDs not
put back.

Exit 0 when every ID was put back (or --all found nothing parked), 1 when an ID is not a parked,
undelivered notification (the others are still put back; each is listed with why) or a channel
stayed busy, 2 on usage or configuration errors.`,
    examples: [
      'ruawatch notify requeue --config /etc/ruawatch.toml 12 15',
      'ruawatch notify requeue --config /etc/ruawatch.toml --all --channel email',
    ],
  },
  async ({ values, positionals }, io) => {
    const channel = values.channel;
    if (channel !== undefined && !CHANNEL_NAMES.includes(channel as never)) {
      throw new RuawatchError('E_USAGE', `--channel is one of ${CHANNEL_NAMES.join(', ')}, not "${channel}"`);
    }
    const usage = usageLine(notifyRequeueCommand.spec);
    if (values.all && positionals.length) throw new RuawatchError('E_USAGE', `give IDs or --all, not both\n${usage}`);
    if (!values.all && !positionals.length) throw new RuawatchError('E_USAGE', `no ID given (or --all)\n${usage}`);
    if (channel !== undefined && !values.all) throw new RuawatchError('E_USAGE', `--channel goes with --all\n${usage}`);
    const ids = positionals.map((p) => {
      // "#12" as notify status prints it, or 12.
      const m = /^#?([1-9]\d{0,15})$/.exec(p);
      if (!m || !Number.isSafeInteger(Number(m[1])))
        throw new RuawatchError('E_USAGE', `an ID is a notification's number, not "${p}"\n${usage}`);
      return Number(m[1]);
    });
    const app = appFor(values, io, { level: 'warn', mustExist: true });
    try {
      const store = new AlertStore(app.db);
      const channels = values.all ? (channel ? [channel as ChannelName] : [...CHANNEL_NAMES]) : store.notificationChannels(ids);
      const result = await withChannels(store, channels, () =>
        store.requeue(values.all ? { all: true, channel: channel as ChannelName | undefined } : { ids }),
      );
      const configured = CHANNEL_NAMES.filter((c) => app.config.alerts[c] !== undefined);
      io.stdout.write(values.json ? `${JSON.stringify(requeueJson(result))}\n` : requeueText(result, configured, values.all));
      return result.failed.length ? EXIT_FAILED : EXIT_OK;
    } finally {
      await app.close();
    }
  },
);

/**
 * Runs `work` holding the delivery leases of these channels, so that no delivery under way sends
 * from a queue read before the change (a notice deleted here would still go out). Waits for a
 * channel another live process is delivering, up to REQUEUE_WAIT_MS.
 */
export async function withChannels<T>(store: AlertStore, channels: ChannelName[], work: () => T, waitMs = REQUEUE_WAIT_MS): Promise<T> {
  const holder = leaseHolder('notify requeue');
  const deadline = Date.now() + waitMs;
  for (;;) {
    const taken: ChannelName[] = [];
    let busy: { channel: ChannelName; pid: number; host: string; command: string } | null = null;
    for (const c of channels) {
      const lease = store.takeChannel(c, holder);
      if (!lease.held) {
        busy = { channel: c, ...lease.by };
        break;
      }
      taken.push(c);
    }
    try {
      if (!busy) return work();
    } finally {
      for (const c of taken) store.releaseChannel(c, holder.id);
    }
    if (Date.now() >= deadline) {
      throw new RuawatchError(
        'E_BUSY',
        `the ${busy.channel} queue is being delivered by another process (${busy.command === 'ruawatch' ? '' : 'ruawatch '}${busy.command}, pid ${busy.pid} on ${busy.host}); nothing was changed: try again when it is done`,
      );
    }
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
}

export function requeueJson(r: RequeueResult) {
  return {
    requeued: r.requeued.map((n) => ({ ...n, parked_at: isoOf(n.parked_at) })),
    removed: r.removed,
    failed: r.failed,
  };
}

function requeueText(r: RequeueResult, configured: ChannelName[], all: boolean): string {
  const lines: string[] = [];
  if (r.requeued.length) {
    lines.push(
      `Back in the queue, in ${r.requeued.length === 1 ? 'its' : 'their'} old place, for the next delivery: ${plural(r.requeued.length, 'notification')}`,
    );
    for (const n of r.requeued) {
      const note = configured.includes(n.channel) ? '' : ` (${n.channel} is not configured: it waits until it is)`;
      lines.push(`  #${n.id} ${n.channel} ${n.event}: ${printable(n.title)}${note}`);
      lines.push(`      was parked ${isoTime(n.parked_at)}: ${printable(n.parked_reason)}`);
    }
  } else if (all) {
    lines.push('Nothing is parked.');
  } else {
    lines.push('Nothing was put back.');
  }
  if (r.removed.length) {
    lines.push(
      `Deleted ${plural(r.removed.length, 'fallback notice')} not yet sent, standing for a message now back in the queue: ${r.removed.map((n) => `#${n.id} (for #${n.fallback_for})`).join(', ')}`,
    );
  }
  if (r.failed.length) {
    lines.push(`Not put back: ${plural(r.failed.length, 'ID')}`);
    for (const f of r.failed) lines.push(`  #${f.id}: ${f.error}`);
  }
  return `${lines.join('\n')}\n`;
}

const isoOf = (t: number | null) => (t === null ? null : new Date(t * 1000).toISOString());

export function statusJson(channels: ChannelStatus[], parked: ParkedNotification[], configured: ChannelName[]) {
  return {
    channels: channels.map((c) => ({
      channel: c.channel,
      configured: configured.includes(c.channel),
      pending: c.pending,
      parked: c.parked,
      state: c.failing_since === null ? 'ok' : c.held ? 'held' : 'failing',
      failing_since: isoOf(c.failing_since),
      last_error: c.last_error,
      last_delivered_at: isoOf(c.last_delivered_at),
    })),
    parked: parked.map((p) => ({
      id: p.id,
      channel: p.channel,
      event: p.event,
      title: p.title,
      alert_key: p.alert_key,
      fallback_for: p.fallback_for,
      queued_at: isoOf(p.queued_at),
      parked_at: isoOf(p.parked_at),
      attempts: p.attempts,
      unanswered: p.unanswered,
      reason: p.reason,
    })),
  };
}

/** Report text and server replies reach the terminal: control characters are shown, not obeyed. */
const printable = (s: string) => s.replace(/[\u0000-\u001f\u007f-\u009f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);

function statusText(channels: ChannelStatus[], parked: ParkedNotification[], configured: ChannelName[]): string {
  const lines: string[] = [];
  if (channels.length === 0) lines.push('No [alerts] channel is configured, and nothing was ever queued.');
  for (const c of channels) {
    const state =
      c.failing_since === null
        ? 'ok'
        : `${c.held ? 'HELD (refuses every message)' : 'FAILING'} since ${isoTime(c.failing_since)}: ${printable(c.last_error ?? '')}`;
    const last = c.last_delivered_at === null ? 'never delivered' : `last delivered ${isoTime(c.last_delivered_at)}`;
    const note = configured.includes(c.channel) ? '' : ' (not configured)';
    lines.push(`${c.channel}${note}: ${state}; ${c.pending} waiting, ${c.parked} parked; ${last}`);
  }
  const total = channels.reduce((n, c) => n + c.parked, 0);
  if (total) {
    lines.push('', `Parked: ${plural(total, 'notification')}${total > parked.length ? ` (the latest ${parked.length} shown)` : ''}`);
    for (const p of parked) {
      lines.push(`  #${p.id} ${p.channel} ${p.event} parked ${isoTime(p.parked_at)}: ${printable(p.title)}`);
      lines.push(`      ${printable(p.reason)}`);
    }
  }
  return `${lines.join('\n')}\n`;
}
