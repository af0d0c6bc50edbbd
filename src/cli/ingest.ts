import { limitsOf } from '../config/load.js';
import { addToSummary, emptySummary, Ingestor, type IngestSummary } from '../pipeline/ingest.js';
import { ingestEach, poolFor } from '../pipeline/pool.js';
import { countPaths, expandPaths } from '../sources/files.js';
import { ReportStore } from '../store/reports.js';
import { RuawatchError } from '../errors.js';
import { EXIT_FAILED, EXIT_OK, formatInt, loggerFor, openConfig, openDatabase, parseFlags, storeFlags, type Io } from './common.js';
import { Progress } from './progress.js';

export const ingestUsage = `usage: ruawatch ingest [--db FILE] [--config FILE] [--json] PATH...
  PATH is a file, a folder (walked), or - for standard input. .xml .json .gz .zip .eml .mbox,
  recognised by content. Exit 0 when every input was handled, 1 when any failed, 2 on usage errors.`;

export async function ingestCommand(args: string[], io: Io): Promise<number> {
  const { values, positionals } = parseFlags(args, storeFlags, true);
  if (positionals.length === 0) throw new RuawatchError('E_USAGE', `no PATH given\n${ingestUsage}`);
  const loaded = openConfig(values.config, io);
  const log = loggerFor(loaded, 'warn');
  const limits = limitsOf(loaded.config);
  const { db, file: dbFile } = openDatabase(values.db, loaded, log);
  // Several inputs go to worker threads; standard input can only be read here. All are counted
  // only for a progress bar.
  const total = await countPaths(positionals, io.stderr.isTTY ? Infinity : 2);
  const pool = total > 1 && !positionals.some((p: string) => p === '-') ? poolFor(loaded.config, dbFile, limits, log, 'files') : null;
  try {
    const runner = pool ?? new Ingestor(new ReportStore(db), limits, log);
    const summary = emptySummary();
    const progress = Progress.enabled(io.stderr, total) ? new Progress(io.stderr, total, 'inputs') : null;
    await ingestEach(expandPaths(positionals, limits.maxReportBytes), runner, (result) => {
      addToSummary(summary, result);
      progress?.tick();
    });
    progress?.finish();
    io.stdout.write(values.json ? `${JSON.stringify(summary)}\n` : formatSummary(summary));
    return summary.failed.length ? EXIT_FAILED : EXIT_OK;
  } finally {
    await pool?.close();
    db.close();
  }
}

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
