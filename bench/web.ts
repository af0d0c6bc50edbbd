/**
 * `npm run bench:web [-- CLI]`: how `ruawatch run` answers /healthz while dashboard callers pile up.
 * Ingests 88 days x 4 reporters x 1,000 records (352,000 records, almost every one from its own
 * source IP) into a fresh database, starts `ruawatch run` on it as its own process, then fires 20
 * concurrent /api/overview calls while /healthz is asked every 50 ms (the same call twenty times,
 * then twenty different ones that cannot share an answer). Prints numbers; asserts
 * nothing. CLI defaults to this checkout's build; give another build's dist/src/cli/main.js to
 * compare (its own `ingest` fills the database, so the schema matches it).
 */
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { writeDailyCorpus } from '../devtools/corpus.js';

const cli = path.resolve(process.argv[2] ?? fileURLToPath(new URL('../src/cli/main.js', import.meta.url)));
const DAYS = 88;
const CALLERS = 20;
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'ruawatch-bench-web-'));
const TOKEN = 'bench-token';

const ms = (t0: bigint) => Number(process.hrtime.bigint() - t0) / 1e6;
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN;

/** One GET on a connection of its own, as separate callers would make; a failure is status 0. */
function timed(url: string, auth: boolean): Promise<{ ms: number; bytes: number; status: number }> {
  const t0 = process.hrtime.bigint();
  return new Promise((resolve) => {
    const req = http.get(url, { agent: false, headers: auth ? { authorization: `Bearer ${TOKEN}` } : {} }, (res) => {
      let bytes = 0;
      res.on('data', (d: Buffer) => (bytes += d.length));
      res.on('end', () => resolve({ ms: ms(t0), bytes, status: res.statusCode ?? 0 }));
      res.on('error', () => resolve({ ms: ms(t0), bytes, status: 0 }));
    });
    req.on('error', () => resolve({ ms: ms(t0), bytes: 0, status: 0 }));
  });
}

function peakRssMiB(pid: number): number {
  const m = /VmHWM:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
}

console.log(
  `ruawatch web benchmark: node ${process.version}, ${os.cpus().length} CPUs, load average ${os
    .loadavg()
    .map((l) => l.toFixed(2))
    .join(' ')}`,
);
console.log(`cli: ${cli}`);
const today = Math.floor(Date.now() / 86_400_000);
const corpus = path.join(work, 'corpus');
writeDailyCorpus(corpus, DAYS, 4, 1000, today - DAYS + 1);
const db = path.join(work, 'web.sqlite');
const t0 = process.hrtime.bigint();
const ingested = JSON.parse(execFileSync(process.execPath, [cli, 'ingest', '--db', db, '--json', corpus], { encoding: 'utf8' })) as {
  records: number;
};
console.log(`ingested ${ingested.records.toLocaleString('en-US')} records in ${(ms(t0) / 1000).toFixed(1)} s`);

const config = path.join(work, 'c.toml');
fs.writeFileSync(
  config,
  `[database]\npath = "${db}"\n[analysis]\nreverse_dns = false\n[schedule]\npoll = "0 0 1 1 *"\n[web]\nlisten = "127.0.0.1:0"\ntoken = "${TOKEN}"\n[log]\nlevel = "error"\n`,
);
const proc = spawn(process.execPath, [cli, 'run', '--config', config], { stdio: ['ignore', 'pipe', 'inherit'] });
process.on('exit', () => proc.kill('SIGKILL'));
try {
  const url = await new Promise<string>((resolve, reject) => {
    let out = '';
    proc.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /on (http:\/\/\S+)/.exec(out);
      if (m) resolve(m[1]!);
    });
    proc.once('exit', (code) => reject(new Error(`ruawatch run exited (${code})`)));
  });
  // The first poll (no mailbox) evaluates the alerts over the whole database; wait for it.
  for (;;) {
    const h = (await (await fetch(`${url}/healthz`)).json()) as { last_success: string | null };
    if (h.last_success) break;
    await new Promise((r) => setTimeout(r, 200));
  }
  const idle: number[] = [];
  for (let i = 0; i < 10; i++) idle.push((await timed(`${url}/healthz`, false)).ms);
  const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));
  const single: { ms: number; bytes: number }[] = [];
  for (let i = 0; i < 3; i++) {
    await pause(6000); // past a short cache, if there is one
    single.push(await timed(`${url}/api/overview`, true));
  }
  console.log(
    `one /api/overview call: ${single.map((s) => s.ms.toFixed(0)).join(', ')} ms, ${(single[0]!.bytes / 1e6).toFixed(2)} MB; ` +
      `/healthz idle: median ${median(idle).toFixed(1)} ms`,
  );

  /** CALLERS concurrent calls to the targets `path(i)` gives, with /healthz probed every 50 ms meanwhile. */
  async function burst(what: string, target: (i: number) => string): Promise<void> {
    await pause(6000);
    const probes: number[] = [];
    let done = false;
    const prober = (async () => {
      while (!done) {
        probes.push((await timed(`${url}/healthz`, false)).ms);
        await pause(50);
      }
    })();
    const t1 = process.hrtime.bigint();
    const calls = await Promise.all(Array.from({ length: CALLERS }, (_, i) => timed(`${url}${target(i)}`, true)));
    const wall = ms(t1);
    done = true;
    await prober;
    const statuses = [...new Set(calls.map((c) => c.status))].join(',');
    console.log(
      `${CALLERS} concurrent ${what}: all answered in ${wall.toFixed(0)} ms (status ${statuses}, ` +
        `${(calls.reduce((n, c) => n + c.bytes, 0) / 1e6).toFixed(1)} MB); /healthz meanwhile: ${probes.length} probes, ` +
        `median ${median(probes).toFixed(1)} ms, max ${Math.max(...probes).toFixed(1)} ms`,
    );
  }
  await burst('/api/overview', () => '/api/overview');
  // No two alike, so none can share an answer: what the query thread alone does for /healthz.
  await burst('/api/overview?days=N (all different)', (i) => `/api/overview?days=${30 + i}`);
  console.log(`peak RSS of ruawatch run: ${peakRssMiB(proc.pid!).toFixed(0)} MiB`);
} finally {
  proc.kill('SIGTERM');
  await new Promise((r) => proc.once('exit', r));
  fs.rmSync(work, { recursive: true, force: true });
}
