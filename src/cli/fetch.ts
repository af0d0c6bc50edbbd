import { limitsOf, resolveDbPath } from '../config/load.js';
import { RuawatchError, errorCode, errorMessage } from '../errors.js';
import { addToSummary, emptySummary, Ingestor } from '../pipeline/ingest.js';
import { fetchMailbox } from '../sources/imap.js';
import { openDb } from '../store/db.js';
import { MailboxStore } from '../store/mailboxes.js';
import { ReportStore } from '../store/reports.js';
import { EXIT_FAILED, EXIT_OK, loggerFor, openConfig, parseFlags, type Io } from './common.js';
import { formatSummary } from './ingest.js';
import { Progress } from './progress.js';

export const fetchUsage = `usage: ruawatch fetch [--db FILE] [--config FILE] [--json]
  One pass over every [[mailbox]] in the config; the same summary and exit codes as ingest,
  inputs named mailbox-name:uid.`;

export async function fetchCommand(args: string[], io: Io): Promise<number> {
  const { values } = parseFlags(args, { db: { type: 'string' }, config: { type: 'string' }, json: { type: 'boolean', default: false } }, false);
  const loaded = openConfig(values.config, io);
  if (loaded.config.mailbox.length === 0) throw new RuawatchError('E_CONFIG', 'no [[mailbox]] is configured');
  const log = loggerFor(loaded, 'warn');
  const limits = limitsOf(loaded.config);
  const db = openDb(resolveDbPath(values.db, loaded, io.env));
  try {
    const ingestor = new Ingestor(new ReportStore(db), limits, log);
    const positions = new MailboxStore(db);
    const summary = emptySummary();
    for (const box of loaded.config.mailbox) {
      const bar: { progress: Progress | null } = { progress: null };
      try {
        await fetchMailbox(box, {
          ingestor,
          positions,
          limits,
          log,
          onPlan: (n) => {
            bar.progress?.finish();
            bar.progress = Progress.enabled(io.stderr, n) ? new Progress(io.stderr, n, `messages in ${box.name}`) : null;
          },
          onResult: (r) => {
            addToSummary(summary, r);
            bar.progress?.tick();
          },
        });
      } catch (err) {
        // One unreachable mailbox does not stop the others.
        summary.failed.push({ input: box.name, error: errorMessage(err), code: errorCode(err) });
        log.error({ mailbox: box.name, err: errorMessage(err) }, 'mailbox failed');
      } finally {
        bar.progress?.finish();
      }
    }
    io.stdout.write(values.json ? `${JSON.stringify(summary)}\n` : formatSummary(summary));
    return summary.failed.length ? EXIT_FAILED : EXIT_OK;
  } finally {
    db.close();
  }
}
