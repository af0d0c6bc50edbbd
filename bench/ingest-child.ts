/**
 * Ingests the given paths into a fresh database through the same code as `ruawatch ingest`, and
 * prints what it measured as JSON. Run as its own process so peak RSS belongs to this case alone.
 */
import { createLogger } from '../src/log.js';
import { addToSummary, emptySummary, Ingestor } from '../src/pipeline/ingest.js';
import { expandPaths } from '../src/sources/files.js';
import { openDb } from '../src/store/db.js';
import { ReportStore } from '../src/store/reports.js';
import { defaultLimits } from '../src/unpack/limits.js';

const [dbFile, ...paths] = process.argv.slice(2);
const db = openDb(dbFile!);
const ingestor = new Ingestor(new ReportStore(db), defaultLimits, createLogger('silent'));
const summary = emptySummary();
const start = process.hrtime.bigint();
const cpu0 = process.cpuUsage();
for await (const input of expandPaths(paths, defaultLimits.maxReportBytes)) addToSummary(summary, await ingestor.ingest(input));
const seconds = Number(process.hrtime.bigint() - start) / 1e9;
const cpu = process.cpuUsage(cpu0);
db.close();
process.stdout.write(
  JSON.stringify({
    seconds,
    cpuSeconds: (cpu.user + cpu.system) / 1e6,
    reports: summary.reports.dmarc + summary.reports.tlsrpt + summary.reports.failure,
    records: summary.records,
    failed: summary.failed.length,
    maxRssMiB: process.resourceUsage().maxRSS / 1024,
  }),
);
