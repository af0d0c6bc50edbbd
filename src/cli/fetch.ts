import { RuawatchError } from '../errors.js';
import { configFlag, dbFlag, defineCommand, jsonFlag } from './command.js';
import { appFor, EXIT_FAILED, EXIT_OK } from './common.js';
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
    const app = appFor(values, io, { level: 'warn' });
    try {
      if (app.config.mailbox.length === 0) throw new RuawatchError('E_CONFIG', 'no [[mailbox]] is configured');
      const bar: { progress: Progress | null } = { progress: null };
      const { summary } = await app.fetchAll({
        command: 'fetch',
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
      await app.close();
    }
  },
);
