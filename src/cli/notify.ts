import { randomUUID } from 'node:crypto';
import { resolveDbPath } from '../config/load.js';
import { RuawatchError, errorMessage } from '../errors.js';
import { isoTime, renderTest } from '../notify/render.js';
import { CHANNEL_NAMES, defaultRetry, withRetry, type ChannelName, type RetryPolicy } from '../notify/types.js';
import { channelsOf } from '../pipeline/alerts.js';
import { AlertStore, type ChannelStatus, type ParkedNotification } from '../store/alerts.js';
import { openDb } from '../store/db.js';
import { EXIT_FAILED, EXIT_OK, openConfig, parseFlags, plural, storeFlags, type Io } from './common.js';

export const notifyUsage = `usage: ruawatch notify test [--config FILE] [--channel email|matrix|discord] [--json]
  Sends a test message through every configured [alerts] channel, or the one named.
usage: ruawatch notify status [--db FILE] [--config FILE] [--json]
  Shows per channel the notifications waiting, the ones parked (refused for good, or unanswered
  as often as is safe) with their reasons, and whether the channel is failing or held.`;

// A test should answer quickly: one retry, one second apart.
const TEST_RETRY: RetryPolicy = { ...defaultRetry, attempts: 2 };

export async function notifyCommand(args: string[], io: Io): Promise<number> {
  const [sub, ...rest] = args;
  if (sub === 'status') return notifyStatus(rest, io);
  if (sub !== 'test') throw new RuawatchError('E_USAGE', `expected "notify test" or "notify status"\n${notifyUsage}`);
  const { values } = parseFlags(
    rest,
    { config: { type: 'string' }, channel: { type: 'string' }, json: { type: 'boolean', default: false } },
    false,
  );
  if (values.channel !== undefined && !CHANNEL_NAMES.includes(values.channel as never)) {
    throw new RuawatchError('E_USAGE', `--channel is one of ${CHANNEL_NAMES.join(', ')}, not "${values.channel}"`);
  }
  const loaded = openConfig(values.config, io);
  const channels = channelsOf(loaded.config, TEST_RETRY).filter((c) => values.channel === undefined || c.name === values.channel);
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
  }
  results.sort((a, b) => CHANNEL_NAMES.indexOf(a.channel as never) - CHANNEL_NAMES.indexOf(b.channel as never));
  if (values.json) io.stdout.write(`${JSON.stringify({ results })}\n`);
  else for (const r of results) io.stdout.write(`${r.channel}: ${r.ok ? 'sent' : `FAILED: ${r.error}`}\n`);
  return results.every((r) => r.ok) ? EXIT_OK : EXIT_FAILED;
}

/** Parked messages listed by `notify status` and the dashboard API, the latest first. */
export const PARKED_SHOWN = 50;

async function notifyStatus(args: string[], io: Io): Promise<number> {
  const { values } = parseFlags(args, storeFlags, false);
  const loaded = openConfig(values.config, io);
  const configured = CHANNEL_NAMES.filter((c) => loaded.config.alerts[c] !== undefined);
  const db = openDb(resolveDbPath(values.db, loaded, io.env));
  try {
    const store = new AlertStore(db);
    const channels = store.channelStatus(configured);
    const parked = store.parked(PARKED_SHOWN);
    if (values.json) {
      io.stdout.write(`${JSON.stringify(statusJson(channels, parked, configured))}\n`);
    } else {
      io.stdout.write(statusText(channels, parked, configured));
    }
    return EXIT_OK;
  } finally {
    db.close();
  }
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
