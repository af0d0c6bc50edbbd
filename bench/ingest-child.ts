/**
 * Ingests the given paths into a fresh database through the same code as `ruawatch ingest`
 * (worker threads when there are several inputs; BENCH_WORKERS=1 for one thread), and prints
 * what it measured as JSON. Run as its own process so peak RSS belongs to this case alone.
 */
import { createLogger } from '../src/log.js';
import { addToSummary, emptySummary, Ingestor } from '../src/pipeline/ingest.js';
import { autoWorkers, ingestEach, IngestPool } from '../src/pipeline/pool.js';
import { countPaths, expandPaths } from '../src/sources/files.js';
import { openDb } from '../src/store/db.js';
import { ReportStore } from '../src/store/reports.js';
import { defaultLimits } from '../src/unpack/limits.js';

const [dbFile, ...paths] = process.argv.slice(2);
const db = openDb(dbFile!);
const log = createLogger('silent');
const start = process.hrtime.bigint();
const cpu0 = process.cpuUsage();
const workers = (await countPaths(paths)) > 1 ? Number(process.env.BENCH_WORKERS || autoWorkers()) : 1;
const runner = workers > 1 ? new IngestPool(dbFile!, defaultLimits, log, workers) : new Ingestor(new ReportStore(db), defaultLimits, log);
const summary = emptySummary();
await ingestEach(expandPaths(paths, defaultLimits.maxReportBytes), runner, (r) => addToSummary(summary, r));
if (runner instanceof IngestPool) await runner.close();
// As `ruawatch ingest` does before it ends: the stored reports go into the rollups.
new ReportStore(db).settle();
const seconds = Number(process.hrtime.bigint() - start) / 1e9;
const cpu = process.cpuUsage(cpu0);
db.close();
process.stdout.write(
  JSON.stringify({
    seconds,
    cpuSeconds: (cpu.user + cpu.system) / 1e6,
    workers,
    reports: summary.reports.dmarc + summary.reports.tlsrpt + summary.reports.failure,
    records: summary.records,
    failed: summary.failed.length,
    maxRssMiB: process.resourceUsage().maxRSS / 1024,
  }),
);
