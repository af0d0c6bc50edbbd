import { addToSummary, emptySummary, type IngestSummary } from '../pipeline/ingest.js';
import { ingestEach, type IngestPool } from '../pipeline/pool.js';
import { countPaths, expandPaths } from '../sources/files.js';
import { RuawatchError } from '../errors.js';
import { configFlag, dbFlag, defineCommand, jsonFlag, usageLine } from './command.js';
import { appFor, EXIT_FAILED, EXIT_OK, formatInt } from './common.js';
import { Progress } from './progress.js';

export const ingestCommand = defineCommand(
  {
    name: 'ingest',
    summary: 'store the reports in files, folders or standard input',
    flags: { db: dbFlag, config: configFlag, json: jsonFlag },
    args: 'PATH...',
    about: `Reads DMARC aggregate (XML), TLS (JSON) and failure reports, plain or in .gz, .zip, .eml or .mbox
files (recognised by content, not name), and stores each report once. PATH is a file, a folder
(walked, sorted, dot-files skipped) or - for standard input. Prints a summary: reports stored,
duplicates, inputs skipped (no report in them) and failed (with the reason and an error code).

Exit 0 when every input was handled, 1 when any failed (the others are still stored), 2 on usage
or configuration errors.`,
    examples: ['ruawatch ingest --db reports.sqlite ~/Downloads/dmarc/ report.xml.gz', 'zcat report.xml.gz | ruawatch ingest --json -'],
  },
  async ({ values, positionals }, io) => {
    if (positionals.length === 0) throw new RuawatchError('E_USAGE', `no PATH given\n${usageLine(ingestCommand.spec)}`);
    const app = appFor(values, io, { level: 'warn' });
    let pool: IngestPool | null = null;
    try {
      // Created and brought up to date here, before worker threads open it.
      void app.db;
      // Several inputs go to worker threads; standard input can only be read here. All are counted
      // only for a progress bar.
      const total = await countPaths(positionals, io.stderr.isTTY ? Infinity : 2);
      if (total > 1 && !positionals.some((p: string) => p === '-')) pool = app.pool('files');
      const runner = pool ?? app.ingestor;
      const summary = emptySummary();
      const progress = Progress.enabled(io.stderr, total) ? new Progress(io.stderr, total, 'inputs') : null;
      await ingestEach(expandPaths(positionals, app.limits.maxReportBytes), runner, (result) => {
        addToSummary(summary, result);
        progress?.tick();
      });
      progress?.finish();
      // What was stored goes into the rollups before the command ends.
      await app.settle();
      io.stdout.write(values.json ? `${JSON.stringify(summary)}\n` : formatSummary(summary));
      return summary.failed.length ? EXIT_FAILED : EXIT_OK;
    } finally {
      await pool?.close();
      await app.close();
    }
  },
);

export function formatSummary(s: IngestSummary): string {
  const lines = [
    `inputs      ${formatInt(s.inputs)}`,
    `stored      ${formatInt(s.reports.dmarc)} aggregate, ${formatInt(s.reports.tlsrpt)} TLS, ${formatInt(s.reports.failure)} failure reports (${formatInt(s.records)} records)`,
    `duplicates  ${formatInt(s.duplicates)}`,
    `conflicts   ${formatInt(s.conflicts.length)}`,
    ...s.conflicts.map(
      (x) => `  ${x.input}: not stored; ${x.stored_input} holds another report with the same key (${x.reporter} ${x.report_id})`,
    ),
    `skipped     ${formatInt(s.skipped.length)}`,
    ...s.skipped.map((x) => `  ${x.input}: ${x.reason}`),
    `failed      ${formatInt(s.failed.length)}`,
    ...s.failed.map((x) => `  ${x.input}: ${x.error} [${x.code}]`),
  ];
  return `${lines.join('\n')}\n`;
}
