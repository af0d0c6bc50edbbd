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
import { emlMessage, writeBigReport, writeDailyCorpus, writeEmlCorpus, writeGzCorpus } from '../devtools/corpus.js';

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

console.log(`ruawatch ingest benchmark: node ${process.version}, ${os.cpus().length} CPUs, ${os.cpus()[0]?.model ?? ''}`);
try {
  if (!only || only === 'gz') {
    const dir = path.join(work, 'gz');
    writeGzCorpus(dir, 2000, 50);
    line('2,000 reports x 50 records, .xml.gz', measure('gz', [dir]));
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
      records: number;
      findings: number;
      maxRssMiB: number;
    };
    console.log(
      `${'alerts over 36 days (dry run)'.padEnd(34)} ${ingested.records.toLocaleString('en-US').padStart(9)} records ${r.seconds.toFixed(2).padStart(7)} s ` +
        `${Math.round(r.records / r.seconds)
          .toLocaleString('en-US')
          .padStart(8)} records/s ${String(r.findings).padStart(3)} findings peak RSS ${r.maxRssMiB.toFixed(0)} MiB`,
    );
  }
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
