/**
 * The `scale` benchmark's steps, each in its own process so peak RSS belongs to that step:
 *
 *   gen DB        a database as a ruawatch from before the rollups left it (migrations 1-3) with
 *                 10,000 policy domains over 35 days: about 20 million aggregate report records,
 *                 850,000 reports, and TLS reports for the larger domains; written by SQLite from
 *                 recursive CTEs, not through the parser
 *   migrate DB    opens it as ruawatch does: migration 0004 builds the daily rollups
 *   dashboard URL every dashboard API request, timed
 *   report DB D   report totals for one domain, as `ruawatch report --json --domain D`
 *   metrics DB [enrich]
 *                 /metrics as the query thread answers it (metricsText), over the database opened
 *                 read-only: the first scrape, scrapes that get the kept gauges, and scrapes that
 *                 work them out again (the window moved back a day each time: the same cost as the
 *                 first scrape KEEP_SECONDS after reports were added)
 *   flood DB N    a new database with one policy domain over the same 35 days: 20 real sources
 *                 of 500 messages a day, and N sources of one message each over the last two
 *                 weeks (a forged report's worth), passing in the baseline, failing in the recent
 *                 week; written straight into the daily rollups
 *
 * Prints what it measured as JSON.
 */
import http from 'node:http';
import { pathToFileURL } from 'node:url';
import Database from 'better-sqlite3';
import { DAY } from '../src/analyse/index.js';
import { configSchema } from '../src/config/schema.js';
import { createLogger } from '../src/log.js';
import { openDb } from '../src/store/db.js';
import { loadMigrations, migrate } from '../src/store/migrate.js';
import { reportTotals } from '../src/store/summary.js';
import { createEnricher } from '../src/enrich/index.js';
import { metricsText } from '../src/web/metrics.js';
import { startWeb } from '../src/web/server.js';
import { Worker } from '../src/worker/worker.js';
import { openApp } from '../src/app.js';

/** The first day of the data: the 35 days end on the day before `alerts` evaluates. */
export const SCALE_FIRST_DAY = 20_000;
export const SCALE_DAYS = 35;

const [mode, ...args] = process.argv.slice(2);
const start = process.hrtime.bigint();
const seconds = () => Number(process.hrtime.bigint() - start) / 1e9;
const rss = () => process.resourceUsage().maxRSS / 1024;

/** Domain r (0-9,999): 20 with 600 sources and 6 reporters, 180 with 150 and 6, 1,800 with 25 and 4, 8,000 with 4 and 2. */
const TIERS = `CASE WHEN r < 20 THEN 600 WHEN r < 200 THEN 150 WHEN r < 2000 THEN 25 ELSE 4 END`;
const REPORTERS = `CASE WHEN r < 200 THEN 6 WHEN r < 2000 THEN 4 ELSE 2 END`;

function generate(file: string): Record<string, number> {
  const db = new Database(file);
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = OFF');
  db.pragma('cache_size = -262144');
  migrate(
    db,
    loadMigrations().filter((m) => m.id <= 3),
    {},
  );
  const d0 = SCALE_FIRST_DAY;
  db.exec(`
    CREATE TEMP TABLE nums (n INTEGER PRIMARY KEY);
    WITH RECURSIVE s(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM s WHERE n < 999) INSERT INTO nums SELECT n FROM s;
    CREATE TEMP TABLE gen (r INTEGER PRIMARY KEY, name TEXT, sources INTEGER, reporters INTEGER);
    INSERT INTO gen SELECT a.n * 1000 + b.n, printf('d%05d.example', a.n * 1000 + b.n), 0, 0 FROM nums a, nums b
      WHERE a.n * 1000 + b.n < ${Number(process.env.BENCH_SCALE_DOMAINS ?? 10_000)};
    UPDATE gen SET sources = ${TIERS}, reporters = ${REPORTERS};`);
  // Report ids encode (domain, day, reporter): id - 1 = (r * 35 + day) * 8 + k.
  db.exec(`INSERT INTO reports (id, kind, reporter, report_id, policy_domain, begin_ts, end_ts, record_count, message_count,
      raw_sha256, raw_size, input, ingested_at)
    SELECT (g.r * ${SCALE_DAYS} + d.n) * 8 + k.n + 1, 'dmarc', 'reporter' || k.n || '.example', 'g-' || g.r || '-' || d.n || '-' || k.n,
      g.name, (${d0} + d.n) * 86400, (${d0} + d.n + 1) * 86400 - 1, 0, 0, hex(randomblob(32)), 1000, 'bench', 0
    FROM gen g JOIN nums d ON d.n < ${SCALE_DAYS} JOIN nums k ON k.n < g.reporters ORDER BY 1;
    INSERT INTO dmarc_policies (report_id, domain, adkim, aspf, p, sp, pct)
      SELECT id, policy_domain, 'r', 'r', CASE WHEN (id - 1) / ${SCALE_DAYS * 8} % 3 = 0 THEN 'quarantine' ELSE 'reject' END, NULL, 100
      FROM reports;`);
  // Records: each reporter lists 95% of a domain's sources a day, a quarter of them in two records
  // (passing and failing parts). A few sources are shared by every domain (an ESP), a tenth are
  // IPv6; sources 1 of every 500th domain fail in the last five days, and a new source spoofs every
  // 700th domain in the last four.
  const h = `((rp.id * 2654435761 + s.n * 40503) % 1000003)`;
  const insert = db.prepare(`INSERT INTO dmarc_records (report_id, source_ip, count, disposition, dkim_aligned, spf_aligned, header_from,
      envelope_from, reasons, dkim_results, spf_results)
    SELECT rp.id,
      CASE WHEN s.n < 3 THEN '198.51.100.' || s.n
           WHEN s.n % 10 = 9 THEN printf('2001:db8:%x::%x', g.r, s.n)
           ELSE printf('10.%d.%d.%d', (g.r * 1000 + s.n) >> 16 & 255, (g.r * 1000 + s.n) >> 8 & 255, (g.r * 1000 + s.n) & 255) END,
      1 + ${h} % (CASE WHEN g.r < 200 THEN 400 ELSE 40 END),
      CASE WHEN x.n = 1 THEN 'quarantine' ELSE 'none' END,
      CASE WHEN x.n = 1 OR (g.r % 500 = 0 AND s.n = 1 AND @day >= ${SCALE_DAYS - 5}) THEN 'fail' ELSE 'pass' END,
      CASE WHEN x.n = 1 OR (g.r % 500 = 0 AND s.n = 1 AND @day >= ${SCALE_DAYS - 5}) THEN 'fail' ELSE 'pass' END,
      CASE WHEN s.n % 7 = 0 THEN 'news.' ELSE '' END || g.name, g.name, '[]',
      '[{"domain":"' || g.name || '","selector":"s' || (s.n % 3) || '","result":"' ||
        CASE WHEN x.n = 1 OR (g.r % 500 = 0 AND s.n = 1 AND @day >= ${SCALE_DAYS - 5}) THEN 'fail' ELSE 'pass' END || '","human_result":null}]',
      '[{"domain":"' || g.name || '","scope":"mfrom","result":"pass","human_result":null}]'
    FROM reports rp JOIN gen g ON g.r = (rp.id - 1) / ${SCALE_DAYS * 8}
      JOIN nums s ON s.n < g.sources JOIN nums x ON x.n < CASE WHEN ${h} % 4 = 0 THEN 2 ELSE 1 END
    WHERE (rp.id - 1) / 8 % ${SCALE_DAYS} = @day AND ${h} % 100 < 95
    ORDER BY rp.id`);
  const spoof =
    db.prepare(`INSERT INTO dmarc_records (report_id, source_ip, count, disposition, dkim_aligned, spf_aligned, header_from, reasons, dkim_results, spf_results)
    SELECT rp.id, printf('203.0.113.%d', g.r % 250), 200, 'reject', 'fail', 'fail', g.name, '[]', '[]', '[]'
    FROM reports rp JOIN gen g ON g.r = (rp.id - 1) / ${SCALE_DAYS * 8}
    WHERE (rp.id - 1) / 8 % ${SCALE_DAYS} = @day AND (rp.id - 1) % 8 = 0 AND g.r % 700 = 1 AND @day >= ${SCALE_DAYS - 4}`);
  for (let day = 0; day < SCALE_DAYS; day++) {
    db.transaction(() => {
      insert.run({ day });
      spoof.run({ day });
    })();
    process.stderr.write(`\rgenerating day ${day + 1} of ${SCALE_DAYS}`);
  }
  process.stderr.write('\r\x1b[2K');
  // TLS reports for the 2,000 larger domains, one a day; mx2 of every 100th fails in the last days.
  db.exec(`INSERT INTO reports (id, kind, reporter, report_id, policy_domain, begin_ts, end_ts, raw_sha256, raw_size, input, ingested_at)
      SELECT 100000000 + g.r * ${SCALE_DAYS} + d.n, 'tlsrpt', 'tls.example', 't-' || g.r || '-' || d.n, g.name, (${d0} + d.n) * 86400,
        (${d0} + d.n + 1) * 86400 - 1, hex(randomblob(32)), 500, 'bench', 0
      FROM gen g JOIN nums d ON d.n < ${SCALE_DAYS} WHERE g.r < 2000;
    INSERT INTO tls_policies (id, report_id, policy_type, policy_domain, policy_strings, mx_hosts, successful, failed)
      SELECT id, id, 'sts', policy_domain, '[]', '["mx1.' || policy_domain || '","mx2.' || policy_domain || '"]', 1000,
        CASE WHEN (id - 100000000) / ${SCALE_DAYS} % 100 = 0 AND (id - 100000000) % ${SCALE_DAYS} >= ${SCALE_DAYS - 2} THEN 300 ELSE 0 END
      FROM reports WHERE kind = 'tlsrpt';
    INSERT INTO tls_failures (policy_id, result_type, receiving_mx_hostname, failed_sessions)
      SELECT id, 'certificate-expired', 'mx2.' || policy_domain, failed FROM tls_policies WHERE failed > 0;
    UPDATE reports SET record_count = 1 WHERE kind = 'tlsrpt';`);
  const count = (sql: string) => db.prepare(sql).pluck().get() as number;
  const out = {
    seconds: seconds(),
    reports: count(`SELECT COUNT(*) FROM reports`),
    records: count(`SELECT COUNT(*) FROM dmarc_records`),
    maxRssMiB: rss(),
  };
  db.pragma('wal_checkpoint(TRUNCATE)');
  db.close();
  return out;
}

async function dashboard(file: string): Promise<Record<string, unknown>> {
  const db = openDb(file);
  const config = configSchema.parse({ web: { listen: '127.0.0.1:0' }, analysis: { reverse_dns: false } });
  const log = createLogger('silent');
  const web = await startWeb(config, db, new Worker(openApp(config, { db, log, lookup: null, channels: [] })), log);
  const at = new Date((SCALE_FIRST_DAY + SCALE_DAYS - 1) * DAY * 1000).toISOString().slice(0, 10);
  const get = (path: string) =>
    new Promise<{ ms: number; bytes: number; status: number }>((resolve, reject) => {
      const t = process.hrtime.bigint();
      http
        .get(`${web.url}${path}`, (res) => {
          let bytes = 0;
          res.on('data', (c: Buffer) => (bytes += c.length));
          res.on('end', () => resolve({ ms: Number(process.hrtime.bigint() - t) / 1e6, bytes, status: res.statusCode ?? 0 }));
        })
        .on('error', reject);
    });
  const report = db.prepare(`SELECT id FROM reports WHERE kind = 'dmarc' ORDER BY id DESC LIMIT 1`).pluck().get() as number;
  const paths = [
    `/api/overview?at=${at}`,
    `/api/overview?at=${at}&days=90`,
    `/api/overview?at=${at}&domain=d00000.example`,
    `/api/overview?at=${at}&domain=d09999.example`,
    `/api/overview`,
    `/api/reports/${report}`,
    `/metrics`,
  ];
  // The first request of each kind reads the rollups (cold); the next 40 are served as after the
  // first look at the page following a poll (the overview is cached until a report is added).
  const results: Record<string, { first: number; p50: number; p95: number; max: number; bytes: number }> = {};
  for (const p of paths) {
    const first = await get(p);
    if (first.status !== 200) throw new Error(`${p}: ${first.status}`);
    const times: number[] = [];
    for (let i = 0; i < 40; i++) times.push((await get(p)).ms);
    times.sort((a, b) => a - b);
    results[p] = { first: first.ms, p50: times[19]!, p95: times[37]!, max: times[39]!, bytes: first.bytes };
  }
  await web.close();
  db.close();
  return { requests: results, maxRssMiB: rss() };
}

/** The `metrics` step (see above). Milliseconds. */
function metrics(file: string, enrich: boolean): Record<string, number> {
  const db = new Database(file, { readonly: true, fileMustExist: true });
  const config = configSchema.parse({ analysis: { reverse_dns: false } });
  const log = createLogger('silent');
  const worker = new Worker(openApp(config, { db, log, lookup: null, channels: [] }));
  const t0 = seconds();
  const enricher = enrich ? createEnricher(config.enrich, { cacheDir: null }) : null;
  enricher?.data();
  const enricherLoad = (seconds() - t0) * 1000;
  const now = (SCALE_FIRST_DAY + SCALE_DAYS) * DAY + 3600;
  const scrape = (at: number) => {
    const t = process.hrtime.bigint();
    const text = metricsText(db, worker.state, config, at, enricher);
    return { ms: Number(process.hrtime.bigint() - t) / 1e6, bytes: text.length };
  };
  const first = scrape(now);
  const kept = Array.from({ length: 20 }, (_, i) => scrape(now + 15 * (i + 1)).ms).sort((a, b) => a - b);
  const again = Array.from({ length: 5 }, (_, i) => scrape(now - (i + 1) * DAY).ms).sort((a, b) => a - b);
  db.close();
  return {
    enricherLoad,
    first: first.ms,
    keptP50: kept[9]!,
    keptMax: kept[19]!,
    againMedian: again[2]!,
    againMax: again[4]!,
    bytes: first.bytes,
    maxRssMiB: rss(),
  };
}

/** The `flood` database (see above): what one domain's evaluation holds when most of its sources can matter to no rule. */
function flood(file: string, n: number): Record<string, number> {
  const db = openDb(file);
  const d0 = SCALE_FIRST_DAY;
  const last = d0 + SCALE_DAYS - 1;
  db.exec(`
    CREATE TEMP TABLE flood AS WITH RECURSIVE s(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM s WHERE i < ${n - 1})
      SELECT i, printf('10.%d.%d.%d', i >> 16 & 255, i >> 8 & 255, i & 255) AS ip, ${last - 13} + i % 14 AS day, (i % 14 < 7) AS pass FROM s;
    CREATE TEMP TABLE real AS WITH RECURSIVE s(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM s WHERE i < 19),
      d(day) AS (SELECT ${d0} UNION ALL SELECT day + 1 FROM d WHERE day < ${last})
      SELECT i, '198.51.100.' || i AS ip, day FROM s, d;
    INSERT INTO dmarc_daily (domain, day, source_ip, header_from, messages, dmarc_pass, dkim_aligned_pass, spf_aligned_pass,
        forwarded, quarantine, reject, reports, reporters)
      SELECT 'flood.example', day, ip, 'flood.example', 1, pass, 0, pass, 0, 0, 1 - pass, 1, 1 FROM flood
      UNION ALL SELECT 'flood.example', day, ip, 'flood.example', 500, 500, 500, 500, 0, 0, 0, 1, 1 FROM real;
    INSERT INTO dkim_daily (domain, day, source_ip, signing_domain, selector, result, messages)
      SELECT 'flood.example', day, ip, 'flood.example', 'forged', 'fail', 1 FROM flood WHERE NOT pass
      UNION ALL SELECT 'flood.example', day, ip, 'flood.example', 's1', 'pass', 500 FROM real;
    INSERT INTO domain_daily (day, domain, messages, dmarc_pass, dkim_aligned_pass, spf_aligned_pass, forwarded, quarantine, reject, dmarc_reports)
      SELECT day, domain, SUM(messages), SUM(dmarc_pass), SUM(dkim_aligned_pass), SUM(spf_aligned_pass), SUM(forwarded), SUM(quarantine),
        SUM(reject), 1 FROM dmarc_daily GROUP BY day, domain;`);
  const rows = db.prepare(`SELECT COUNT(*) FROM dmarc_daily`).pluck().get() as number;
  db.pragma('wal_checkpoint(TRUNCATE)');
  db.close();
  return { seconds: seconds(), sourceRows: rows, maxRssMiB: rss() };
}

const main = process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href;
if (!main) {
  // Imported for its constants.
} else if (mode === 'gen') {
  process.stdout.write(JSON.stringify(generate(args[0]!)));
} else if (mode === 'migrate') {
  const db = openDb(args[0]!);
  const rows = db.prepare(`SELECT COUNT(*) FROM dmarc_daily`).pluck().get() as number;
  const t = seconds();
  db.close();
  const cpu = process.cpuUsage();
  process.stdout.write(JSON.stringify({ seconds: t, cpuSeconds: (cpu.user + cpu.system) / 1e6, rollupRows: rows, maxRssMiB: rss() }));
} else if (mode === 'dashboard') {
  process.stdout.write(JSON.stringify(await dashboard(args[0]!)));
} else if (mode === 'metrics') {
  process.stdout.write(JSON.stringify(metrics(args[0]!, args[1] === 'enrich')));
} else if (mode === 'flood') {
  process.stdout.write(JSON.stringify(flood(args[0]!, Number(args[1] ?? 300_000))));
} else if (mode === 'report') {
  const db = openDb(args[0]!);
  const t0 = seconds();
  const totals = reportTotals(db, { domain: args[1]! });
  const t = seconds() - t0;
  db.close();
  process.stdout.write(JSON.stringify({ seconds: t, sources: totals.domains[0]?.sources.length ?? 0, maxRssMiB: rss() }));
}
