import { randomUUID } from 'node:crypto';
import type { Finding, FindingKind, OpenAlert, Severity } from '../analyse/types.js';
import {
  CHANNEL_NAMES,
  type AlertRenderer,
  type AlertView,
  type ChannelName,
  type Message,
  type NotificationEvent,
} from '../notify/types.js';
import type { Db } from './db.js';
import { Leases, type LeaseHolder } from './leases.js';

export interface AlertRow extends Omit<AlertView, 'source_name'> {
  id: number;
  details: string;
  last_seen: number;
  last_notified: number | null;
  resolved_at: number | null;
  /** JSON: the finding's details when it opened (migration 0008); null for alerts opened before. */
  baseline: string | null;
  /** JSON: what the last message said (Notified); null for alerts opened before migration 0008. */
  notified: string | null;
}

/** What an alert's last message said, to tell whether it got worse since. */
export interface Notified {
  severity: Severity;
  /** Failing messages (or failed sessions) per day, when the kind has a volume. */
  volume: number | null;
  /** Failing sources, when the finding counts them. */
  sources: number | null;
}

const num = (v: unknown): number | null => (typeof v === 'number' && Number.isFinite(v) ? v : null);

/**
 * What a finding says that a reminder compares: its severity, its failing volume per day and the
 * number of failing sources. The volume of a new source is averaged over the days since the alert
 * opened (its 7-day total grows every day while it simply goes on).
 */
export function notifiedOf(f: Finding, firstSeen: number, now: number): Notified {
  const d = f.details;
  let volume: number | null = null;
  const messages = num(d.recent_messages);
  const rate = num(d.recent_pass_rate);
  if (f.kind === 'new_failing_source' && messages !== null) {
    const days = Math.min(7, Math.floor((now - firstSeen) / 86_400) + 1);
    volume = (messages * (1 - (rate ?? 0) / 100)) / days;
  } else if (f.kind === 'tls_failures') {
    volume = num(d.failed_sessions);
  }
  const sources = num(d.failing_sources) ?? num(d.sources);
  return { severity: f.severity, volume, sources };
}

/** Why an open alert is sent again, or null when nothing changed that a postmaster would act on. */
export function changeOf(f: Finding, before: Notified | null, after: Notified): string | null {
  if (!before) return null;
  if (SEVERITY_RANK[after.severity] > SEVERITY_RANK[before.severity]) return `Worse: now ${after.severity}, was ${before.severity}.`;
  if (before.volume !== null && after.volume !== null && before.volume > 0 && after.volume >= 2 * before.volume) {
    return `Worse: ${Math.round(after.volume).toLocaleString('en-US')} ${f.kind === 'tls_failures' ? 'failed sessions' : 'failing messages a day'} now, ${Math.round(before.volume).toLocaleString('en-US')} when last sent.`;
  }
  if (before.sources !== null && after.sources !== null && after.sources >= Math.max(before.sources + 1, 1.5 * before.sources)) {
    return `Worse: ${after.sources} failing sources now, ${before.sources} when last sent.`;
  }
  return null;
}

export interface Reconciled {
  opened: Finding[];
  reminded: Finding[];
  /** Still open, nothing sent this time. */
  ongoing: Finding[];
  resolved: AlertRow[];
  queued: number;
}

export interface PendingNotification {
  id: number;
  channel: ChannelName;
  event: NotificationEvent;
  alert_id: number | null;
  message: Message;
  txn_id: string;
  attempts: number;
  /** Sends that got no answer and may have been posted, and when the first of them was (epoch seconds). */
  unanswered: number;
  first_unanswered_at: number | null;
  /** For a fallback notice: the parked message it stands for. */
  fallback_for: number | null;
}

/** How a channel's deliveries go, for `ruawatch notify status`, the dashboard API and /metrics. */
export interface ChannelStatus {
  channel: ChannelName;
  /** Queued and not delivered yet (parked ones not counted). */
  pending: number;
  parked: number;
  last_delivered_at: number | null;
  /** The first failed run of the current streak; null when the last run got through. */
  failing_since: number | null;
  /** The last failure would meet every message (credentials, permission, unknown room). */
  held: boolean;
  last_error: string | null;
  last_error_at: number | null;
}

export interface ParkedNotification {
  id: number;
  channel: ChannelName;
  event: NotificationEvent;
  title: string;
  alert_key: string | null;
  queued_at: number;
  parked_at: number;
  reason: string;
  attempts: number;
  unanswered: number;
  /** Set on a fallback notice that was itself parked. */
  fallback_for: number | null;
}

/** What to put back in the queue: the parked messages named, or every one (of a channel). */
export type RequeueSelection = { ids: number[] } | { all: true; channel?: ChannelName | undefined };

export interface RequeueResult {
  /** Back in their channel's queue, by id (so each goes out before anything queued after it). */
  requeued: {
    id: number;
    channel: ChannelName;
    event: NotificationEvent;
    title: string;
    alert_key: string | null;
    parked_at: number;
    parked_reason: string;
  }[];
  /** Fallback notices deleted: the message each stood for is back in the queue. */
  removed: { id: number; channel: ChannelName; fallback_for: number }[];
  /** Ids named that are not a parked, undelivered notification, with why. */
  failed: { id: number; error: string }[];
}

const SEVERITY_RANK: Record<Severity, number> = { info: 0, warning: 1, critical: 2 };

/** The open alerts as the rules read them (analyse/types.ts OpenAlert), by key. */
export function openAlertsForRules(rows: AlertRow[]): Map<string, OpenAlert> {
  const out = new Map<string, OpenAlert>();
  for (const a of rows) {
    let baseline: Record<string, unknown> = {};
    try {
      const v = JSON.parse(a.baseline ?? a.details) as unknown;
      if (v && typeof v === 'object' && !Array.isArray(v)) baseline = v as Record<string, unknown>;
    } catch {
      // A damaged row is judged as if it had no baseline: the rules fall back on the current one.
    }
    out.set(a.key, { key: a.key, domain: a.domain, severity: a.severity, firstSeen: a.first_seen, baseline });
  }
  return out;
}

/** The alerts, notifications and reverse_dns tables (migration 0003), and delivery state (0006). */
/**
 * A channel's delivery lease not renewed for this long is stale. It is renewed after each message,
 * and one message can take a few minutes to fail (four tries, waits of up to a minute, a minute's
 * timeout each: notify/types.ts defaultRetry).
 */
export const CHANNEL_LEASE_SECONDS = 600;

export class AlertStore {
  private leases: Leases<'channel_leases'> | null = null;

  constructor(private readonly db: Db) {}

  /**
   * Takes the lease of delivering a channel's queue for this process, unless another process holds
   * it (src/store/leases.ts): two processes sending the same queue would each send its messages.
   */
  takeChannel(channel: ChannelName, holder: LeaseHolder): { held: true } | { held: false; by: LeaseHolder } {
    return this.channelLeases().take(channel, holder);
  }

  /** Extends the channel's lease; false when another process has taken it over (it went stale). */
  renewChannel(channel: ChannelName, holderId: string): boolean {
    return this.channelLeases().renew(channel, holderId);
  }

  releaseChannel(channel: ChannelName, holderId: string): void {
    this.channelLeases().release(channel, holderId);
  }

  private channelLeases(): Leases<'channel_leases'> {
    return (this.leases ??= new Leases(this.db, 'channel_leases', CHANNEL_LEASE_SECONDS));
  }

  openAlerts(): AlertRow[] {
    return this.db.prepare(`SELECT * FROM alerts WHERE resolved_at IS NULL ORDER BY id`).all() as AlertRow[];
  }

  recentAlerts(limit: number): AlertRow[] {
    return this.db.prepare(`SELECT * FROM alerts ORDER BY last_seen DESC, id DESC LIMIT ?`).all(limit) as AlertRow[];
  }

  /**
   * Brings the alert state in line with this run's findings, in one transaction, and queues the
   * notifications that follow: a new finding opens an alert ("opened") and freezes its baseline;
   * one still open is sent again when it got worse since its last message (severity up, failing
   * volume doubled, more failing sources: changeOf), or once `renotifySeconds` have passed when
   * that is not 0, except to a channel that parked its last message ("reminder"); an open alert
   * whose finding is gone is resolved ("resolved", except kinds in `silent`).
   */
  reconcile(
    findings: Finding[],
    now: number,
    opts: { renotifySeconds: number; channels: ChannelName[]; silent: Set<string>; render: AlertRenderer },
  ): Reconciled {
    const out: Reconciled = { opened: [], reminded: [], ongoing: [], resolved: [], queued: 0 };
    const insertAlert = this.db.prepare(
      `INSERT INTO alerts (key, kind, severity, domain, source_ip, reporter, summary, details, first_seen, last_seen, last_notified, baseline, notified)
       VALUES (@key, @kind, @severity, @domain, @source_ip, @reporter, @summary, @details, @now, @now, @now, @details, @notified)`,
    );
    const updateAlert = this.db.prepare(
      `UPDATE alerts SET severity = @severity, summary = @summary, details = @details, reporter = @reporter, last_seen = @now,
              last_notified = CASE WHEN @notify THEN @now ELSE last_notified END,
              notified = CASE WHEN @notify THEN @notified ELSE COALESCE(notified, @notified) END
        WHERE id = @id`,
    );
    // A channel that refused an alert's last message is not sent timed reminders of it.
    const lastParked = this.db.prepare(
      `SELECT parked_at IS NOT NULL FROM notifications WHERE alert_id = ? AND channel = ? AND fallback_for IS NULL ORDER BY id DESC LIMIT 1`,
    );
    const resolve = this.db.prepare(`UPDATE alerts SET resolved_at = @now WHERE id = @id`);
    const pendingFor = this.db.prepare(
      `SELECT 1 FROM notifications WHERE alert_id = ? AND channel = ? AND delivered_at IS NULL AND parked_at IS NULL`,
    );
    const queue = (alertId: number, view: AlertView, event: 'opened' | 'reminder' | 'resolved', timed = false) => {
      for (const channel of opts.channels) {
        // A channel that is down does not pile up reminders: one undelivered message is enough.
        if (event === 'reminder' && pendingFor.get(alertId, channel)) continue;
        if (timed && lastParked.pluck().get(alertId, channel) === 1) continue;
        this.enqueue(channel, event, opts.render.alert(view, event, now), alertId, now);
        out.queued++;
      }
    };

    this.db.transaction(() => {
      const open = new Map(this.openAlerts().map((a) => [a.key, a]));
      for (const f of findings) {
        const existing = open.get(f.key);
        const params = { ...f, details: JSON.stringify({ ...f.details, source_name: f.source_name }), now };
        if (!existing) {
          const id = Number(insertAlert.run({ ...params, notified: JSON.stringify(notifiedOf(f, now, now)) }).lastInsertRowid);
          queue(id, { ...f, first_seen: now }, 'opened');
          out.opened.push(f);
          continue;
        }
        open.delete(f.key);
        const now_ = notifiedOf(f, existing.first_seen, now);
        const before = parseOr<Notified | null>(existing.notified, null) ?? { severity: existing.severity, volume: null, sources: null };
        const change = changeOf(f, before, now_);
        const due = opts.renotifySeconds > 0 && (existing.last_notified === null || now - existing.last_notified >= opts.renotifySeconds);
        const notify = change !== null || due;
        updateAlert.run({ ...params, id: existing.id, notify: notify ? 1 : 0, notified: JSON.stringify(now_) });
        if (notify) {
          queue(existing.id, { ...f, first_seen: existing.first_seen, ...(change ? { change } : {}) }, 'reminder', change === null);
          out.reminded.push(f);
        } else {
          out.ongoing.push(f);
        }
      }
      for (const gone of open.values()) {
        resolve.run({ id: gone.id, now });
        out.resolved.push({ ...gone, resolved_at: now });
        if (!opts.silent.has(gone.kind)) queue(gone.id, viewOf(gone), 'resolved');
      }
    })();
    return out;
  }

  enqueue(
    channel: ChannelName,
    event: NotificationEvent,
    message: Message,
    alertId: number | null,
    now: number,
    fallbackFor: number | null = null,
  ): number {
    const info = this.db
      .prepare(
        `INSERT INTO notifications (alert_id, event, channel, message, txn_id, created_at, fallback_for) VALUES (?, ?, ?, ?, ?, ?, ?)`,
      )
      .run(alertId, event, channel, JSON.stringify(message), `rw-${randomUUID()}`, now, fallbackFor);
    return Number(info.lastInsertRowid);
  }

  /**
   * Undelivered notifications of a channel that are not parked, oldest first: they are sent in
   * the order queued, a fallback notice right after the message it stands for.
   */
  pending(channel: ChannelName): PendingNotification[] {
    const rows = this.db
      .prepare(
        `SELECT id, channel, event, alert_id, message, txn_id, attempts, unanswered, first_unanswered_at, fallback_for
           FROM notifications WHERE channel = ? AND delivered_at IS NULL AND parked_at IS NULL
          ORDER BY COALESCE(fallback_for, id), id`,
      )
      .all(channel) as (Omit<PendingNotification, 'message'> & { message: string })[];
    return rows.map((r) => this.pendingOf(r));
  }

  private pendingOf(r: Omit<PendingNotification, 'message'> & { message: string }): PendingNotification {
    return { ...r, message: JSON.parse(r.message) as Message };
  }

  markDelivered(id: number, attempts: number, now: number): void {
    this.db
      .prepare(`UPDATE notifications SET delivered_at = ?, last_attempt = ?, attempts = attempts + ?, last_error = NULL WHERE id = ?`)
      .run(now, now, attempts, id);
  }

  markFailed(id: number, attempts: number, error: string, now: number): void {
    this.db
      .prepare(`UPDATE notifications SET last_attempt = ?, attempts = attempts + ?, last_error = ? WHERE id = ?`)
      .run(now, attempts, error, id);
  }

  /** Recorded the moment a send goes unanswered, before anything else can fail. */
  noteUnanswered(id: number, now: number): void {
    this.db
      .prepare(
        `UPDATE notifications SET unanswered = unanswered + 1, first_unanswered_at = COALESCE(first_unanswered_at, ?), last_attempt = ? WHERE id = ?`,
      )
      .run(now, now, id);
  }

  /** Takes a message out of its channel's queue for good, with the reason. */
  park(id: number, attempts: number, reason: string, now: number): void {
    this.db
      .prepare(
        `UPDATE notifications SET parked_at = ?, parked_reason = ?, last_attempt = ?, attempts = attempts + ?, last_error = ? WHERE id = ?`,
      )
      .run(now, reason, now, attempts, reason, id);
  }

  /**
   * Queues the short notice that stands for a parked message on its channel: the alert's kind and
   * domain, nothing else from the reports (render.ts renderFallback).
   */
  enqueueFallback(
    parked: PendingNotification,
    status: string | null,
    now: number,
    render: AlertRenderer,
    how: 'refused' | 'deferred' = 'refused',
  ): PendingNotification {
    const alert = parked.alert_id
      ? (this.db.prepare(`SELECT kind, domain FROM alerts WHERE id = ?`).get(parked.alert_id) as
          { kind: FindingKind; domain: string } | undefined)
      : undefined;
    const message = render.fallback(alert ?? null, parked.event, status, now, how);
    const id = this.enqueue(parked.channel, parked.event, message, parked.alert_id, now, parked.id);
    const row = this.db
      .prepare(
        `SELECT id, channel, event, alert_id, message, txn_id, attempts, unanswered, first_unanswered_at, fallback_for FROM notifications WHERE id = ?`,
      )
      .get(id) as Omit<PendingNotification, 'message'> & { message: string };
    return this.pendingOf(row);
  }

  channelDelivered(channel: ChannelName, now: number): void {
    this.db
      .prepare(
        `INSERT INTO notification_channels (channel, last_delivered_at) VALUES (?, ?)
         ON CONFLICT (channel) DO UPDATE SET last_delivered_at = excluded.last_delivered_at, failing_since = NULL, held = 0`,
      )
      .run(channel, now);
  }

  channelFailed(channel: ChannelName, error: string, held: boolean, now: number): void {
    this.db
      .prepare(
        `INSERT INTO notification_channels (channel, failing_since, held, last_error, last_error_at) VALUES (@channel, @now, @held, @error, @now)
         ON CONFLICT (channel) DO UPDATE SET failing_since = COALESCE(failing_since, excluded.failing_since), held = excluded.held,
                last_error = excluded.last_error, last_error_at = excluded.last_error_at`,
      )
      .run({ channel, now, held: held ? 1 : 0, error });
  }

  /** Waiting and parked messages per channel: every channel that has any, and the ones named. */
  channelStatus(configured: ChannelName[] = []): ChannelStatus[] {
    // Each count through its partial index (notifications_pending, notifications_parked): the
    // delivered messages, nearly all of the table after a while, are never read (/metrics asks on
    // every scrape).
    const waiting = new Map(
      this.db
        .prepare(`SELECT channel, COUNT(*) FROM notifications WHERE delivered_at IS NULL AND parked_at IS NULL GROUP BY channel`)
        .raw(true)
        .all() as [ChannelName, number][],
    );
    const parked = new Map(
      this.db
        .prepare(`SELECT channel, COUNT(*) FROM notifications WHERE parked_at IS NOT NULL AND delivered_at IS NULL GROUP BY channel`)
        .raw(true)
        .all() as [ChannelName, number][],
    );
    const states = this.db.prepare(`SELECT * FROM notification_channels`).all() as {
      channel: ChannelName;
      last_delivered_at: number | null;
      failing_since: number | null;
      held: number;
      last_error: string | null;
      last_error_at: number | null;
    }[];
    const names = new Set<ChannelName>([...configured, ...waiting.keys(), ...parked.keys(), ...states.map((s) => s.channel)]);
    return CHANNEL_NAMES.filter((c) => names.has(c)).map((channel) => {
      const st = states.find((x) => x.channel === channel);
      return {
        channel,
        pending: waiting.get(channel) ?? 0,
        parked: parked.get(channel) ?? 0,
        last_delivered_at: st?.last_delivered_at ?? null,
        failing_since: st?.failing_since ?? null,
        held: st?.held === 1,
        last_error: st?.failing_since ? st.last_error : null,
        last_error_at: st?.failing_since ? st.last_error_at : null,
      };
    });
  }

  /** Parked messages, the latest first. */
  parked(limit: number): ParkedNotification[] {
    const rows = this.db
      .prepare(
        `SELECT n.id, n.channel, n.event, n.message, a.key AS alert_key, n.created_at AS queued_at, n.parked_at, n.parked_reason AS reason,
                n.attempts, n.unanswered, n.fallback_for
           FROM notifications n LEFT JOIN alerts a ON a.id = n.alert_id
          WHERE n.parked_at IS NOT NULL AND n.delivered_at IS NULL
          ORDER BY n.parked_at DESC, n.id DESC LIMIT ?`,
      )
      .all(limit) as (Omit<ParkedNotification, 'title'> & { message: string })[];
    return rows.map(({ message, ...r }) => ({ ...r, title: (JSON.parse(message) as Message).title }));
  }

  /** The channels of these notifications (the ones that exist). */
  notificationChannels(ids: number[]): ChannelName[] {
    if (ids.length === 0) return [];
    const rows = this.db
      .prepare(`SELECT DISTINCT channel FROM notifications WHERE id IN (SELECT value FROM json_each(?))`)
      .pluck()
      .all(JSON.stringify(ids)) as ChannelName[];
    return CHANNEL_NAMES.filter((c) => rows.includes(c));
  }

  /**
   * Puts parked, undelivered notifications back in their channel's queue, in one transaction. Each
   * keeps its id (and transaction id), so it goes out before anything queued after it, and starts
   * over as a message never tried: not parked, no unanswered sends, no last error, no attempts
   * (the delivery sets a message aside when it fails again after failing in an earlier run,
   * pipeline/alerts.ts deliverChannel: a requeued one gets its first run like a new one). A
   * fallback notice still undelivered that stands for one of them is deleted: it would say the
   * message could not be delivered right after the message itself, and if the message is refused
   * again the delivery queues a fresh one. Ids that are not a parked, undelivered notification are
   * left alone and listed in `failed`.
   */
  requeue(selection: RequeueSelection): RequeueResult {
    type Row = {
      id: number;
      channel: ChannelName;
      event: NotificationEvent;
      message: string;
      alert_key: string | null;
      delivered_at: number | null;
      parked_at: number | null;
      parked_reason: string | null;
    };
    const columns = `n.id, n.channel, n.event, n.message, a.key AS alert_key, n.delivered_at, n.parked_at, n.parked_reason
      FROM notifications n LEFT JOIN alerts a ON a.id = n.alert_id`;
    const out: RequeueResult = { requeued: [], removed: [], failed: [] };
    this.db
      .transaction(() => {
        let rows: Row[];
        if ('ids' in selection) {
          const ids = [...new Set(selection.ids)];
          const found = new Map(
            (this.db.prepare(`SELECT ${columns} WHERE n.id IN (SELECT value FROM json_each(?))`).all(JSON.stringify(ids)) as Row[]).map(
              (r) => [r.id, r],
            ),
          );
          rows = [];
          for (const id of ids) {
            const r = found.get(id);
            if (!r) out.failed.push({ id, error: 'no such notification' });
            else if (r.delivered_at !== null) out.failed.push({ id, error: `already delivered (${isoOf(r.delivered_at)})` });
            else if (r.parked_at === null) out.failed.push({ id, error: `not parked: it is waiting in the ${r.channel} queue` });
            else rows.push(r);
          }
        } else {
          rows = this.db
            .prepare(
              `SELECT ${columns} WHERE n.parked_at IS NOT NULL AND n.delivered_at IS NULL AND (@channel IS NULL OR n.channel = @channel)`,
            )
            .all({ channel: selection.channel ?? null }) as Row[];
        }
        const back = new Set(rows.map((r) => r.id));
        // Undelivered notices, waiting or parked, of the messages going back.
        const notices = this.db
          .prepare(
            `SELECT id, channel, fallback_for FROM notifications
              WHERE fallback_for IN (SELECT value FROM json_each(?)) AND delivered_at IS NULL ORDER BY id`,
          )
          .all(JSON.stringify([...back])) as RequeueResult['removed'];
        const drop = this.db.prepare(`DELETE FROM notifications WHERE id = ?`);
        for (const n of notices) {
          drop.run(n.id);
          back.delete(n.id);
          out.removed.push(n);
        }
        const reset = this.db.prepare(
          `UPDATE notifications SET parked_at = NULL, parked_reason = NULL, unanswered = 0, first_unanswered_at = NULL, last_error = NULL,
                  attempts = 0
            WHERE id = ?`,
        );
        for (const r of rows.sort((a, b) => a.id - b.id)) {
          if (!back.has(r.id)) continue;
          reset.run(r.id);
          out.requeued.push({
            id: r.id,
            channel: r.channel,
            event: r.event,
            title: titleOf(r.message),
            alert_key: r.alert_key,
            parked_at: r.parked_at!,
            parked_reason: r.parked_reason ?? '',
          });
        }
      })
      .immediate();
    out.failed.sort((a, b) => a.id - b.id);
    return out;
  }

  cachedName(ip: string, now: number, maxAge: { found: number; missing: number }): { hit: boolean; name: string | null } {
    const row = this.db.prepare(`SELECT name, looked_up_at FROM reverse_dns WHERE ip = ?`).get(ip) as
      { name: string | null; looked_up_at: number } | undefined;
    if (!row) return { hit: false, name: null };
    const age = now - row.looked_up_at;
    return age <= (row.name ? maxAge.found : maxAge.missing) ? { hit: true, name: row.name } : { hit: false, name: null };
  }

  cacheName(ip: string, name: string | null, now: number): void {
    this.db
      .prepare(
        `INSERT INTO reverse_dns (ip, name, looked_up_at) VALUES (?, ?, ?) ON CONFLICT (ip) DO UPDATE SET name = excluded.name, looked_up_at = excluded.looked_up_at`,
      )
      .run(ip, name, now);
  }
}

/**
 * JSON kept in the alerts table, read back; a row damaged by hand or by a disk must not stop every
 * later evaluation, so what cannot be read counts as `fallback`.
 */
function parseOr<T>(text: string | null, fallback: T): T {
  if (text === null) return fallback;
  try {
    return (JSON.parse(text) as T | null) ?? fallback;
  } catch {
    return fallback;
  }
}

function isoOf(t: number): string {
  return new Date(t * 1000).toISOString();
}

/** A queued message's title; a row damaged by hand shows as such rather than stopping the command. */
function titleOf(message: string): string {
  const m = parseOr<Partial<Message> | null>(message, null);
  return typeof m?.title === 'string' ? m.title : '(unreadable message)';
}

function viewOf(a: AlertRow): AlertView {
  const details = parseOr<{ source_name?: string | null }>(a.details, {});
  return {
    key: a.key,
    kind: a.kind as FindingKind,
    severity: a.severity,
    domain: a.domain,
    source_ip: a.source_ip,
    source_name: details.source_name ?? null,
    reporter: a.reporter,
    summary: a.summary,
    first_seen: a.first_seen,
  };
}
