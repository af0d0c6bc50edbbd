import { randomUUID } from 'node:crypto';
import type { Finding, FindingKind, Severity } from '../analyse/types.js';
import { renderAlert, type AlertView } from '../notify/render.js';
import type { ChannelName, Message, NotificationEvent } from '../notify/types.js';
import type { Db } from './db.js';

export interface AlertRow extends Omit<AlertView, 'source_name'> {
  id: number;
  details: string;
  last_seen: number;
  last_notified: number | null;
  resolved_at: number | null;
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
  message: Message;
  txn_id: string;
  attempts: number;
}

const SEVERITY_RANK: Record<Severity, number> = { info: 0, warning: 1, critical: 2 };

/** The alerts, notifications and reverse_dns tables (migration 0003). */
export class AlertStore {
  constructor(private readonly db: Db) {}

  openAlerts(): AlertRow[] {
    return this.db.prepare(`SELECT * FROM alerts WHERE resolved_at IS NULL ORDER BY id`).all() as AlertRow[];
  }

  recentAlerts(limit: number): AlertRow[] {
    return this.db.prepare(`SELECT * FROM alerts ORDER BY last_seen DESC, id DESC LIMIT ?`).all(limit) as AlertRow[];
  }

  /**
   * Brings the alert state in line with this run's findings, in one transaction, and queues the
   * notifications that follow: a new finding opens an alert ("opened"); one still open is sent
   * again once `renotifySeconds` have passed or when its severity rises ("reminder"); an open
   * alert whose finding is gone is resolved ("resolved", except kinds in `silent`).
   */
  reconcile(findings: Finding[], now: number, opts: { renotifySeconds: number; channels: ChannelName[]; silent: Set<string> }): Reconciled {
    const out: Reconciled = { opened: [], reminded: [], ongoing: [], resolved: [], queued: 0 };
    const insertAlert = this.db.prepare(
      `INSERT INTO alerts (key, kind, severity, domain, source_ip, reporter, summary, details, first_seen, last_seen, last_notified)
       VALUES (@key, @kind, @severity, @domain, @source_ip, @reporter, @summary, @details, @now, @now, @now)`,
    );
    const updateAlert = this.db.prepare(
      `UPDATE alerts SET severity = @severity, summary = @summary, details = @details, reporter = @reporter, last_seen = @now,
              last_notified = CASE WHEN @notify THEN @now ELSE last_notified END
        WHERE id = @id`,
    );
    const resolve = this.db.prepare(`UPDATE alerts SET resolved_at = @now WHERE id = @id`);
    const pendingFor = this.db.prepare(`SELECT 1 FROM notifications WHERE alert_id = ? AND channel = ? AND delivered_at IS NULL`);
    const queue = (alertId: number, view: AlertView, event: 'opened' | 'reminder' | 'resolved') => {
      for (const channel of opts.channels) {
        // A channel that is down does not pile up reminders: one undelivered message is enough.
        if (event === 'reminder' && pendingFor.get(alertId, channel)) continue;
        this.enqueue(channel, event, renderAlert(view, event, now), alertId, now);
        out.queued++;
      }
    };

    this.db.transaction(() => {
      const open = new Map(this.openAlerts().map((a) => [a.key, a]));
      for (const f of findings) {
        const existing = open.get(f.key);
        const params = { ...f, details: JSON.stringify({ ...f.details, source_name: f.source_name }), now };
        if (!existing) {
          const id = Number(insertAlert.run(params).lastInsertRowid);
          queue(id, { ...f, first_seen: now }, 'opened');
          out.opened.push(f);
          continue;
        }
        open.delete(f.key);
        const due = existing.last_notified === null || now - existing.last_notified >= opts.renotifySeconds;
        const worse = SEVERITY_RANK[f.severity] > SEVERITY_RANK[existing.severity];
        const notify = due || worse;
        updateAlert.run({ ...params, id: existing.id, notify: notify ? 1 : 0 });
        if (notify) {
          queue(existing.id, { ...f, first_seen: existing.first_seen }, 'reminder');
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

  enqueue(channel: ChannelName, event: NotificationEvent, message: Message, alertId: number | null, now: number): number {
    const info = this.db
      .prepare(`INSERT INTO notifications (alert_id, event, channel, message, txn_id, created_at) VALUES (?, ?, ?, ?, ?, ?)`)
      .run(alertId, event, channel, JSON.stringify(message), `rw-${randomUUID()}`, now);
    return Number(info.lastInsertRowid);
  }

  /** Undelivered notifications of a channel, oldest first: they are sent in the order queued. */
  pending(channel: ChannelName): PendingNotification[] {
    const rows = this.db
      .prepare(
        `SELECT id, channel, event, message, txn_id, attempts FROM notifications WHERE channel = ? AND delivered_at IS NULL ORDER BY id`,
      )
      .all(channel) as (Omit<PendingNotification, 'message'> & { message: string })[];
    return rows.map((r) => ({ ...r, message: JSON.parse(r.message) as Message }));
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

function viewOf(a: AlertRow): AlertView {
  const details = JSON.parse(a.details) as { source_name?: string | null };
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
