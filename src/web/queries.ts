import path from 'node:path';
import { lastDays } from '../analyse/rollups.js';
import { sourceFields } from '../analyse/senders.js';
import type { Config } from '../config/schema.js';
import type { Enricher } from '../enrich/index.js';
import { errorMessage } from '../errors.js';
import { sendersOf } from '../pipeline/senders.js';
import { AlertStore } from '../store/alerts.js';
import { MAX_DOMAINS, MAX_SOURCES, overview as fromRollups, recentReports, reportDetail } from '../store/dashboard.js';
import type { Db } from '../store/db.js';
import { dkimDomainsBySource } from '../store/summary.js';
import type { WorkerState } from '../worker/worker.js';
import { metricsText } from './metrics.js';

/**
 * The database reads behind the web server, as plain messages so they can run in the query thread
 * (query-thread.ts) as well as inline. Each returns the response body, or null for "not found".
 */
export type Query =
  | { kind: 'overview'; days: number; now: number; recentDays: number; domain: string | null; enrich?: EnrichSettings | null }
  | { kind: 'report'; id: number; enrich?: EnrichSettings | null }
  | { kind: 'metrics'; state: WorkerState; config: Config; now: number };

type EnrichSettings = Config['enrich'];

/** Rows /api/overview returns at most per list; the JSON states them, with what was cut. */
export const OVERVIEW_LIMITS = {
  domains: MAX_DOMAINS,
  sources: MAX_SOURCES,
  reports: 100,
  open_alerts: 200,
  recent_alerts: 50,
  parked: 50,
} as const;

export async function runQuery(db: Db, q: Query): Promise<string | null> {
  switch (q.kind) {
    case 'overview':
      return `${JSON.stringify(overview(db, q, await enricherFor(db, q.enrich)))}\n`;
    case 'report': {
      const detail = reportDetail(db, q.id);
      if (detail) enrichRecords(detail, await enricherFor(db, q.enrich));
      return detail ? `${JSON.stringify(detail)}\n` : null;
    }
    case 'metrics':
      return metricsText(db, q.state, q.config, q.now, await enricherFor(db, q.config.enrich));
  }
}

/** One enricher per thread and [enrich] section, its code imported and its data read on first use. */
const enrichers = new Map<string, Promise<Enricher>>();

/**
 * The enricher for an [enrich] section, or null: off, or its data cannot be read (the pages go on
 * without it; `enrichment` in the overview says why).
 */
async function enricherFor(db: Db, settings: EnrichSettings | null | undefined): Promise<Enricher | null> {
  if (!settings?.enabled) return null;
  const key = JSON.stringify(settings);
  let e = enrichers.get(key);
  if (!e) {
    const cacheDir = db.memory ? null : path.dirname(path.resolve(db.name));
    e = import('../enrich/index.js').then((m) => {
      const made = m.createEnricher(settings, { cacheDir });
      made.data();
      return made;
    });
    enrichers.set(key, e);
  }
  try {
    return await e;
  } catch (err) {
    enrichers.delete(key);
    lastEnrichError = errorMessage(err);
    return null;
  }
}

let lastEnrichError: string | null = null;

/** The DMARC records of a report with who each source is (its DKIM and SPF domains included). */
function enrichRecords(detail: Record<string, unknown>, enricher: Enricher | null): void {
  const records = detail.records as
    | ({ source_ip: string; dkim_results: { domain?: string | null }[]; spf_results: { domain?: string | null }[] } & Record<
        string,
        unknown
      >)[]
    | undefined;
  if (!enricher || !records) return;
  for (const r of records) {
    const domains = (list: { domain?: string | null }[]) => list.map((x) => x.domain).filter((d): d is string => !!d);
    const e = enricher.enrich({ ip: r.source_ip, dkimDomains: domains(r.dkim_results), spfDomains: domains(r.spf_results) });
    Object.assign(r, { asn: e.asn, as_org: e.as_org, country: e.country, service: e.service, service_type: e.service_type });
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
export function overview(db: Db, q: Extract<Query, { kind: 'overview' }>, enricher: Enricher | null = null) {
  const L = OVERVIEW_LIMITS;
  const o = fromRollups(db, { days: q.days, now: q.now, recentDays: q.recentDays, domain: q.domain });
  const sources = enricher ? enrichSources(db, o.sources, lastDays(q.now, q.recentDays), enricher) : o.sources;
  const store = new AlertStore(db);
  const [open, moreOpen] = head(store.openAlerts(), L.open_alerts);
  const [reports, moreReports] = head(recentReports(db, L.reports + 1, q.now, o.domain), L.reports);
  const { more_sources, ...rest } = o;
  return {
    ...rest,
    sources,
    // Whether sources carry asn, as_org, country, service and service_type, and why not.
    enrichment: enricher ? { on: true } : { on: false, error: q.enrich?.enabled ? lastEnrichError : null },
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

/** The sources table's rows with who each source is: DKIM domains of the same days, cached names. */
function enrichSources<T extends { domain: string; ip: string; name: string | null }>(
  db: Db,
  rows: T[],
  w: { from: number; to: number },
  enricher: Enricher,
): (T & ReturnType<typeof sourceFields>)[] {
  const dkim = new Map<string, Map<string, string[]>>();
  const out: (T & ReturnType<typeof sourceFields>)[] = [];
  for (const r of rows) {
    let d = dkim.get(r.domain);
    if (!d) dkim.set(r.domain, (d = dkimDomainsBySource(db, r.domain, w.from, w.to)));
    const facts = sendersOf(enricher, [r.ip], { ptr: () => r.name, dkim: d }).get(r.ip);
    out.push({ ...r, ...sourceFields(facts) });
  }
  return out;
}
