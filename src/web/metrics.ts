import { DAY, lastDays } from '../analyse/index.js';
import type { Config } from '../config/schema.js';
import type { Enricher } from '../enrich/index.js';
import { serviceTotals } from '../pipeline/senders.js';
import { AlertStore } from '../store/alerts.js';
import type { Db } from '../store/db.js';
import { reportTotals } from '../store/summary.js';
import type { WorkerState } from '../worker/worker.js';

/** Prometheus text exposition format 0.0.4: HELP and TYPE lines, then samples. */
class Exposition {
  private readonly lines: string[] = [];
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

export function metricsText(db: Db, state: WorkerState, config: Config, now: number, enricher: Enricher | null = null): string {
  const m = new Exposition();
  const stored = db.prepare(`SELECT kind, COUNT(*) AS n FROM reports GROUP BY kind`).all() as { kind: string; n: number }[];
  const byKind = new Map(stored.map((r) => [r.kind, r.n]));
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

  // The alerts' recent window: the last recent_days whole UTC days, today left out.
  const w = lastDays(now, config.analysis.recent_days);
  const totals = reportTotals(db, { since: w.from * DAY, until: w.to * DAY }, { sources: 0 });
  m.metric(
    'ruawatch_dmarc_messages',
    'gauge',
    `Messages in aggregate reports over the last ${config.analysis.recent_days} whole UTC days (today left out, as alerts count them), by policy domain.`,
    totals.domains.map((d) => [{ domain: d.domain }, d.messages]),
  );
  m.metric(
    'ruawatch_dmarc_pass_rate',
    'gauge',
    `Share of messages passing DMARC over the last ${config.analysis.recent_days} whole UTC days, by policy domain (0-1).`,
    totals.domains.map((d) => [{ domain: d.domain }, d.pass_rate]),
  );
  if (enricher) {
    // Per known service, not per source IP: a label per address would grow without bound.
    const services = serviceTotals(db, w, enricher);
    const labels = (s: { service: string; service_type: string }) => ({ service: s.service, service_type: s.service_type });
    m.metric(
      'ruawatch_dmarc_service_messages',
      'gauge',
      `Messages in aggregate reports over the last ${config.analysis.recent_days} whole UTC days, by the known service of their source IP (service="" for sources of no known service), all policy domains.`,
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
    `TLS sessions reported over the last ${config.analysis.recent_days} whole UTC days, by policy domain and result.`,
    totals.tlsrpt.flatMap(
      (t) =>
        [
          [{ domain: t.policy_domain, result: 'successful' }, t.successful],
          [{ domain: t.policy_domain, result: 'failed' }, t.failed],
        ] as [Record<string, string>, number][],
    ),
  );

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
