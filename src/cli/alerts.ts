import { isoTime } from '../notify/render.js';
import { channelsOf, runAlerts, systemReverseLookup, type AlertRun } from '../pipeline/alerts.js';
import { asOf, EXIT_FAILED, EXIT_OK, loggerFor, openConfig, openDatabase, parseFlags, plural, storeFlags, type Io } from './common.js';

export const alertsUsage = `usage: ruawatch alerts [--db FILE] [--config FILE] [--at YYYY-MM-DD] [--dry-run] [--json]
  Evaluates the drift rules as of the end of --at (default: now), updates the alert state and
  notifies the [alerts] channels; --dry-run only prints the findings. Exit 1 when a notification
  could not be delivered (it is kept and sent on the next run).`;

export async function alertsCommand(args: string[], io: Io): Promise<number> {
  const { values } = parseFlags(args, { ...storeFlags, at: { type: 'string' }, 'dry-run': { type: 'boolean', default: false } }, false);
  const loaded = openConfig(values.config, io);
  const log = loggerFor(loaded, 'warn');
  const now = asOf(values.at);
  const { db } = openDatabase(values.db, loaded, log, { mustExist: true });
  const channels = values['dry-run'] ? [] : channelsOf(loaded.config);
  try {
    const run = await runAlerts(db, loaded.config, {
      now,
      dryRun: values['dry-run'],
      channels,
      lookup: loaded.config.analysis.reverse_dns ? systemReverseLookup() : null,
      log,
    });
    io.stdout.write(
      values.json ? `${JSON.stringify(jsonOf(run, values['dry-run']))}\n` : formatRun(run, now, values['dry-run'], channels.length),
    );
    return run.deliveries.failed.length ? EXIT_FAILED : EXIT_OK;
  } finally {
    await Promise.all(channels.map((c) => c.close()));
    db.close();
  }
}

function jsonOf(run: AlertRun, dryRun: boolean): Record<string, unknown> {
  const findings = run.findings.map((f) => ({ ...f }));
  if (dryRun) return { findings };
  return { findings, opened: run.opened, reminded: run.reminded, resolved: run.resolved, deliveries: run.deliveries };
}

function formatRun(run: AlertRun, now: number, dryRun: boolean, channels: number): string {
  const lines: string[] = [];
  lines.push(
    run.findings.length ? `${plural(run.findings.length, 'finding')} as of ${isoTime(now)}:` : `No findings as of ${isoTime(now)}.`,
  );
  for (const f of run.findings) lines.push(`  ${f.severity.toUpperCase().padEnd(8)} ${f.kind.padEnd(20)} ${f.summary}`);
  if (!dryRun) {
    lines.push('');
    lines.push(`Alerts: ${run.opened.length} opened, ${run.reminded.length} re-notified, ${run.resolved.length} resolved.`);
    if (channels === 0) lines.push('No [alerts] channel is configured: alert state recorded, nothing sent.');
    else {
      const d = run.deliveries;
      lines.push(`Notifications: ${d.sent} sent, ${d.failed.length} failed, ${d.pending} waiting for the next run.`);
      for (const f of d.failed) lines.push(`  ${f.channel}${f.outcome === 'parked' ? ' (parked)' : ''}: ${f.error}`);
    }
  }
  return `${lines.join('\n')}\n`;
}
