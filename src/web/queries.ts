import { DAY } from '../analyse/index.js';
import type { Config } from '../config/schema.js';
import { AlertStore } from '../store/alerts.js';
import { passRateSeries, recentReports, reportDetail, sourceRows, tlsSeries } from '../store/dashboard.js';
import type { Db } from '../store/db.js';
import type { WorkerState } from '../worker/worker.js';
import { metricsText } from './metrics.js';

/**
 * The database reads behind the web server, as plain messages so they can run in the query thread
 * (query-thread.ts) as well as inline. Each returns the response body, or null for "not found".
 */
export type Query =
  | { kind: 'overview'; days: number; now: number }
  | { kind: 'report'; id: number }
  | { kind: 'metrics'; state: WorkerState; config: Config; now: number };

/** Rows /api/overview returns at most per list; the JSON states them, with what was cut. */
export const OVERVIEW_LIMITS = { domains: 20, sources: 200, reports: 100, open_alerts: 200, recent_alerts: 50, parked: 50 } as const;

export function runQuery(db: Db, q: Query): string | null {
  switch (q.kind) {
    case 'overview':
      return `${JSON.stringify(overview(db, q.days, q.now))}\n`;
    case 'report': {
      const detail = reportDetail(db, q.id);
      return detail ? `${JSON.stringify(detail)}\n` : null;
    }
    case 'metrics':
      return metricsText(db, q.state, q.config, q.now);
  }
}

/** The first `limit` items, and whether there were more. */
function head<T>(items: T[], limit: number): [T[], boolean] {
  return items.length > limit ? [items.slice(0, limit), true] : [items, false];
}

/** The `limit` series with the most volume, in their original order. */
function busiest<D, T extends { days: D[] }>(series: T[], limit: number, volume: (d: D) => number): [T[], boolean] {
  if (series.length <= limit) return [series, false];
  const total = (s: T) => s.days.reduce((n, d) => n + volume(d), 0);
  const keep = new Set([...series].sort((a, b) => total(b) - total(a)).slice(0, limit));
  return [series.filter((s) => keep.has(s)), true];
}

export function overview(db: Db, days: number, now: number) {
  const L = OVERVIEW_LIMITS;
  const today = Math.floor(now / DAY) * DAY;
  const from = today - days * DAY;
  const store = new AlertStore(db);
  const [domains, moreDomains] = busiest(passRateSeries(db, from, today + DAY), L.domains, (d: { messages: number }) => d.messages);
  const [tls, moreTls] = busiest(
    tlsSeries(db, from, today + DAY),
    L.domains,
    (d: { successful: number; failed: number }) => d.successful + d.failed,
  );
  const [sources, moreSources] = head(sourceRows(db, today - 6 * DAY, today + DAY, L.sources + 1), L.sources);
  const [open, moreOpen] = head(store.openAlerts(), L.open_alerts);
  const [reports, moreReports] = head(recentReports(db, L.reports + 1, now), L.reports);
  return {
    generated_at: new Date(now * 1000).toISOString(),
    days,
    limits: L,
    truncated: { domains: moreDomains, tls: moreTls, sources: moreSources, open_alerts: moreOpen, reports: moreReports },
    domains,
    tls,
    sources,
    alerts: { open, recent: store.recentAlerts(L.recent_alerts) },
    // Per channel: waiting, parked, failing or held; the latest parked messages with their reasons.
    notifications: { channels: store.channelStatus(), parked: store.parked(L.parked) },
    reports,
  };
}
