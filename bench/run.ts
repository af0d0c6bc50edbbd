/**
 * `npm run bench`: generates a deterministic corpus and measures ingest into a fresh database.
 * Prints numbers; asserts nothing. Each case runs in its own process for a clean peak RSS.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { findDovecot, PASSWORD, startDovecot } from '../devtools/dovecot.js';
import { emlMessage, writeBigReport, writeDailyCorpus, writeEmlCorpus, writeGzCorpus, writeRealisticCorpus } from '../devtools/corpus.js';
import { SCALE_DAYS, SCALE_FIRST_DAY } from './scale-child.js';

const child = fileURLToPath(new URL('./ingest-child.js', import.meta.url));
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'ruawatch-bench-'));
const only = process.argv[2];

interface Result {
  seconds: number;
  cpuSeconds: number;
  workers: number;
  reports: number;
  records: number;
  failed: number;
  maxRssMiB: number;
}

function measure(name: string, paths: string[]): Result {
  const db = path.join(work, `${name}.sqlite`);
  const r = JSON.parse(execFileSync(process.execPath, [child, db, ...paths], { encoding: 'utf8', maxBuffer: 1 << 20 })) as Result;
  if (r.failed) throw new Error(`${name}: ${r.failed} inputs failed`);
  return r;
}

function line(name: string, r: Result): void {
  const rate = (n: number) => Math.round(n / r.seconds).toLocaleString('en-US');
  console.log(
    `${name.padEnd(34)} ${r.reports.toLocaleString('en-US').padStart(7)} reports ${r.records.toLocaleString('en-US').padStart(9)} records ` +
      `${r.seconds.toFixed(2).padStart(7)} s ${rate(r.records).padStart(8)} records/s ${(r.reports > 1 ? rate(r.reports) : '-').padStart(6)} reports/s ` +
      `peak RSS ${r.maxRssMiB.toFixed(0)} MiB, ${threads(r)}`,
  );
}

function threads(r: { workers: number; cpuSeconds: number }): string {
  return `${r.workers > 1 ? `${r.workers} worker threads` : 'one thread'}, ${r.cpuSeconds.toFixed(1)} CPU-s`;
}

/** CPU seconds used by the children this process has waited for (Linux: /proc/self/stat, in clock ticks). */
function childCpuSeconds(): number {
  try {
    const fields = fs.readFileSync('/proc/self/stat', 'utf8').split(') ')[1]!.split(' ');
    // Fields 16 and 17 of stat(5), cutime and cstime; here counted from field 3 (state) as 0.
    return (Number(fields[13]) + Number(fields[14])) / 100;
  } catch {
    return NaN;
  }
}

/** Median wall time and mean CPU time of a CLI command, run `times` times. */
function timeCommand(args: string[], times: number): { ms: number; cpuMs: number } {
  const cli = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
  const walls: number[] = [];
  const cpu0 = childCpuSeconds();
  for (let i = 0; i < times; i++) {
    const t = performance.now();
    execFileSync(process.execPath, [cli, ...args], { stdio: 'ignore' });
    walls.push(performance.now() - t);
  }
  walls.sort((a, b) => a - b);
  return { ms: walls[Math.floor(times / 2)]!, cpuMs: ((childCpuSeconds() - cpu0) * 1000) / times };
}

function dirBytes(dir: string): number {
  let n = 0;
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    n += e.isDirectory() ? dirBytes(p) : fs.statSync(p).size;
  }
  return n;
}

/** Who is sending (src/enrich): data load, memory, lookups, start-up added to a command, install size. */
function enrichCase(): void {
  const enrichChild = fileURLToPath(new URL('./enrich-child.js', import.meta.url));
  const r = JSON.parse(execFileSync(process.execPath, ['--expose-gc', enrichChild], { encoding: 'utf8', maxBuffer: 1 << 20 })) as {
    loadMs: number;
    rssBeforeMiB: number;
    rssLoadedMiB: number;
    rssAfterMiB: number;
    cold4: { us: number; named: number };
    cold6: { us: number; named: number };
    cached: { us: number };
    withDomains: { us: number };
    lookups: { v4: number; v6: number };
    compileMs: number;
    compileCpuMs: number;
    cachedLoadMs: number;
  };
  const pct = (n: number, of: number) => `${((100 * n) / of).toFixed(1)}%`;
  console.log(
    `${'enrich: load bundled data'.padEnd(34)} ${r.loadMs.toFixed(0).padStart(7)} ms, resident memory ${r.rssBeforeMiB.toFixed(0)} -> ${r.rssLoadedMiB.toFixed(0)} MiB ` +
      `(+${(r.rssLoadedMiB - r.rssBeforeMiB).toFixed(0)}), ${r.rssAfterMiB.toFixed(0)} MiB after ${(r.lookups.v4 + r.lookups.v6).toLocaleString('en-US')} addresses cached`,
  );
  console.log(
    `${'enrich: lookup per address'.padEnd(34)} cold IPv4 ${r.cold4.us.toFixed(2)} us (${pct(r.cold4.named, r.lookups.v4)} in an AS), ` +
      `cold IPv6 ${r.cold6.us.toFixed(2)} us, cached ${r.cached.us.toFixed(2)} us, cached with PTR+DKIM+SPF matching ${r.withDomains.us.toFixed(2)} us`,
  );
  console.log(
    `${'enrich: a user CSV (asn, v4+v6)'.padEnd(34)} compiled on first use in ${r.compileMs.toFixed(0)} ms (${r.compileCpuMs.toFixed(0)} CPU-ms), from the cache ${r.cachedLoadMs.toFixed(0)} ms`,
  );
  const dir = path.join(work, 'enrich-startup');
  fs.mkdirSync(dir, { recursive: true });
  const db = path.join(dir, 'r.sqlite');
  execFileSync(
    process.execPath,
    [
      fileURLToPath(new URL('../src/cli/main.js', import.meta.url)),
      'ingest',
      '--db',
      db,
      fileURLToPath(new URL('../../fixtures/dmarc-aggregate/drv_google.xml', import.meta.url)),
    ],
    {
      stdio: 'ignore',
    },
  );
  const report = timeCommand(['report', '--db', db, '--json'], 7);
  const reportEnriched = timeCommand(['report', '--db', db, '--json', '--enrich'], 7);
  const whois = timeCommand(['whois', '--db', db, '--no-dns', '8.8.8.8'], 7);
  console.log(
    `${'enrich: one-shot start-up'.padEnd(34)} report (never loads it) ${report.ms.toFixed(0)} ms wall, ${report.cpuMs.toFixed(0)} CPU-ms; ` +
      `whois (loads it) ${whois.ms.toFixed(0)} ms wall, ${whois.cpuMs.toFixed(0)} CPU-ms (medians of 7)`,
  );
  console.log(
    `${'enrich: report --enrich'.padEnd(34)} ${reportEnriched.ms.toFixed(0)} ms wall, ${reportEnriched.cpuMs.toFixed(0)} CPU-ms ` +
      `(+${(reportEnriched.ms - report.ms).toFixed(0)} ms, +${(reportEnriched.cpuMs - report.cpuMs).toFixed(0)} CPU-ms over report; medians of 7)`,
  );
  const root = fileURLToPath(new URL('../../', import.meta.url));
  const shipped = dirBytes(path.join(root, 'dist/src/enrich/data')) + dirBytes(path.join(root, 'node_modules/mmdb-lib'));
  const buildOnly = dirBytes(path.join(root, 'node_modules/@ip-location-db'));
  console.log(
    `${'enrich: install size added'.padEnd(34)} ${(shipped / 1048576).toFixed(1)} MiB shipped (compiled data + mmdb-lib); ${(buildOnly / 1048576).toFixed(1)} MiB of data packages needed at build time only`,
  );
}

console.log(`ruawatch ingest benchmark: node ${process.version}, ${os.cpus().length} CPUs, ${os.cpus()[0]?.model ?? ''}`);
/**
 * `npm run bench scale` (not part of the default run: it writes about 8 GB and takes a while): a
 * database of 10,000 policy domains over 35 days with about 20 million records, generated by
 * SQLite as a ruawatch from before the rollups left it; then the rollup migration, one alerts
 * evaluation, every dashboard API request, /metrics and report totals for one large domain, each timed in
 * its own process. The database is deleted afterwards.
 */
async function scale(): Promise<void> {
  const dir = process.env.BENCH_SCALE_DIR ?? work;
  const free = fs.statfsSync(dir);
  const gib = (free.bavail * free.bsize) / 2 ** 30;
  if (gib < 15) {
    console.log(`scale case skipped: ${gib.toFixed(1)} GiB free in ${dir}, it needs about 15`);
    return;
  }
  const scaleChild = fileURLToPath(new URL('./scale-child.js', import.meta.url));
  const db = path.join(dir, `ruawatch-scale-${process.pid}.sqlite`);
  const step = <T>(...args: string[]) =>
    JSON.parse(
      execFileSync(process.execPath, [scaleChild, ...args], { encoding: 'utf8', maxBuffer: 1 << 24, stdio: ['ignore', 'pipe', 'inherit'] }),
    ) as T;
  try {
    const gen = step<{ seconds: number; reports: number; records: number; maxRssMiB: number }>('gen', db);
    const size = (f: string) => (fs.existsSync(f) ? fs.statSync(f).size : 0);
    console.log(
      `scale: generated ${gen.reports.toLocaleString('en-US')} reports, ${gen.records.toLocaleString('en-US')} records in ${gen.seconds.toFixed(0)} s (${(size(db) / 2 ** 30).toFixed(1)} GiB)`,
    );
    const mig = step<{ seconds: number; cpuSeconds: number; rollupRows: number; maxRssMiB: number }>('migrate', db);
    console.log(
      `${'rollup migration (0004)'.padEnd(34)} ${mig.seconds.toFixed(1).padStart(7)} s (${mig.cpuSeconds.toFixed(0)} CPU-s), ${mig.rollupRows.toLocaleString('en-US')} source-day rows, peak RSS ${mig.maxRssMiB.toFixed(0)} MiB; database ${(size(db) / 2 ** 30).toFixed(2)} GiB`,
    );
    const alertsChild = fileURLToPath(new URL('./alerts-child.js', import.meta.url));
    const now = String((SCALE_FIRST_DAY + SCALE_DAYS) * 86400);
    // Without enrichment, with it (as `alerts` runs by default), and so with the V8 setting of the
    // image (Dockerfile: NODE_OPTIONS).
    const image = '--max-semi-space-size=16';
    for (const [label, mode, nodeOptions] of [
      ['alerts --dry-run, 10,000 domains', '', ''],
      ['  the same, enriched', 'enrich', ''],
      [`  enriched, ${image}`, 'enrich', image],
      [`  not enriched, ${image}`, '', image],
    ] as const) {
      const r = JSON.parse(
        execFileSync(process.execPath, [alertsChild, db, now, ...(mode ? [mode] : [])], {
          encoding: 'utf8',
          env: { ...process.env, NODE_OPTIONS: nodeOptions },
        }),
      ) as { seconds: number; cpuSeconds: number; findings: number; maxRssMiB: number };
      console.log(
        `${label.padEnd(34)} ${r.seconds.toFixed(2).padStart(7)} s (${r.cpuSeconds.toFixed(1)} CPU-s) ${String(r.findings).padStart(4)} findings peak RSS ${r.maxRssMiB.toFixed(0)} MiB`,
      );
    }
    const rep = step<{ seconds: number; sources: number; maxRssMiB: number }>('report', db, 'd00000.example');
    console.log(
      `${'report totals, one domain'.padEnd(34)} ${rep.seconds.toFixed(3).padStart(7)} s (${rep.sources} sources), peak RSS ${rep.maxRssMiB.toFixed(0)} MiB`,
    );
    // The same as a user runs it: the whole process, start-up and JSON output included.
    const cli = timeCommand(['report', '--db', db, '--json', '--domain', 'd00000.example'], 3);
    console.log(
      `${'ruawatch report --json --domain'.padEnd(34)} ${(cli.ms / 1000).toFixed(3).padStart(7)} s wall (median of 3), ${cli.cpuMs.toFixed(0)} CPU-ms`,
    );
    const dash = step<{
      requests: Record<string, { first: number; p50: number; p95: number; max: number; bytes: number }>;
      maxRssMiB: number;
    }>('dashboard', db);
    for (const [p, r] of Object.entries(dash.requests)) {
      console.log(
        `  GET ${p.padEnd(50)} first ${r.first.toFixed(1).padStart(6)} ms, then p50 ${r.p50.toFixed(1).padStart(5)} ms  p95 ${r.p95.toFixed(1).padStart(5)} ms  max ${r.max.toFixed(1).padStart(5)} ms  ${(r.bytes / 1024).toFixed(0)} KiB`,
      );
    }
    console.log(`  (web server peak RSS ${dash.maxRssMiB.toFixed(0)} MiB)`);
    for (const [label, mode] of [
      ['/metrics, 10,000 domains', ''],
      ['  the same, enriched', 'enrich'],
    ] as const) {
      const r = step<Record<string, number>>('metrics', db, ...(mode ? [mode] : []));
      console.log(
        `${label.padEnd(34)} first ${r.first!.toFixed(0).padStart(5)} ms; kept p50 ${r.keptP50!.toFixed(1)} ms, max ${r.keptMax!.toFixed(1)} ms; worked out again median ${r.againMedian!.toFixed(0)} ms, max ${r.againMax!.toFixed(0)} ms; ${(r.bytes! / 1024).toFixed(0)} KiB, peak RSS ${r.maxRssMiB!.toFixed(0)} MiB`,
      );
    }
  } finally {
    for (const f of [db, `${db}-wal`, `${db}-shm`]) fs.rmSync(f, { force: true });
  }
}

try {
  if (!only || only === 'gz') {
    const dir = path.join(work, 'gz');
    writeGzCorpus(dir, 2000, 50);
    line('2,000 reports x 50 records, .xml.gz', measure('gz', [dir]));
  }
  if (!only || only === 'real') {
    // A model of a real mailbox (devtools/corpus.ts, writeRealisticCorpus): 35 domains, 8
    // reporters, 14 days; the same sources come back every day and from several reporters.
    const dir = path.join(work, 'real');
    writeRealisticCorpus(dir);
    line('realistic, 35 domains x 14 days', measure('real', [dir]));
  }
  if (!only || only === 'eml') {
    const dir = path.join(work, 'eml');
    writeEmlCorpus(dir, 2000, 50);
    line('2,000 reports x 50 records, .eml+zip', measure('eml', [dir]));
  }
  if (!only || only === 'big') {
    const file = path.join(work, 'big.xml');
    await writeBigReport(file, 200_000);
    const mb = (fs.statSync(file).size / 1e6).toFixed(0);
    line(`1 report x 200,000 records (${mb} MB)`, measure('big', [file]));
  }
  if (!only || only === 'alerts') {
    // 36 days x 4 reporters x 1,500 records: 216,000 records in the windows alerts reads.
    const dir = path.join(work, 'daily');
    const firstDay = 20_000;
    writeDailyCorpus(dir, 36, 4, 1500, firstDay);
    const db = path.join(work, 'alerts.sqlite');
    const ingested = JSON.parse(execFileSync(process.execPath, [child, db, dir], { encoding: 'utf8' })) as Result;
    const alertsChild = fileURLToPath(new URL('./alerts-child.js', import.meta.url));
    const r = JSON.parse(execFileSync(process.execPath, [alertsChild, db, String((firstDay + 36) * 86400)], { encoding: 'utf8' })) as {
      seconds: number;
      cpuSeconds: number;
      records: number;
      findings: number;
      maxRssMiB: number;
    };
    console.log(
      `${'alerts over 36 days (dry run)'.padEnd(34)} ${ingested.records.toLocaleString('en-US').padStart(9)} records ${r.seconds.toFixed(2).padStart(7)} s ` +
        `${Math.round(r.records / r.seconds)
          .toLocaleString('en-US')
          .padStart(
            8,
          )} records/s ${String(r.findings).padStart(3)} findings peak RSS ${r.maxRssMiB.toFixed(0)} MiB, ${r.cpuSeconds.toFixed(1)} CPU-s`,
    );
    // The same evaluation naming who is sending: every source of the windows looked up once.
    const e = JSON.parse(
      execFileSync(process.execPath, [alertsChild, db, String((firstDay + 36) * 86400), 'enrich'], { encoding: 'utf8' }),
    ) as { seconds: number; loadSeconds: number; sources: number; findings: number; maxRssMiB: number };
    console.log(
      `${'alerts, with enrichment'.padEnd(34)} ${e.sources.toLocaleString('en-US').padStart(9)} sources ${e.seconds.toFixed(2).padStart(7)} s ` +
        `(+${(e.seconds - r.seconds).toFixed(2)} s; data read before, in ${e.loadSeconds.toFixed(2)} s) ${String(e.findings).padStart(3)} findings peak RSS ${e.maxRssMiB.toFixed(0)} MiB`,
    );
  }
  if (!only || only === 'flood') {
    // One domain of 300,000 one-message sources (a forged report's worth) and 20 real ones.
    const db = path.join(work, 'flood.sqlite');
    const scaleChild = fileURLToPath(new URL('./scale-child.js', import.meta.url));
    execFileSync(process.execPath, [scaleChild, 'flood', db, '300000'], { encoding: 'utf8' });
    const alertsChild = fileURLToPath(new URL('./alerts-child.js', import.meta.url));
    for (const mode of ['', 'enrich']) {
      const r = JSON.parse(
        execFileSync(process.execPath, [alertsChild, db, String((SCALE_FIRST_DAY + SCALE_DAYS) * 86400), ...(mode ? [mode] : [])], {
          encoding: 'utf8',
        }),
      ) as { seconds: number; cpuSeconds: number; findings: number; maxRssMiB: number };
      console.log(
        `${(mode ? '  the same, enriched' : 'alerts, 300,000 1-message sources').padEnd(34)} ${r.seconds.toFixed(2).padStart(7)} s (${r.cpuSeconds.toFixed(1)} CPU-s) ${String(r.findings).padStart(3)} findings peak RSS ${r.maxRssMiB.toFixed(0)} MiB`,
      );
    }
  }
  if (!only || only === 'enrich') enrichCase();
  if (only === 'scale') await scale();
  if (!only || only === 'imap') {
    if (!findDovecot()) {
      console.log('IMAP case skipped: dovecot is not installed (apt-get install dovecot-imapd)');
    } else {
      const user = 'bench@example.com';
      const dovecot = await startDovecot([user]);
      try {
        const client = dovecot.client(user);
        await client.connect();
        for (let n = 0; n < 1000; n++) await client.append('INBOX', Buffer.from(emlMessage(n, 50)));
        await client.logout();
        const fetchChild = fileURLToPath(new URL('./fetch-child.js', import.meta.url));
        const out = execFileSync(process.execPath, [fetchChild, path.join(work, 'imap.sqlite'), String(dovecot.port), user, PASSWORD], {
          encoding: 'utf8',
        });
        const r = JSON.parse(out) as {
          seconds: number;
          cpuSeconds: number;
          workers: number;
          messages: number;
          records: number;
          failed: number;
          maxRssMiB: number;
        };
        console.log(
          `${'1,000 report mails over IMAP (fetch)'.padEnd(34)} ${r.messages.toLocaleString('en-US').padStart(7)} messages ` +
            `${r.seconds.toFixed(2).padStart(7)} s ${Math.round(r.messages / r.seconds)
              .toLocaleString('en-US')
              .padStart(6)} messages/s ` +
            `${Math.round(r.records / r.seconds)
              .toLocaleString('en-US')
              .padStart(8)} records/s peak RSS ${r.maxRssMiB.toFixed(0)} MiB, ${threads(r)}`,
        );
      } finally {
        await dovecot.stop();
      }
    }
  }
} finally {
  fs.rmSync(work, { recursive: true, force: true });
}
