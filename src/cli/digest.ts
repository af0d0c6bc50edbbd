import { RuawatchError } from '../errors.js';
import { renderDigest } from '../notify/render.js';
import { buildDigest, channelsOf, sendDigest } from '../pipeline/alerts.js';
import { asOf, EXIT_FAILED, EXIT_OK, loggerFor, openConfig, openDatabase, parseFlags, storeFlags, type Io } from './common.js';

export const digestUsage = `usage: ruawatch digest [--db FILE] [--config FILE] [--period daily|weekly] [--at YYYY-MM-DD] [--dry-run] [--json]
  Sends the digest (pass rates per domain, top failing sources, TLS results, open alerts) for the
  day or the seven days ending with --at (default: yesterday) through the [alerts] channels;
  --dry-run prints it only. --period defaults to [alerts] digest, else daily.`;

export async function digestCommand(args: string[], io: Io): Promise<number> {
  const { values } = parseFlags(
    args,
    { ...storeFlags, period: { type: 'string' }, at: { type: 'string' }, 'dry-run': { type: 'boolean', default: false } },
    false,
  );
  const loaded = openConfig(values.config, io);
  const configured = loaded.config.alerts.digest;
  const period = values.period ?? (configured === 'off' ? 'daily' : configured);
  if (period !== 'daily' && period !== 'weekly') throw new RuawatchError('E_USAGE', `--period is daily or weekly, not "${period}"`);
  const now = asOf(values.at);
  const log = loggerFor(loaded, 'warn');
  const { db } = openDatabase(values.db, loaded, log, { mustExist: true });
  const channels = values['dry-run'] ? [] : channelsOf(loaded.config);
  try {
    const digest = buildDigest(db, period, now);
    const message = renderDigest(digest, now);
    const deliveries = values['dry-run'] ? null : await sendDigest(db, digest, now, { channels, log });
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
    await Promise.all(channels.map((c) => c.close()));
    db.close();
  }
}
