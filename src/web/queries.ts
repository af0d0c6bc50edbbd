import type { Config } from '../config/schema.js';
import { AlertStore } from '../store/alerts.js';
import { MAX_DOMAINS, MAX_SOURCES, overview as fromRollups, recentReports, reportDetail } from '../store/dashboard.js';
import type { Db } from '../store/db.js';
import type { WorkerState } from '../worker/worker.js';
import { metricsText } from './metrics.js';

/**
 * The database reads behind the web server, as plain messages so they can run in the query thread
 * (query-thread.ts) as well as inline. Each returns the response body, or null for "not found".
 */
export type Query =
  | { kind: 'overview'; days: number; now: number; recentDays: number; domain: string | null }
  | { kind: 'report'; id: number }
  | { kind: 'metrics'; state: WorkerState; config: Config; now: number };

/** Rows /api/overview returns at most per list; the JSON states them, with what was cut. */
export const OVERVIEW_LIMITS = {
  domains: MAX_DOMAINS,
  sources: MAX_SOURCES,
  reports: 100,
  open_alerts: 200,
  recent_alerts: 50,
  parked: 50,
} as const;

export function runQuery(db: Db, q: Query): string | null {
  switch (q.kind) {
    case 'overview':
      return `${JSON.stringify(overview(db, q))}\n`;
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

/**
 * The dashboard's data: the rollups' part (store/dashboard.ts: charts, the alerts' recent days of
 * sources, at most MAX_DOMAINS domains) with the alerts, notifications and latest reports.
 */
export function overview(db: Db, q: Extract<Query, { kind: 'overview' }>) {
  const L = OVERVIEW_LIMITS;
  const o = fromRollups(db, { days: q.days, now: q.now, recentDays: q.recentDays, domain: q.domain });
  const store = new AlertStore(db);
  const [open, moreOpen] = head(store.openAlerts(), L.open_alerts);
  const [reports, moreReports] = head(recentReports(db, L.reports + 1, q.now, o.domain), L.reports);
  const { more_sources, ...rest } = o;
  return {
    ...rest,
    limits: L,
    truncated: {
      domains: o.domain_count > o.domains.length,
      tls: false,
      sources: more_sources,
      open_alerts: moreOpen,
      reports: moreReports,
    },
    alerts: { open, recent: store.recentAlerts(L.recent_alerts) },
    // Per channel: waiting, parked, failing or held; the latest parked messages with their reasons.
    notifications: { channels: store.channelStatus(), parked: store.parked(L.parked) },
    reports,
  };
}
