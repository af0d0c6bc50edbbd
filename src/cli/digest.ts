import { RuawatchError } from '../errors.js';
import { renderDigest } from '../notify/render.js';
import { buildDigest, sendDigest } from '../pipeline/alerts.js';
import { configFlag, dbFlag, defineCommand, jsonFlag } from './command.js';
import { appFor, asOf, EXIT_FAILED, EXIT_OK } from './common.js';

export const digestCommand = defineCommand(
  {
    name: 'digest',
    summary: 'send the daily or weekly summary',
    flags: {
      db: dbFlag,
      config: configFlag,
      period: { type: 'string', value: 'daily|weekly', help: 'one day or seven (default: [alerts] digest, else daily)' },
      at: { type: 'string', value: 'YYYY-MM-DD', help: 'the last UTC day of the period (default: yesterday)' },
      'dry-run': { type: 'boolean', default: false, help: 'print the digest only: nothing sent, nothing written' },
      json: jsonFlag,
    },
    about: `Sends a summary of the last whole day (or seven days) ending with --at through every [alerts]
channel: per policy domain the messages, the DMARC pass rate and the rate of the period before,
the five sources failing most, TLS sessions and failures by result type, and the open alerts.
ruawatch run sends it on [schedule] digest when [alerts] digest is daily or weekly; without run,
call it from cron. Exit 1 when a channel could not be reached (the digest is kept for the next run).`,
    examples: ['ruawatch digest --config /etc/ruawatch.toml --period weekly --dry-run'],
  },
  async ({ values }, io) => {
    const app = appFor(values, io, { level: 'warn', mustExist: true });
    try {
      const configured = app.config.alerts.digest;
      const period = values.period ?? (configured === 'off' ? 'daily' : configured);
      if (period !== 'daily' && period !== 'weekly') throw new RuawatchError('E_USAGE', `--period is daily or weekly, not "${period}"`);
      const now = asOf(values.at);
      const channels = values['dry-run'] ? [] : app.channels();
      if (!values['dry-run']) await app.settle();
      const digest = buildDigest(app.db, period, now, await app.enricher({ orNone: true }));
      const message = renderDigest(digest, now);
      const deliveries = values['dry-run'] ? null : await sendDigest(app.db, digest, now, { channels, log: app.log });
      if (values.json) io.stdout.write(`${JSON.stringify({ digest, ...(deliveries ? { deliveries } : {}) })}\n`);
      else {
        io.stdout.write(`${message.title}\n\n${message.text}\n`);
        if (deliveries) {
          io.stdout.write(
            channels.length
              ? `\nSent: ${deliveries.sent}, failed: ${deliveries.failed.length}, waiting for the next run: ${deliveries.pending}.\n`
              : '\nNo [alerts] channel is configured: nothing sent.\n',
          );
          for (const f of deliveries.failed) io.stdout.write(`  ${f.channel}${f.outcome === 'parked' ? ' (parked)' : ''}: ${f.error}\n`);
        }
      }
      return deliveries?.failed.length ? EXIT_FAILED : EXIT_OK;
    } finally {
      await app.close();
    }
  },
);
