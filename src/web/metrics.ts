import { lastDays } from '../analyse/index.js';
import type { Config } from '../config/schema.js';
import type { Enricher } from '../enrich/index.js';
import { serviceTotals } from '../pipeline/senders.js';
import { AlertStore } from '../store/alerts.js';
import type { Db } from '../store/db.js';
import { queuedReports, rollupsVersion } from '../store/rollups.js';
import { tidy } from '../store/summary.js';
import type { WorkerState } from '../worker/worker.js';

/** Prometheus text exposition format 0.0.4: HELP and TYPE lines, then samples. */
class Exposition {
  constructor(readonly lines: string[] = []) {}
  metric(name: string, type: 'counter' | 'gauge', help: string, samples: [Record<string, string>, number | null][]): void {
    this.lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
    for (const [labels, value] of samples) {
      if (value === null) continue;
      const l = Object.entries(labels).map(([k, v]) => `${k}="${v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n')}"`);
      this.lines.push(`${name}${l.length ? `{${l.join(',')}}` : ''} ${Number.isInteger(value) ? value : value.toFixed(6)}`);
    }
  }
  text(): string {
    return `${this.lines.join('\n')}\n`;
  }
}

/**
 * The window's gauges (messages, pass rates and TLS sessions over the last recent_days whole UTC
 * days, by domain and by service) are kept between scrapes: they cost what the window's rollups
 * cost (at 10,000 domains, seconds with enrichment on), and Prometheus asks every 15-60 s. They are
 * worked out again when the window moves (at midnight UTC, or recent_days or enrichment changed),
 * and when reports were added to the rollups since (rollupsVersion) and what is kept is
 * KEEP_SECONDS old or more: a new report's numbers show at the latest on the first scrape
 * KEEP_SECONDS after the gauges were last worked out, and a scrape during a poll that stores
 * reports all along works them out at most once in KEEP_SECONDS. Everything else is read on every
 * scrape.
 */
export const KEEP_SECONDS = 300;

interface Kept {
  window: string;
  enricher: Enricher | null;
  /** rollupsVersion when the gauges were worked out. */
  version: string;
  at: number;
  /** Their exposition lines, joined: a scrape adds them as they are. */
  text: string;
}

const kept = new WeakMap<Db, Kept>();

/** Reports by kind, counted up from the last id seen (reports are never deleted, pruning keeps their rows). */
const stored = new WeakMap<Db, { last: number; byKind: Map<string, number> }>();

function storedReports(db: Db): { last: number; byKind: Map<string, number> } {
  const s = stored.get(db);
  // The first scrape counts them all (through the narrowest index); the next ones read the rows
  // added since, by id (NOT INDEXED: the planner would rather scan that index again).
  const rows = (
    s
      ? db.prepare(`SELECT kind, COUNT(*), max(id) FROM reports NOT INDEXED WHERE id > ? GROUP BY kind`).raw(true).all(s.last)
      : db.prepare(`SELECT kind, COUNT(*), max(id) FROM reports GROUP BY kind`).raw(true).all()
  ) as [string, number, number][];
  const counted = s ?? { last: 0, byKind: new Map<string, number>() };
  for (const [kind, n, top] of rows) {
    counted.byKind.set(kind, (counted.byKind.get(kind) ?? 0) + n);
    counted.last = Math.max(counted.last, top);
  }
  stored.set(db, counted);
  return counted;
}

/**
 * `now` (epoch seconds) is the scrape's time: it places the window and is the clock the kept
 * gauges' age is measured on.
 */
export function metricsText(db: Db, state: WorkerState, config: Config, now: number, enricher: Enricher | null = null): string {
  const m = new Exposition();
  const reports = storedReports(db);
  const byKind = reports.byKind;
  m.metric(
    'ruawatch_reports_stored',
    'gauge',
    'Reports in the database, by kind.',
    ['dmarc', 'tlsrpt', 'failure'].map((k) => [{ kind: k }, byKind.get(k) ?? 0]),
  );
  m.metric('ruawatch_reports_ingested_total', 'counter', 'Reports newly stored by this process, by kind.', [
    [{ kind: 'dmarc' }, state.ingested.dmarc],
    [{ kind: 'tlsrpt' }, state.ingested.tlsrpt],
    [{ kind: 'failure' }, state.ingested.failure],
  ]);
  m.metric('ruawatch_duplicate_reports_total', 'counter', 'Reports received again and not stored twice.', [
    [{}, state.ingested.duplicates],
  ]);
  m.metric('ruawatch_inputs_failed_total', 'counter', 'Messages or files that could not be read as reports.', [
    [{}, state.ingested.failed],
  ]);
  m.metric('ruawatch_inputs_skipped_total', 'counter', 'Messages that held no report.', [[{}, state.ingested.skipped]]);
  m.metric('ruawatch_polls_total', 'counter', 'Mailbox polls, by result.', [
    [{ result: 'ok' }, state.polls.ok],
    [{ result: 'failed' }, state.polls.failed],
  ]);
  m.metric('ruawatch_last_poll_timestamp_seconds', 'gauge', 'When the last poll started.', [[{}, state.lastPollAt]]);
  m.metric('ruawatch_last_successful_poll_timestamp_seconds', 'gauge', 'When the last poll succeeded.', [[{}, state.lastSuccessAt]]);
  m.metric('ruawatch_consecutive_failed_polls', 'gauge', 'Polls failed in a row.', [[{}, state.consecutiveFailures]]);
  m.metric('ruawatch_reports_queued', 'gauge', 'Aggregate reports stored but not yet added to the daily rollups.', [
    [{}, queuedReports(db)],
  ]);

  // The alerts' recent window: the last recent_days whole UTC days, today left out.
  const w = lastDays(now, config.analysis.recent_days);
  const key = `${config.analysis.recent_days}:${w.from}:${w.to}`;
  const hit = kept.get(db);
  const age = hit ? now - hit.at : -1;
  const version = rollupsVersion(db);
  if (hit && hit.window === key && hit.enricher === enricher && age >= 0 && (hit.version === version || age < KEEP_SECONDS)) {
    m.lines.push(hit.text);
  } else {
    const text = windowGauges(db, w, config.analysis.recent_days, enricher).join('\n');
    kept.set(db, { window: key, enricher, version, at: now, text });
    m.lines.push(text);
  }

  const open = db
    .prepare(`SELECT severity, kind, COUNT(*) AS n FROM alerts WHERE resolved_at IS NULL GROUP BY 1, 2 ORDER BY 1, 2`)
    .all() as { severity: string; kind: string; n: number }[];
  m.metric(
    'ruawatch_open_alerts',
    'gauge',
    'Open alerts, by severity and kind.',
    open.map((a) => [{ severity: a.severity, kind: a.kind }, a.n]),
  );
  const channels = new AlertStore(db).channelStatus();
  m.metric(
    'ruawatch_notifications_pending',
    'gauge',
    'Notifications not delivered yet, by channel.',
    channels.map((c) => [{ channel: c.channel }, c.pending]),
  );
  m.metric(
    'ruawatch_notifications_parked',
    'gauge',
    'Notifications refused for good (or unanswered as often as is safe) and left aside, by channel.',
    channels.map((c) => [{ channel: c.channel }, c.parked]),
  );
  m.metric(
    'ruawatch_notification_channel_held',
    'gauge',
    'Channels whose last failure refuses every message (credentials, permission, unknown room): 1, else 0.',
    channels.map((c) => [{ channel: c.channel }, c.failing_since !== null && c.held ? 1 : 0]),
  );
  return m.text();
}

/** The gauges of the window (see KEEP_SECONDS), as exposition lines. */
function windowGauges(db: Db, w: { from: number; to: number }, days: number, enricher: Enricher | null): string[] {
  const m = new Exposition();
  // domain_daily's key starts with the day: the window's rows only. The sums are those of
  // reportTotals (store/summary.ts), without its per-source and failure tables /metrics has no use for.
  const rows = db
    .prepare(
      `SELECT domain, SUM(messages), SUM(dmarc_pass), SUM(dmarc_reports), SUM(tls_successful), SUM(tls_failed), SUM(tls_reports)
         FROM domain_daily WHERE day >= ? AND day < ? GROUP BY domain ORDER BY domain`,
    )
    .raw(true)
    .all(w.from, w.to) as [string, number, number, number, number, number, number][];
  const dmarc = rows.filter(([, messages, , reports]) => reports !== 0 || messages !== 0);
  m.metric(
    'ruawatch_dmarc_messages',
    'gauge',
    `Messages in aggregate reports over the last ${days} whole UTC days (today left out, as alerts count them), by policy domain.`,
    dmarc.map(([domain, messages]) => [{ domain }, tidy(messages)]),
  );
  m.metric(
    'ruawatch_dmarc_pass_rate',
    'gauge',
    `Share of messages passing DMARC over the last ${days} whole UTC days, by policy domain (0-1).`,
    dmarc.map(([domain, messages, pass]) => [{ domain }, messages > 0 ? Math.round((pass / messages) * 10000) / 10000 : null]),
  );
  if (enricher) {
    // Per known service, not per source IP: a label per address would grow without bound.
    const services = serviceTotals(db, w, enricher);
    const labels = (s: { service: string; service_type: string }) => ({ service: s.service, service_type: s.service_type });
    m.metric(
      'ruawatch_dmarc_service_messages',
      'gauge',
      `Messages in aggregate reports over the last ${days} whole UTC days, by the known service of their source IP (service="" for sources of no known service), all policy domains.`,
      services.map((s) => [labels(s), s.messages]),
    );
    m.metric(
      'ruawatch_dmarc_service_pass_rate',
      'gauge',
      `Share of those messages passing DMARC, by the known service of their source IP (0-1).`,
      services.map((s) => [labels(s), s.pass_rate]),
    );
  }
  m.metric(
    'ruawatch_tls_sessions',
    'gauge',
    `TLS sessions reported over the last ${days} whole UTC days, by policy domain and result.`,
    rows
      .filter(([, , , , ok, failed, tlsReports]) => tlsReports > 0 || ok + failed > 0)
      .flatMap(
        ([domain, , , , ok, failed]) =>
          [
            [{ domain, result: 'successful' }, tidy(ok)],
            [{ domain, result: 'failed' }, tidy(failed)],
          ] as [Record<string, string>, number][],
      ),
  );
  return m.lines;
}
