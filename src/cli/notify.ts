import { randomUUID } from 'node:crypto';
import { RuawatchError, errorMessage } from '../errors.js';
import { isoTime, renderTest } from '../notify/render.js';
import { CHANNEL_NAMES, defaultRetry, withRetry, type ChannelName, type RetryPolicy } from '../notify/types.js';
import { AlertStore, type ChannelStatus, type ParkedNotification } from '../store/alerts.js';
import { configFlag, dbFlag, defineCommand, jsonFlag } from './command.js';
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
