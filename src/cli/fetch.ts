import { limitsOf } from '../config/load.js';
import { RuawatchError } from '../errors.js';
import { fetchAll } from '../pipeline/fetch.js';
import { Ingestor } from '../pipeline/ingest.js';
import { poolFor } from '../pipeline/pool.js';
import { mailboxesOf } from '../sources/mailboxes.js';
import { MailboxStore } from '../store/mailboxes.js';
import { ReportStore } from '../store/reports.js';
import { EXIT_FAILED, EXIT_OK, loggerFor, openConfig, openDatabase, parseFlags, storeFlags, type Io } from './common.js';
import { formatSummary } from './ingest.js';
import { Progress } from './progress.js';

export const fetchUsage = `usage: ruawatch fetch [--db FILE] [--config FILE] [--json]
  One pass over every [[mailbox]] in the config; the same summary and exit codes as ingest,
  inputs named mailbox-name:uid. A mailbox that another ruawatch is reading is skipped (listed
  under skipped, not a failure); the pass stops at [schedule] poll_timeout_seconds.`;

export async function fetchCommand(args: string[], io: Io): Promise<number> {
  const { values } = parseFlags(args, storeFlags, false);
  const loaded = openConfig(values.config, io);
  if (loaded.config.mailbox.length === 0) throw new RuawatchError('E_CONFIG', 'no [[mailbox]] is configured');
  const log = loggerFor(loaded, 'warn');
  const limits = limitsOf(loaded.config);
  const { db, file: dbFile } = openDatabase(values.db, loaded, log);
  const pool = poolFor(loaded.config, dbFile, limits, log, 'mail');
  try {
    const bar: { progress: Progress | null } = { progress: null };
    const { summary } = await fetchAll(mailboxesOf(loaded.config, log), {
      command: 'fetch',
      timeoutMs: loaded.config.schedule.poll_timeout_seconds * 1000,
      ingestor: new Ingestor(new ReportStore(db), limits, log),
      pool,
      positions: new MailboxStore(db),
      limits,
      log,
      onPlan: (box, n) => {
        bar.progress?.finish();
        bar.progress = Progress.enabled(io.stderr, n) ? new Progress(io.stderr, n, `messages in ${box.name}`) : null;
      },
      onResult: () => bar.progress?.tick(),
      onMailboxDone: () => {
        bar.progress?.finish();
        bar.progress = null;
      },
    });
    io.stdout.write(values.json ? `${JSON.stringify(summary)}\n` : formatSummary(summary));
    return summary.failed.length ? EXIT_FAILED : EXIT_OK;
  } finally {
    await pool?.close();
    db.close();
  }
}
