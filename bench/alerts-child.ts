/**
 * Evaluates the drift rules once (as `ruawatch alerts --dry-run`) over a database and prints what it
 * measured as JSON. Its own process, so peak RSS belongs to this case alone.
 */
import { configSchema } from '../src/config/schema.js';
import { createLogger } from '../src/log.js';
import { runAlerts } from '../src/pipeline/alerts.js';
import { openDb } from '../src/store/db.js';

const [dbFile, nowArg, mode] = process.argv.slice(2);
const db = openDb(dbFile!);
const config = configSchema.parse({ analysis: { reverse_dns: false } });
// With "enrich": who is sending, as `alerts` does by default; the data is read first and timed apart.
let enricher = null;
let loadSeconds = 0;
if (mode === 'enrich') {
  const t0 = process.hrtime.bigint();
  const { createEnricher } = await import('../src/enrich/index.js');
  enricher = createEnricher(config.enrich, { cacheDir: null });
  enricher.data();
  loadSeconds = Number(process.hrtime.bigint() - t0) / 1e9;
}
const start = process.hrtime.bigint();
const cpu0 = process.cpuUsage();
const run = await runAlerts(db, config, {
  now: Number(nowArg),
  dryRun: true,
  channels: [],
  lookup: null,
  enricher,
  log: createLogger('silent'),
});
const seconds = Number(process.hrtime.bigint() - start) / 1e9;
const cpu = process.cpuUsage(cpu0);
// Peak RSS of the evaluation, before the counts below (a DISTINCT over every source-day row) add theirs.
const maxRssMiB = process.resourceUsage().maxRSS / 1024;
const records = (db.prepare(`SELECT COUNT(*) AS n FROM dmarc_records`).get() as { n: number }).n;
const sources = (db.prepare(`SELECT COUNT(DISTINCT source_ip) AS n FROM dmarc_daily`).get() as { n: number }).n;
db.close();
process.stdout.write(
  JSON.stringify({
    seconds,
    cpuSeconds: (cpu.user + cpu.system) / 1e6,
    loadSeconds,
    records,
    sources,
    findings: run.findings.length,
    maxRssMiB,
  }),
);
