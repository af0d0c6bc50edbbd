import { isoTime } from '../notify/render.js';
import { runAlerts, type AlertRun } from '../pipeline/alerts.js';
import { atFlag, configFlag, dbFlag, defineCommand, jsonFlag } from './command.js';
import { appFor, asOf, EXIT_FAILED, EXIT_OK, plural } from './common.js';

export const alertsCommand = defineCommand(
  {
    name: 'alerts',
    summary: 'evaluate the drift rules, update the alert state, notify',
    flags: {
      db: dbFlag,
      config: configFlag,
      at: atFlag('now'),
      'dry-run': { type: 'boolean', default: false, help: 'print the findings only: no alert state, no notification, nothing written' },
      json: jsonFlag,
    },
    about: `Runs the drift rules over the stored reports as of the end of UTC day --at (default: now):
pass rate drops, new failing sources, broken DKIM selectors, TLS failures, silent reporters,
policy changes. Opens, re-notifies and resolves alerts, and sends what that calls for through
every [alerts] channel, plus anything an earlier run could not deliver.

With --dry-run nothing is written, with one exception shared by every command: a database left
by an older ruawatch has its schema brought up to date first (on a large database, building the
daily rollups takes minutes).

Exit 1 when a notification could not be delivered (it is kept for the next run, or parked when
refused for good), else 0; findings are not errors.`,
    examples: [
      'ruawatch alerts --config /etc/ruawatch.toml --dry-run',
      'ruawatch alerts --config /etc/ruawatch.toml --at 2026-03-31 --json',
    ],
  },
  async ({ values }, io) => {
    const now = asOf(values.at);
    const app = appFor(values, io, { level: 'warn', mustExist: true });
    try {
      const channels = values['dry-run'] ? [] : app.channels();
      const enricher = await app.enricher({ orNone: true });
      const run = await runAlerts(app.db, app.config, {
        now,
        dryRun: values['dry-run'],
        channels,
        lookup: app.lookup,
        enricher,
        log: app.log,
      });
      io.stdout.write(
        values.json ? `${JSON.stringify(jsonOf(run, values['dry-run']))}\n` : formatRun(run, now, values['dry-run'], channels.length),
      );
      return run.deliveries.failed.length ? EXIT_FAILED : EXIT_OK;
    } finally {
      await app.close();
    }
  },
);

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
