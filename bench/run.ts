/**
 * `npm run bench`: generates a deterministic corpus and measures ingest into a fresh database.
 * Prints numbers; asserts nothing. Each case runs in its own process for a clean peak RSS.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { writeBigReport, writeEmlCorpus, writeGzCorpus } from './corpus.js';

const child = fileURLToPath(new URL('./ingest-child.js', import.meta.url));
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'ruawatch-bench-'));
const only = process.argv[2];

interface Result {
  seconds: number;
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
      `${r.seconds.toFixed(2).padStart(7)} s ${rate(r.records).padStart(8)} records/s ${rate(r.reports).padStart(6)} reports/s ` +
      `peak RSS ${r.maxRssMiB.toFixed(0)} MiB`,
  );
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
} finally {
  fs.rmSync(work, { recursive: true, force: true });
}
