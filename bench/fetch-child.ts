/**
 * One `fetch` pass over a mailbox into a fresh database, through the same code as `ruawatch
 * fetch` (worker threads as `[ingest] workers = 0` gives; BENCH_WORKERS=1 for one thread);
 * prints what it measured as JSON. Its own process, so peak RSS is this case's alone.
 */
import { createLogger } from '../src/log.js';
import { addToSummary, emptySummary, Ingestor } from '../src/pipeline/ingest.js';
import { autoWorkers, IngestPool } from '../src/pipeline/pool.js';
import { readMailbox } from '../src/pipeline/mailbox.js';
import { ImapMailbox } from '../src/sources/imap.js';
import { openDb } from '../src/store/db.js';
import { MailboxStore } from '../src/store/mailboxes.js';
import { ReportStore } from '../src/store/reports.js';
import { defaultLimits } from '../src/unpack/limits.js';

const [dbFile, port, user, password] = process.argv.slice(2);
const db = openDb(dbFile!);
const summary = emptySummary();
const log = createLogger('silent');
const workers = Number(process.env.BENCH_WORKERS || autoWorkers('mail'));
const pool = workers > 1 ? new IngestPool(dbFile!, defaultLimits, log, workers) : null;
const start = process.hrtime.bigint();
const cpu0 = process.cpuUsage();
await readMailbox(
  new ImapMailbox(
    {
      name: 'bench',
      kind: 'imap',
      host: '127.0.0.1',
      port: Number(port),
      security: 'none',
      user: user!,
      password: password!,
      folder: 'INBOX',
      processed_folder: 'Processed',
      invalid_folder: 'Invalid',
      mark_seen_only: false,
      timeout_seconds: 60,
    },
    log,
  ),
  {
    ingestor: new Ingestor(new ReportStore(db), defaultLimits, log),
    pool,
    positions: new MailboxStore(db),
    limits: defaultLimits,
    log,
    onResult: (r) => addToSummary(summary, r),
  },
);
await pool?.close();
// As `ruawatch fetch` does before it ends: the stored reports go into the rollups.
new ReportStore(db).settle();
const seconds = Number(process.hrtime.bigint() - start) / 1e9;
const cpu = process.cpuUsage(cpu0);
db.close();
process.stdout.write(
  JSON.stringify({
    seconds,
    cpuSeconds: (cpu.user + cpu.system) / 1e6,
    workers,
    messages: summary.inputs,
    reports: summary.reports.dmarc,
    records: summary.records,
    failed: summary.failed.length,
    maxRssMiB: process.resourceUsage().maxRSS / 1024,
  }),
);
