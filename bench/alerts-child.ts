/**
 * Evaluates the drift rules once (as `ruawatch alerts --dry-run`) over a database and prints what it
 * measured as JSON. Its own process, so peak RSS belongs to this case alone.
 */
import { configSchema } from '../src/config/schema.js';
import { createLogger } from '../src/log.js';
import { runAlerts } from '../src/pipeline/alerts.js';
import { openDb } from '../src/store/db.js';

const [dbFile, nowArg] = process.argv.slice(2);
const db = openDb(dbFile!);
const config = configSchema.parse({ analysis: { reverse_dns: false } });
const start = process.hrtime.bigint();
const cpu0 = process.cpuUsage();
const run = await runAlerts(db, config, { now: Number(nowArg), dryRun: true, channels: [], lookup: null, log: createLogger('silent') });
const seconds = Number(process.hrtime.bigint() - start) / 1e9;
const cpu = process.cpuUsage(cpu0);
const records = (db.prepare(`SELECT COUNT(*) AS n FROM dmarc_records`).get() as { n: number }).n;
db.close();
process.stdout.write(
  JSON.stringify({
    seconds,
    cpuSeconds: (cpu.user + cpu.system) / 1e6,
    records,
    findings: run.findings.length,
    maxRssMiB: process.resourceUsage().maxRSS / 1024,
  }),
);
