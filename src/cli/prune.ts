import { prune } from '../store/prune.js';
import { configFlag, dbFlag, defineCommand, jsonFlag } from './command.js';
import { appFor, EXIT_OK, formatInt } from './common.js';
import type { PruneResult } from '../store/prune.js';

export const pruneCommand = defineCommand(
  {
    name: 'prune',
    summary: 'delete the records of old reports ([retention]), keeping totals and trends',
    flags: {
      db: dbFlag,
      config: configFlag,
      'dry-run': { type: 'boolean', default: false, help: 'count what would go and delete nothing' },
      json: jsonFlag,
    },
    about: `Applies [retention]: deletes the records of reports older than records_days (default 400) and
the summaries of failure reports older than failure_reports_days (default 30), then gives the
space back to the file system a step at a time. Reports' metadata, their hashes (a re-delivered
report is still a duplicate) and the daily rollups (trends, dashboard, report totals) stay.
\`ruawatch run\` prunes daily on its own ([schedule] prune).`,
    examples: ['ruawatch prune --config /etc/ruawatch.toml --dry-run'],
  },
  async ({ values }, io) => {
    const app = appFor(values, io, { level: 'warn', mustExist: true });
    try {
      const r = app.config.retention;
      const result = prune(
        app.db,
        { recordsDays: r.records_days, failureReportsDays: r.failure_reports_days },
        Math.floor(Date.now() / 1000),
        values['dry-run'],
      );
      io.stdout.write(values.json ? `${JSON.stringify(result)}\n` : formatPrune(result));
      return EXIT_OK;
    } finally {
      await app.close();
    }
  },
);

const mib = (bytes: number) => (bytes < 1048576 ? `${Math.round(bytes / 1024)} KiB` : `${(bytes / 1048576).toFixed(1)} MiB`);

export function formatPrune(r: PruneResult): string {
  const lines: string[] = [];
  const kept = (before: string | null, what: string) =>
    before ? `${what} of reports that ended before ${before}` : `${what} kept for ever`;
  lines.push(`Retention: ${kept(r.records_before, 'records')}; ${kept(r.failure_reports_before, 'failure report summaries')}.`);
  const n = (count: number, one: string, many: string) => `${formatInt(count)} ${count === 1 ? one : many}`;
  const what =
    `${n(r.reports, 'report', 'reports')} (${n(r.dmarc_records, 'aggregate report record', 'aggregate report records')}, ` +
    `${n(r.tls_policies, 'TLS policy', 'TLS policies')} with ${n(r.tls_failures, 'failure detail', 'failure details')}, ` +
    `${n(r.failure_reports, 'failure report summary', 'failure report summaries')})`;
  lines.push(r.dry_run ? `Would delete the rows of ${what}.` : `Deleted the rows of ${what}.`);
  if (r.settle_error !== null) {
    lines.push(`Aggregate reports not yet in the daily rollups keep their records (adding them failed: ${r.settle_error}).`);
  }
  if (!r.dry_run && r.auto_vacuum === 'incremental') {
    lines.push(`Given back to the file system: ${mib(r.freed_bytes)}.`);
  } else if (!r.dry_run) {
    lines.push(
      `${mib(r.free_bytes)} free inside the file for new reports; it does not shrink, as the database was created before auto_vacuum = INCREMENTAL (README, "Retention").`,
    );
  }
  lines.push(
    'Every report stays listed (a re-delivered one is still a duplicate), and the daily rollups keep trends, the dashboard and report totals.',
  );
  return `${lines.join('\n')}\n`;
}
