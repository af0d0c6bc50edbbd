import { limitsOf } from '../config/load.js';
import { RuawatchError } from '../errors.js';
import { fetchAll } from '../pipeline/fetch.js';
import { Ingestor } from '../pipeline/ingest.js';
import { poolFor } from '../pipeline/pool.js';
import { mailboxesOf } from '../sources/mailboxes.js';
import { MailboxStore } from '../store/mailboxes.js';
import { ReportStore } from '../store/reports.js';
import { configFlag, dbFlag, defineCommand, jsonFlag } from './command.js';
import { EXIT_FAILED, EXIT_OK, loggerFor, openConfig, openDatabase } from './common.js';
import { formatSummary } from './ingest.js';
import { Progress } from './progress.js';

export const fetchCommand = defineCommand(
  {
    name: 'fetch',
    summary: 'one pass over every configured mailbox',
    flags: { db: dbFlag, config: configFlag, json: jsonFlag },
    about: `Reads the new messages of every [[mailbox]] in the configuration over IMAP and stores their
reports, as ingest does; inputs are named mailbox-name:uid. A message is moved to processed_folder
(it held a report) or invalid_folder (it held none, or only broken ones) only after its reports
are committed; nothing is deleted. A mailbox that cannot be read is listed under failed (E_IMAP)
and the others are still read; one that another ruawatch is reading is skipped (listed under
skipped, not a failure). The pass stops at [schedule] poll_timeout_seconds. The same summary and
exit codes as ingest.`,
    examples: ['ruawatch fetch --config /etc/ruawatch.toml', 'ruawatch fetch --config /etc/ruawatch.toml --json'],
  },
  async ({ values }, io) => {
    const loaded = openConfig(values.config, io);
    if (loaded.config.mailbox.length === 0) throw new RuawatchError('E_CONFIG', 'no [[mailbox]] is configured');
    const log = loggerFor(loaded, 'warn', io);
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
  },
);
