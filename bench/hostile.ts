/**
 * Hostile inputs and faults, tried against a built checkout of ruawatch as a black box: its CLI
 * (`node ROOT/dist/src/cli/main.js`) and the web port of `ruawatch run`. Each case runs in a fresh
 * temporary folder with its own database and ends as "survived" (a clear error or refusal, the
 * process alive or ended cleanly, nothing lost, `PRAGMA integrity_check` ok, no report counted
 * twice, nothing implausible stored) or "bad" (crash, hang past a deadline, memory past a bound,
 * implausible data stored, duplicate, loss). Prints one line per case and a summary table.
 *
 *   npm run bench:hostile -- --root DIR [--root DIR2 ...] [--only REGEX] [--group ingest|web|fault]
 *
 * With several roots (say, an old build and the current one) the table has a column pair for each.
 */
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import { createRequire } from 'node:module';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import zlib from 'node:zlib';
import Database from 'better-sqlite3';
import { zipSync } from 'fflate';
import { SMTPServer } from 'smtp-server';
import { findDovecot, PASSWORD, startDovecot, type Dovecot } from '../devtools/dovecot.js';

const requireCjs = createRequire(import.meta.url);

// ---------------------------------------------------------------------------------------------
// Options

const argv = process.argv.slice(2);
const roots: string[] = [];
let only: RegExp | null = null;
let groups: Set<string> | null = null;
for (let i = 0; i < argv.length; i++) {
  const a = argv[i]!;
  if (a === '--root') roots.push(path.resolve(argv[++i] ?? ''));
  else if (a === '--only') only = new RegExp(argv[++i] ?? '');
  else if (a === '--group') (groups ??= new Set()).add(argv[++i] ?? '');
  else {
    process.stderr.write(`usage: hostile --root DIR [--root DIR ...] [--only REGEX] [--group ingest|web|fault]\n`);
    process.exit(2);
  }
}
if (roots.length === 0) roots.push(process.cwd());
for (const r of roots) {
  if (!fs.existsSync(path.join(r, 'dist/src/cli/main.js'))) {
    process.stderr.write(`${r}: no dist/src/cli/main.js (run npm ci && npm run build there)\n`);
    process.exit(2);
  }
}

/** Bounds every process is held to. */
const DEADLINE_MS = 45_000;
const RSS_BOUND_MIB = 1024;

// ---------------------------------------------------------------------------------------------
// Processes

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  ms: number;
  peakMiB: number;
  /** Stopped by us: past the deadline or the memory bound. */
  stopped: 'deadline' | 'memory' | null;
}

/** Peak resident set of a live process (VmHWM), in MiB; 0 when it has ended. */
function peakRss(pid: number): number {
  try {
    const m = /VmHWM:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) / 1024 : 0;
  } catch {
    return 0;
  }
}

interface ProcOptions {
  cwd?: string;
  deadlineMs?: number;
  env?: Record<string, string>;
  stdin?: string;
}

function startCli(root: string, args: string[], opts: ProcOptions = {}) {
  return spawn(process.execPath, [path.join(root, 'dist/src/cli/main.js'), ...args], {
    cwd: opts.cwd ?? os.tmpdir(),
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: opts.cwd ?? os.tmpdir(), ...opts.env },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
}

/** Runs `ruawatch ARGS` to its end, or stops it at the deadline or the memory bound. */
function cli(root: string, args: string[], opts: ProcOptions = {}): Promise<Run> {
  const t0 = Date.now();
  const p = startCli(root, args, opts);
  return watch(p, t0, opts.deadlineMs ?? DEADLINE_MS);
}

function watch(p: ReturnType<typeof startCli>, t0: number, deadlineMs: number): Promise<Run> {
  return new Promise((resolve) => {
    let stdout = '';
    let stderr = '';
    let peak = 0;
    let stopped: Run['stopped'] = null;
    p.stdout.on('data', (d: Buffer) => {
      if (stdout.length < 4 * 1024 * 1024) stdout += d.toString();
    });
    p.stderr.on('data', (d: Buffer) => {
      if (stderr.length < 1024 * 1024) stderr += d.toString();
    });
    p.stdin.on('error', () => undefined);
    p.stdin.end();
    const poll = setInterval(() => {
      peak = Math.max(peak, peakRss(p.pid!));
      if (peak > RSS_BOUND_MIB && !stopped) {
        stopped = 'memory';
        p.kill('SIGKILL');
      } else if (Date.now() - t0 > deadlineMs && !stopped) {
        stopped = 'deadline';
        p.kill('SIGKILL');
      }
    }, 25);
    p.on('close', (code, signal) => {
      clearInterval(poll);
      resolve({ code, signal, stdout, stderr, ms: Date.now() - t0, peakMiB: peak, stopped });
    });
  });
}

/** An uncaught exception's trace on stderr: a crash, not an error message. */
function crashed(r: Run): string | null {
  if (r.stopped === 'deadline') return `hang: stopped after ${Math.round(r.ms / 1000)} s`;
  if (r.stopped === 'memory') return `memory: past ${RSS_BOUND_MIB} MiB`;
  if (r.signal) return `crash: ${r.signal}`;
  if (r.code !== 0 && r.code !== 1 && r.code !== 2) return `crash: exit ${r.code}: ${firstLine(r.stderr)}`;
  if (/^\s+at .+:\d+:\d+\)?$/m.test(r.stderr) || /FATAL ERROR|Uncaught|node:internal/.test(r.stderr))
    return `crash: ${firstLine(r.stderr)}`;
  return null;
}

function firstLine(s: string): string {
  const line =
    s
      .split('\n')
      .map((l) => l.trim())
      .find((l) => /error|Error|ERR|refus|limit|full|lock|busy|readonly|read-only/i.test(l)) ?? s.trim().split('\n')[0];
  return (line ?? '').slice(0, 140);
}

interface Summary {
  inputs: number;
  reports: { dmarc: number; tlsrpt: number; failure: number };
  records: number;
  duplicates: number;
  failed: { input: string; error: string; code?: string }[];
  skipped: { input: string; reason: string }[];
}

function summaryOf(r: Run): Summary | null {
  try {
    return JSON.parse(r.stdout) as Summary;
  } catch {
    return null;
  }
}

function outcomeText(s: Summary | null, r: Run): string {
  if (!s) return `exit ${r.code}: ${firstLine(r.stderr)}`;
  const stored = s.reports.dmarc + s.reports.tlsrpt + s.reports.failure;
  if (s.failed.length) return `failed: ${(s.failed[0]!.code ? `${s.failed[0]!.code} ` : '') + s.failed[0]!.error.slice(0, 110)}`;
  if (s.skipped.length) return `skipped: ${s.skipped[0]!.reason.slice(0, 110)}`;
  return `stored ${stored} report(s), ${s.records} record(s)`;
}

// ---------------------------------------------------------------------------------------------
// The database, read after the fact

function dbCheck(file: string, fn?: (db: Database.Database) => string | null): string | null {
  if (!fs.existsSync(file)) return null;
  if (fs.statSync(file).size === 0) return 'a 0-byte database file was left behind';
  let db: Database.Database | null = null;
  try {
    db = new Database(file, { fileMustExist: true });
    const ic = db.pragma('integrity_check', { simple: true });
    if (ic !== 'ok') return `integrity_check: ${String(ic)}`;
    return fn ? fn(db) : null;
  } catch (e) {
    return `database unreadable: ${(e as Error).message}`;
  } finally {
    db?.close();
  }
}

const num = (db: Database.Database, sql: string): number => {
  try {
    return Number(db.prepare(sql).pluck().get() ?? 0);
  } catch {
    return 0; // a table this version does not have
  }
};

const MIN_TS = Date.UTC(2000, 0, 1) / 1000;
const MAX_SPAN = 31 * 86400;
/** The count any hostile record carries: a record with this IP must not be stored. */
const POISON_IP = '198.51.100.66';

/** What must never be found in a database, whatever went in. */
function implausible(db: Database.Database): string | null {
  const future = Math.floor(Date.now() / 1000) + 2 * 86400;
  const ranges = num(
    db,
    `SELECT COUNT(*) FROM reports WHERE begin_ts > end_ts OR begin_ts < ${MIN_TS} OR end_ts > ${future} OR end_ts - begin_ts > ${MAX_SPAN}`,
  );
  if (ranges) return `${ranges} report(s) stored with an implausible date range`;
  const bad = db
    .prepare(`SELECT source_ip FROM dmarc_records`)
    .pluck()
    .all()
    .filter((ip) => typeof ip !== 'string' || net.isIP(ip) === 0);
  if (bad.length) return `${bad.length} record(s) stored with source_ip not an address (${JSON.stringify(String(bad[0]).slice(0, 20))})`;
  const poison = num(db, `SELECT COUNT(*) FROM dmarc_records WHERE source_ip = '${POISON_IP}'`);
  if (poison)
    return `the record with an impossible count was stored (as ${num(db, `SELECT count FROM dmarc_records WHERE source_ip = '${POISON_IP}'`)})`;
  const counts =
    num(db, `SELECT COUNT(*) FROM dmarc_records WHERE count < 0 OR count > 1e12 OR typeof(count) <> 'integer'`) +
    num(
      db,
      `SELECT COUNT(*) FROM tls_policies WHERE successful < 0 OR failed < 0 OR successful > 1e12 OR failed > 1e12 OR typeof(successful) <> 'integer'`,
    ) +
    num(
      db,
      `SELECT COUNT(*) FROM tls_failures WHERE failed_sessions < 0 OR failed_sessions > 1e12 OR typeof(failed_sessions) <> 'integer'`,
    );
  if (counts) return `${counts} row(s) stored with an implausible count`;
  const nul =
    num(db, `SELECT COUNT(*) FROM reports WHERE instr(reporter || report_id || policy_domain || coalesce(contact_info, ''), char(0)) > 0`) +
    num(db, `SELECT COUNT(*) FROM tls_policies WHERE instr(policy_strings || mx_hosts || coalesce(policy_domain, ''), char(0)) > 0`) +
    num(
      db,
      `SELECT COUNT(*) FROM tls_failures WHERE instr(coalesce(receiving_mx_hostname, '') || coalesce(additional_information, '') || coalesce(failure_reason_code, ''), char(0)) > 0`,
    );
  if (nul) return `${nul} row(s) stored with NUL characters`;
  const entity = num(
    db,
    `SELECT COUNT(*) FROM reports WHERE reporter LIKE '%root:%' OR length(reporter) > 10000 OR report_id LIKE '%root:%'`,
  );
  if (entity) return 'an entity was expanded into stored data';
  return null;
}

const reportCount = (file: string): number => {
  if (!fs.existsSync(file)) return 0;
  const db = new Database(file, { fileMustExist: true });
  try {
    return num(db, 'SELECT COUNT(*) FROM reports') * 1e9 + num(db, 'SELECT COUNT(*) FROM dmarc_records');
  } finally {
    db.close();
  }
};

// ---------------------------------------------------------------------------------------------
// Inputs, generated

const DAY = 86400;
const BASE = Math.floor(Date.now() / 1000 / DAY) * DAY - 5 * DAY;
const isoDay = (ts: number) => new Date(ts * 1000).toISOString().slice(0, 10);
const AT = isoDay(BASE + 2 * DAY);

interface Rec {
  ip: string;
  count: string | number;
  pass?: boolean;
  /** Further <dkim> elements of auth_results. */
  dkim?: string;
}

function recordXml(r: Rec): string {
  const res = r.pass === false ? 'fail' : 'pass';
  return (
    `<record><row><source_ip>${r.ip}</source_ip><count>${r.count}</count><policy_evaluated><disposition>none</disposition>` +
    `<dkim>${res}</dkim><spf>${res}</spf></policy_evaluated></row><identifiers><header_from>example.com</header_from></identifiers>` +
    `<auth_results><dkim><domain>example.com</domain><selector>s1</selector><result>${res}</result></dkim>${r.dkim ?? ''}` +
    `<spf><domain>example.com</domain><result>${res}</result></spf></auth_results></record>`
  );
}

/** The i-th address of 10.0.0.0/8. */
const V4 = (i: number) => `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`;

/** `n` failing DKIM results, each of a domain of its own. */
const DKIM_FAILS = (n: number) =>
  Array.from({ length: n }, (_, i) => `<dkim><domain>d${i}.example</domain><result>fail</result></dkim>`).join('');

/** A TLS report over 31 days of `n` policies, each of a domain of its own with `hosts` MX hosts. */
function manyPolicies(n: number, hosts: number, id = 'many'): string {
  return JSON.stringify({
    'organization-name': 'Reporter Inc',
    'date-range': { 'start-datetime': `${isoDay(BASE - 30 * DAY)}T00:00:00Z`, 'end-datetime': `${isoDay(BASE)}T23:59:59Z` },
    'contact-info': 'tlsrpt@reporter.example',
    'report-id': id,
    policies: Array.from({ length: n }, (_, p) => ({
      policy: {
        'policy-type': 'sts',
        'policy-string': ['version: STSv1', 'mode: enforce'],
        'policy-domain': `d${p}.example`,
        'mx-host': Array.from({ length: hosts }, (_, i) => `mx${i}.d${p}.example`),
      },
      summary: { 'total-successful-session-count': 10, 'total-failure-session-count': 1 },
    })),
  });
}

function dmarcXml(o: {
  id?: string;
  org?: string;
  begin?: string | number;
  end?: string | number;
  records?: Rec[];
  body?: string;
  head?: string;
}): string {
  const records = o.body ?? (o.records ?? [{ ip: '192.0.2.1', count: 10 }]).map(recordXml).join('');
  return (
    `<?xml version="1.0" encoding="UTF-8"?>\n${o.head ?? ''}<feedback><report_metadata><org_name>${o.org ?? 'Reporter Inc'}</org_name>` +
    `<email>noreply@reporter.example</email><report_id>${o.id ?? 'r1'}</report_id><date_range><begin>${o.begin ?? BASE}</begin>` +
    `<end>${o.end ?? BASE + DAY - 1}</end></date_range></report_metadata><policy_published><domain>example.com</domain>` +
    `<adkim>r</adkim><aspf>r</aspf><p>none</p><sp>none</sp><pct>100</pct></policy_published>${records}</feedback>\n`
  );
}

function tlsJson(
  o: { id?: string; start?: string; end?: string; successful?: unknown; failed?: unknown; sessions?: unknown; text?: string } = {},
): string {
  return JSON.stringify({
    'organization-name': 'Reporter Inc',
    'date-range': { 'start-datetime': o.start ?? `${isoDay(BASE)}T00:00:00Z`, 'end-datetime': o.end ?? `${isoDay(BASE)}T23:59:59Z` },
    'contact-info': 'tlsrpt@reporter.example',
    'report-id': o.id ?? 't1',
    policies: [
      {
        policy: {
          'policy-type': 'sts',
          'policy-string': ['version: STSv1', `mode: enforce${o.text ?? ''}`],
          'policy-domain': 'example.com',
          'mx-host': [`mx${o.text ?? ''}.example.com`],
        },
        summary: { 'total-successful-session-count': o.successful ?? 100, 'total-failure-session-count': o.failed ?? 1 },
        'failure-details': [
          {
            'result-type': 'certificate-expired',
            'sending-mta-ip': '192.0.2.1',
            'receiving-mx-hostname': `mx${o.text ?? ''}.example.com`,
            'failed-session-count': o.sessions ?? 1,
            'additional-information': `see${o.text ?? ''}`,
          },
        ],
      },
    ],
  });
}

/** A JSON number as written, where JSON.stringify would not write it so (1e30, 29 digits). */
const rawNumber = (json: string, marker: number, raw: string) => json.replace(String(marker), raw);

function mail(parts: { type: string; name: string; data: Buffer }[]): Buffer {
  const b = 'b0undary';
  let s = `From: noreply@reporter.example\r\nTo: dmarc@example.com\r\nSubject: Report Domain: example.com\r\nMessage-ID: <${Math.random().toString(36).slice(2)}@reporter.example>\r\nDate: ${new Date(BASE * 1000).toUTCString()}\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="${b}"\r\n\r\n--${b}\r\nContent-Type: text/plain\r\n\r\nThis is an aggregate report.\r\n`;
  for (const p of parts) {
    const b64 = p.data.toString('base64').replace(/.{76}/g, '$&\r\n');
    s += `--${b}\r\nContent-Type: ${p.type}; name="${p.name}"\r\nContent-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename="${p.name}"\r\n\r\n${b64}\r\n`;
  }
  return Buffer.from(`${s}--${b}--\r\n`);
}

function reportMail(id: string, records = 1): Buffer {
  const xml = dmarcXml({ id, records: Array.from({ length: records }, (_, i) => ({ ip: `192.0.2.${(i % 250) + 1}`, count: 3 })) });
  return mail([{ type: 'application/zip', name: `${id}.zip`, data: Buffer.from(zipSync({ [`${id}.xml`]: Buffer.from(xml) })) }]);
}

function nestedZip(levels: number, width: number): Buffer {
  let inner: Uint8Array = Buffer.from(dmarcXml({ id: 'nested' }));
  let name = 'report.xml';
  for (let l = 0; l < levels; l++) {
    const files: Record<string, Uint8Array> = {};
    for (let i = 0; i < width; i++) files[`${i}-${name}`] = inner;
    inner = zipSync(files, { level: 9 });
    name = `level${l + 1}.zip`;
  }
  return Buffer.from(inner);
}

/** 100 MiB of XML whitespace after an opening tag: compresses about 1000:1. */
const bombBody = () => Buffer.concat([Buffer.from('<?xml version="1.0"?>\n<feedback>'), Buffer.alloc(100 * 1024 * 1024, 0x20)]);

const LOLS =
  '<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">' +
  Array.from({ length: 8 }, (_, i) => `<!ENTITY lol${i + 2} "${`&lol${i + 1};`.repeat(10)}">`).join('') +
  ']>';

interface IngestCase {
  name: string;
  file: string;
  make: () => Buffer | string;
  /** Bad when this returns a reason (on top of the checks made on every database). */
  check?: (db: Database.Database) => string | null;
}

/** For a TLS report whose only policy states an impossible count: any stored policy is that one. */
function tlsStored(db: Database.Database): string | null {
  const row = db.prepare('SELECT successful, failed FROM tls_policies').get() as { successful: number; failed: number } | undefined;
  return row ? `the policy with an impossible count was stored (as ${row.successful} successful, ${row.failed} failed)` : null;
}

const N = (n: number) => n.toLocaleString('en-US');

const ingestCases: IngestCase[] = [
  { name: 'dmarc date range 0..2^53-1', file: 'r.xml', make: () => dmarcXml({ begin: 0, end: '9007199254740991' }) },
  { name: 'dmarc date range 0..2100', file: 'r.xml', make: () => dmarcXml({ begin: 0, end: Date.UTC(2100, 0, 1) / 1000 }) },
  { name: 'dmarc begin after end', file: 'r.xml', make: () => dmarcXml({ begin: BASE + DAY, end: BASE }) },
  { name: 'dmarc year 10000', file: 'r.xml', make: () => dmarcXml({ begin: 253402300800, end: 253402300800 + DAY }) },
  { name: 'dmarc year 1990', file: 'r.xml', make: () => dmarcXml({ begin: 631152000, end: 631152000 + DAY }) },
  { name: 'dmarc 400-day range', file: 'r.xml', make: () => dmarcXml({ begin: BASE - 400 * DAY, end: BASE }) },
  { name: 'dmarc negative begin', file: 'r.xml', make: () => dmarcXml({ begin: -86400, end: BASE }) },
  { name: 'dmarc date not a number', file: 'r.xml', make: () => dmarcXml({ begin: 'yesterday', end: BASE }) },
  {
    name: 'tls 0001-01-01..9999-12-31',
    file: 't.json',
    make: () => tlsJson({ start: '0001-01-01T00:00:00Z', end: '9999-12-31T23:59:59Z' }),
  },
  {
    name: 'tls start after end',
    file: 't.json',
    make: () => tlsJson({ start: `${isoDay(BASE + DAY)}T00:00:00Z`, end: `${isoDay(BASE)}T00:00:00Z` }),
  },
  { name: 'tls year 10000', file: 't.json', make: () => tlsJson({ start: '+010000-01-01T00:00:00Z', end: '+010000-01-02T00:00:00Z' }) },
  {
    name: 'dmarc count negative',
    file: 'r.xml',
    make: () =>
      dmarcXml({
        records: [
          { ip: '192.0.2.1', count: 5 },
          { ip: POISON_IP, count: -5 },
        ],
      }),
  },
  {
    name: 'dmarc count 1e30',
    file: 'r.xml',
    make: () =>
      dmarcXml({
        records: [
          { ip: '192.0.2.1', count: 5 },
          { ip: POISON_IP, count: '1e30' },
        ],
      }),
  },
  {
    name: 'dmarc count of 29 digits',
    file: 'r.xml',
    make: () =>
      dmarcXml({
        records: [
          { ip: '192.0.2.1', count: 5 },
          { ip: POISON_IP, count: '12345678901234567890123456789' },
        ],
      }),
  },
  {
    name: 'dmarc count 1.5',
    file: 'r.xml',
    make: () =>
      dmarcXml({
        records: [
          { ip: '192.0.2.1', count: 5 },
          { ip: POISON_IP, count: '1.5' },
        ],
      }),
  },
  {
    name: 'dmarc counts summing past 2^53',
    file: 'r.xml',
    make: () =>
      dmarcXml({
        records: [
          { ip: POISON_IP, count: 2 ** 52 },
          { ip: '192.0.2.2', count: 2 ** 52 },
          { ip: '192.0.2.3', count: 2 ** 52 },
        ],
      }),
    check: (db) => (num(db, 'SELECT SUM(count) FROM dmarc_records') > 2 ** 53 ? 'a sum past 2^53 was stored' : null),
  },
  { name: 'tls count 1e30', file: 't.json', make: () => rawNumber(tlsJson({ successful: 424242 }), 424242, '1e30') },
  { name: 'tls count negative', file: 't.json', make: () => tlsJson({ failed: -7 }), check: tlsStored },
  {
    name: 'tls count of 29 digits',
    file: 't.json',
    make: () => rawNumber(tlsJson({ sessions: 424242 }), 424242, '12345678901234567890123456789'),
  },
  { name: 'tls count as a string "1e30"', file: 't.json', make: () => tlsJson({ successful: '1e30' }), check: tlsStored },
  {
    name: 'source_ip <script>',
    file: 'r.xml',
    make: () => dmarcXml({ records: [{ ip: '&lt;script&gt;alert(1)&lt;/script&gt;', count: 5 }] }),
  },
  { name: 'source_ip 999.1.1.1', file: 'r.xml', make: () => dmarcXml({ records: [{ ip: '999.1.1.1', count: 5 }] }) },
  { name: 'source_ip of 60,000 characters', file: 'r.xml', make: () => dmarcXml({ records: [{ ip: 'a'.repeat(60_000), count: 5 }] }) },
  { name: 'source_ip empty', file: 'r.xml', make: () => dmarcXml({ records: [{ ip: '', count: 5 }] }) },
  { name: 'source_ip 2001:db8::g', file: 'r.xml', make: () => dmarcXml({ records: [{ ip: '2001:db8::g', count: 5 }] }) },
  { name: `${N(1000)} empty <record/>`, file: 'r.xml', make: () => dmarcXml({ body: '<record/>'.repeat(1000) }) },
  { name: 'NUL bytes in TLS strings', file: 't.json', make: () => tlsJson({ text: '\u0000evil' }) },
  { name: 'NUL character reference in XML', file: 'r.xml', make: () => dmarcXml({ org: 'Reporter&#0;Inc' }) },
  {
    name: 'nested zip 4 levels x 100 entries',
    file: 'nested.zip',
    make: () => nestedZip(4, 100),
  },
  {
    name: `mail with ${N(10_000)} report parts`,
    file: 'many.eml',
    make: () =>
      mail(
        Array.from({ length: 10_000 }, (_, i) => ({
          type: 'application/gzip',
          name: `p${i}.xml.gz`,
          data: zlib.gzipSync(dmarcXml({ id: `part-${i}` })),
        })),
      ),
    check: (db) =>
      num(db, 'SELECT COUNT(*) FROM reports') >= 1000 ? `one mail became ${N(num(db, 'SELECT COUNT(*) FROM reports'))} reports` : null,
  },
  { name: 'zip bomb (100 MiB in one entry)', file: 'bomb.zip', make: () => Buffer.from(zipSync({ 'r.xml': bombBody() }, { level: 9 })) },
  { name: 'gzip bomb (100 MiB)', file: 'bomb.xml.gz', make: () => zlib.gzipSync(bombBody(), { level: 9 }) },
  {
    name: 'zip of 1,000 entries',
    file: 'wide.zip',
    make: () =>
      Buffer.from(
        zipSync(Object.fromEntries(Array.from({ length: 1000 }, (_, i) => [`r${i}.xml`, Buffer.from(dmarcXml({ id: `w${i}` }))]))),
      ),
  },
  {
    name: 'XXE (external entity)',
    file: 'r.xml',
    make: () => dmarcXml({ head: '<!DOCTYPE feedback [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>\n', org: '&xxe;' }),
  },
  { name: 'billion laughs', file: 'r.xml', make: () => dmarcXml({ head: `${LOLS}\n`, org: '&lol9;' }) },
  {
    name: 'truncated gzip',
    file: 'r.xml.gz',
    make: () =>
      zlib.gzipSync(dmarcXml({ records: Array.from({ length: 50 }, (_, i) => ({ ip: `192.0.2.${i + 1}`, count: 1 })) })).subarray(0, 300),
  },
  {
    name: 'truncated zip',
    file: 'r.zip',
    make: () =>
      Buffer.from(
        zipSync({
          'r.xml': Buffer.from(dmarcXml({ records: Array.from({ length: 50 }, (_, i) => ({ ip: `192.0.2.${i + 1}`, count: 1 })) })),
        }),
      ).subarray(0, 400),
  },
  {
    name: 'an .html file',
    file: 'page.html',
    make: () => '<!DOCTYPE html><html><head><title>x</title></head><body><p>not a report</p></body></html>',
  },
  { name: 'a .json file that is not a report', file: 'data.json', make: () => JSON.stringify({ hello: 'world', list: [1, 2, 3] }) },
  { name: 'a .pdf file', file: 'doc.pdf', make: () => '%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n' },
  {
    name: 'invalid UTF-8 in XML',
    file: 'r.xml',
    make: () =>
      Buffer.concat([
        Buffer.from(dmarcXml({ org: 'Reporter@@@' }).split('@@@')[0]!),
        Buffer.from([0xff, 0xfe, 0xc3]),
        Buffer.from(dmarcXml({ org: 'Reporter@@@' }).split('@@@')[1]!),
      ]),
  },
  { name: 'XML nested 100,000 deep', file: 'deep.xml', make: () => dmarcXml({ body: '<x>'.repeat(100_000) + '</x>'.repeat(100_000) }) },
  { name: 'JSON nested 100,000 deep', file: 'deep.json', make: () => `{"organization-name":${'['.repeat(100_000)}${']'.repeat(100_000)}}` },
  { name: 'XML text of 20 MB in org_name', file: 'big.xml', make: () => dmarcXml({ org: 'A'.repeat(20 * 1024 * 1024) }) },
  // What one report adds to the rollups: every record and DKIM signature a row per day it covers.
  {
    name: 'one record of 400,000 DKIM results over 31 days (1 MB gzip)',
    file: 'r.xml.gz',
    make: () => zlib.gzipSync(dmarcXml({ begin: BASE - 30 * DAY, records: [{ ip: '192.0.2.1', count: 1, dkim: DKIM_FAILS(400_000) }] })),
  },
  {
    name: '7,000 records of 99 DKIM signatures over 31 days',
    file: 'r.xml.gz',
    make: () =>
      zlib.gzipSync(
        dmarcXml({
          begin: BASE - 30 * DAY,
          records: Array.from({ length: 7000 }, (_, i) => ({ ip: V4(i), count: 1, dkim: DKIM_FAILS(98) })),
        }),
      ),
  },
  {
    // Every source with enough failing mail for new_failing_source to judge it: the alert
    // evaluation after it held each one (1,282 MiB on ef0dcd4 for 360,000 in three reports).
    name: 'zip of 3 reports of 120,000 new sources failing with 50 messages each',
    file: 'r.zip',
    make: () =>
      Buffer.from(
        zipSync(
          Object.fromEntries(
            Array.from({ length: 3 }, (_, n) => [
              `r${n}.xml`,
              Buffer.from(
                dmarcXml({
                  id: `flood${n}`,
                  records: Array.from({ length: 120_000 }, (_, i) => ({ ip: V4(n * 120_000 + i), count: 50, pass: false })),
                }),
              ),
            ]),
          ),
        ),
      ),
  },
  {
    name: '200,000 records over 31 days',
    file: 'r.xml',
    make: () => dmarcXml({ begin: BASE - 30 * DAY, records: Array.from({ length: 200_000 }, (_, i) => ({ ip: V4(i), count: 1 })) }),
  },
  {
    name: 'zip of 20 reports of 14,000 records over 31 days',
    file: 'r.zip',
    make: () =>
      Buffer.from(
        zipSync(
          Object.fromEntries(
            Array.from({ length: 20 }, (_, n) => [
              `r${n}.xml`,
              Buffer.from(
                dmarcXml({
                  id: `m${n}`,
                  begin: BASE - 30 * DAY,
                  records: Array.from({ length: 14_000 }, (_, i) => ({ ip: V4(n * 14_000 + i), count: 1 })),
                }),
              ),
            ]),
          ),
        ),
      ),
  },
  {
    // Each report within its own budget (some 97,000 rollup rows); 100 of them in one mail.
    name: 'zip of 100 reports of 3,125 records over 31 days',
    file: 'r.zip',
    make: () =>
      Buffer.from(
        zipSync(
          Object.fromEntries(
            Array.from({ length: 100 }, (_, n) => [
              `r${n}.xml`,
              Buffer.from(
                dmarcXml({
                  id: `s${n}`,
                  begin: BASE - 30 * DAY,
                  records: Array.from({ length: 3125 }, (_, i) => ({ ip: V4(n * 3125 + i), count: 1 })),
                }),
              ),
            ]),
          ),
        ),
      ),
  },
  {
    name: 'zip of 100 TLS reports of 100 policies of 32 MX hosts over 31 days',
    file: 't.zip',
    make: () =>
      Buffer.from(
        zipSync(Object.fromEntries(Array.from({ length: 100 }, (_, n) => [`t${n}.json`, Buffer.from(manyPolicies(100, 32, `t${n}`))]))),
      ),
  },
  {
    name: 'TLS report of 3,000 policies of 32 MX hosts over 31 days',
    file: 't.json.gz',
    make: () => zlib.gzipSync(manyPolicies(3000, 32)),
  },
  {
    name: '1,800,000 <error> elements (13 MB gzip)',
    file: 'r.xml.gz',
    make: () =>
      zlib.gzipSync(
        dmarcXml({
          org: `Reporter Inc</org_name>${Array.from({ length: 1_800_000 }, (_, i) => `<error>${(i * 2654435761).toString(36)}</error>`).join('')}<org_name>x`,
        }),
      ),
  },
];

// ---------------------------------------------------------------------------------------------
// Cases and outcomes

interface Outcome {
  bad: string | null;
  detail: string;
}

type Group = 'ingest' | 'web' | 'fault';
interface Case {
  group: Group;
  name: string;
  run: (root: string, dir: string) => Promise<Outcome>;
}

const cases: Case[] = [];

for (const c of ingestCases) {
  cases.push({
    group: 'ingest',
    name: c.name,
    run: async (root, dir) => {
      const input = path.join(dir, c.file);
      fs.writeFileSync(input, c.make());
      const db = path.join(dir, 'db.sqlite');
      const r = await cli(root, ['ingest', '--db', db, '--json', input], { cwd: dir });
      const s = summaryOf(r);
      const detail = `${outcomeText(s, r)} (${r.ms} ms, ${Math.round(r.peakMiB)} MiB)`;
      const crash = crashed(r);
      if (crash) return { bad: crash, detail };
      if (!s) return { bad: `no summary: ${firstLine(r.stderr)}`, detail };
      const problems: string[] = [];
      const stored = dbCheck(db, (d) => implausible(d) ?? c.check?.(d) ?? null);
      if (stored) problems.push(stored);
      // Again: nothing counted twice.
      const before = reportCount(db);
      const again = await cli(root, ['ingest', '--db', db, '--json', input], { cwd: dir });
      if (crashed(again)) problems.push(`second ingest: ${crashed(again)}`);
      else if (reportCount(db) !== before) problems.push('the second ingest stored it again');
      // Whatever was stored must not blow up the analysis or the report.
      for (const args of [
        ['alerts', '--db', db, '--at', AT, '--dry-run', '--json'],
        ['report', '--db', db, '--json'],
      ]) {
        if (!fs.existsSync(db)) break;
        const a = await cli(root, args, { cwd: dir });
        const bad = crashed(a);
        if (bad) problems.push(`${args[0]} after it: ${bad} (${Math.round(a.peakMiB)} MiB)`);
      }
      return { bad: problems.length ? problems.join('; ') : null, detail };
    },
  });
}

// ---------------------------------------------------------------------------------------------
// The web port of `ruawatch run`

interface Server {
  port: number;
  proc: ReturnType<typeof startCli>;
  exited: boolean;
  stderr: string;
}

async function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

interface Answer {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
  ms: number;
}

function get(port: number, target: string, timeoutMs = 5000, headers: Record<string, string> = {}): Promise<Answer | null> {
  const t0 = Date.now();
  return new Promise((resolve) => {
    const req = http.get({ host: '127.0.0.1', port, path: target, headers, timeout: timeoutMs, agent: false }, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body, ms: Date.now() - t0 }));
      res.on('error', () => resolve(null));
    });
    req.on('timeout', () => {
      req.destroy();
      resolve(null);
    });
    req.on('error', () => resolve(null));
  });
}

/** Sends raw bytes, returns the status line of the answer (or what happened). */
function raw(port: number, bytes: string | Buffer, timeoutMs = 5000): Promise<string> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    let got = '';
    const t = setTimeout(() => {
      s.destroy();
      resolve(got ? got.split('\r\n')[0]! : 'no answer');
    }, timeoutMs);
    s.on('connect', () => s.write(bytes));
    s.on('data', (d: Buffer) => (got += d.toString('latin1')));
    s.on('error', (e) => {
      clearTimeout(t);
      resolve(got ? got.split('\r\n')[0]! : `connection ${(e as NodeJS.ErrnoException).code ?? e.message}`);
    });
    s.on('close', () => {
      clearTimeout(t);
      resolve(got ? got.split('\r\n')[0]! : 'closed without an answer');
    });
  });
}

async function startRun(root: string, dir: string, extra = ''): Promise<Server> {
  const port = await freePort();
  const cfg = path.join(dir, 'ruawatch.toml');
  fs.writeFileSync(
    cfg,
    `[database]\npath = "db.sqlite"\n\n[schedule]\npoll = "0 0 1 1 *"\n\n[web]\nlisten = "127.0.0.1:${port}"\n${extra}`,
  );
  const proc = startCli(root, ['run', '--config', cfg], { cwd: dir });
  const server: Server = { port, proc, exited: false, stderr: '' };
  proc.stdout.resume();
  proc.stderr.on('data', (d: Buffer) => {
    if (server.stderr.length < 65536) server.stderr += d.toString();
  });
  proc.on('exit', () => (server.exited = true));
  const until = Date.now() + 20_000;
  while (Date.now() < until && !server.exited) {
    if (await get(port, '/healthz', 1000)) return server;
    await sleep(100);
  }
  throw new Error(`ruawatch run did not answer on ${port}: ${server.stderr.slice(0, 300)}`);
}

async function stopRun(s: Server): Promise<void> {
  if (s.exited) return;
  const done = new Promise((r) => s.proc.once('exit', r));
  s.proc.kill('SIGTERM');
  await Promise.race([done, sleep(10_000)]);
  if (!s.exited) s.proc.kill('SIGKILL');
}

/** After a web case: alive, /healthz answers in 5 s. */
async function alive(s: Server): Promise<string | null> {
  await sleep(200);
  if (s.exited) return `crash: the process ended (${firstLine(s.stderr)})`;
  const h = await get(s.port, '/healthz', 5000);
  if (!h) return '/healthz did not answer within 5 s';
  if (s.exited) return `crash: the process ended (${firstLine(s.stderr)})`;
  return null;
}

function webCase(name: string, fn: (s: Server) => Promise<{ bad?: string | null; detail: string }>, extra = ''): void {
  cases.push({
    group: 'web',
    name,
    run: async (root, dir) => {
      const s = await startRun(root, dir, extra);
      try {
        const r = await fn(s);
        const dead = await alive(s);
        return { bad: r.bad ?? dead, detail: r.detail };
      } finally {
        await stopRun(s);
      }
    },
  });
}

for (const target of ['//[', 'http://%/', 'http://a:99999/', '//%zz/', 'http://[::1/', '/%', '*']) {
  webCase(`request target ${target}`, async (s) => ({ detail: await raw(s.port, `GET ${target} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`) }));
}
webCase('request line of binary garbage', async (s) => ({ detail: await raw(s.port, Buffer.from([0, 1, 2, 0xff, 13, 10, 13, 10])) }));
webCase('path traversal /../../etc/passwd', async (s) => {
  const a = await raw(s.port, 'GET /../../../../etc/passwd HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n');
  const b = await get(s.port, '/static/..%2f..%2f..%2f..%2fetc%2fpasswd');
  return { bad: b && /root:/.test(b.body) ? 'served /etc/passwd' : null, detail: `${a}; encoded: ${b?.status ?? 'no answer'}` };
});
webCase('a 1 MiB header', async (s) => ({
  detail: await raw(s.port, `GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ${'a'.repeat(1024 * 1024)}\r\n\r\n`),
}));
webCase('slowloris: 50 partial requests held open 10 s', async (s) => {
  const socks = Array.from({ length: 50 }, () => {
    const c = net.connect(s.port, '127.0.0.1');
    c.on('error', () => undefined);
    c.write('GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n');
    return c;
  });
  let worst = 0;
  let missed = 0;
  for (let i = 0; i < 10; i++) {
    for (const c of socks) if (!c.destroyed) c.write(`X-${i}: a\r\n`);
    const h = await get(s.port, '/healthz', 3000);
    if (!h) missed++;
    else worst = Math.max(worst, h.ms);
    await sleep(1000);
  }
  const open = socks.filter((c) => !c.destroyed).length;
  for (const c of socks) c.destroy();
  return {
    bad: missed ? `/healthz missed ${missed} of 10 times` : null,
    detail: `/healthz slowest ${worst} ms; ${open} of 50 partial requests still open`,
  };
});
webCase('20 concurrent /api/overview', async (s) => {
  const calls = Array.from({ length: 20 }, () => get(s.port, '/api/overview', 20_000));
  const h = await get(s.port, '/healthz', 10_000);
  const all = await Promise.all(calls);
  const codes = [...new Set(all.map((a) => a?.status ?? 'none'))].join(',');
  return {
    bad: !h || h.ms > 2000 ? `/healthz took ${h ? h.ms : '>10000'} ms meanwhile` : null,
    detail: `statuses ${codes}; /healthz ${h?.ms} ms meanwhile`,
  };
});
webCase('security headers on every response', async (s) => {
  const missing: string[] = [];
  for (const p of ['/', '/healthz', '/api/overview', '/no-such-page']) {
    const a = await get(s.port, p);
    if (!a) {
      missing.push(`${p}: no answer`);
      continue;
    }
    const h = a.headers;
    const need: [string, boolean][] = [
      ['nosniff', h['x-content-type-options'] === 'nosniff'],
      ['X-Frame-Options', /deny/i.test(String(h['x-frame-options'] ?? ''))],
      ['frame-ancestors', /frame-ancestors 'none'/.test(String(h['content-security-policy'] ?? ''))],
      ['Referrer-Policy', h['referrer-policy'] !== undefined],
    ];
    for (const [n, ok] of need) if (!ok) missing.push(`${p} ${n}`);
  }
  return {
    bad: missing.length ? `missing: ${missing.slice(0, 4).join(', ')}${missing.length > 4 ? ` (+${missing.length - 4})` : ''}` : null,
    detail: missing.length ? `${missing.length} missing` : 'all present',
  };
});
// A mailbox that cannot be reached (a closed port): its failure shows on /healthz.
const CLOSED_PORT = 9;
webCase(
  '/healthz without auth shows no mailbox user or host',
  async (s) => {
    await sleep(3000);
    const a = await get(s.port, '/healthz');
    return {
      bad: a && /secret-user|127\.0\.0\.1|ECONNREFUSED/.test(a.body) ? `leaks: ${a.body.slice(0, 100)}` : null,
      detail: `${a?.status}: ${a?.body.slice(0, 90).replace(/\s+/g, ' ')}`,
    };
  },
  `\n[[mailbox]]\nname = "dmarc"\nhost = "127.0.0.1"\nport = ${CLOSED_PORT}\nsecurity = "none"\nuser = "secret-user@example.com"\npassword = "x"\n`,
);

// ---------------------------------------------------------------------------------------------
// Faults

/** `count` report files of `records` records each, distinct. */
function corpus(dir: string, count: number, records: number): string {
  const d = path.join(dir, 'corpus');
  fs.mkdirSync(d, { recursive: true });
  for (let i = 0; i < count; i++) {
    const recs = Array.from({ length: records }, (_, j) => ({ ip: `10.${i % 250}.${Math.floor(j / 250)}.${(j % 250) + 1}`, count: 2 }));
    fs.writeFileSync(path.join(d, `r${String(i).padStart(4, '0')}.xml.gz`), zlib.gzipSync(dmarcXml({ id: `c-${i}`, records: recs })));
  }
  return d;
}

function fault(name: string, run: Case['run']): void {
  cases.push({ group: 'fault', name, run });
}

/** The stored total is what a corpus holds: every report once, every record once. */
function complete(db: string, reports: number, records: number): string | null {
  return dbCheck(db, (d) => {
    const r = num(d, 'SELECT COUNT(*) FROM reports');
    const rec = num(d, 'SELECT COUNT(*) FROM dmarc_records');
    if (r < reports || rec < records) return `loss: ${r} of ${reports} reports, ${rec} of ${records} records`;
    if (r > reports || rec > records) return `duplicate: ${r} reports for ${reports}, ${rec} records for ${records}`;
    return null;
  });
}

/** Reports in a database another process is writing, or -1 while it cannot be read. */
function liveCount(file: string): number {
  let db: Database.Database | null = null;
  try {
    db = new Database(file, { readonly: true, fileMustExist: true });
    return num(db, 'SELECT COUNT(*) FROM reports');
  } catch {
    return -1;
  } finally {
    db?.close();
  }
}

// Killed before anything is stored, and after 1, 50, 150 and 250 of 300 reports.
for (const killAt of [0, 1, 50, 150, 250]) {
  fault(`kill -9 of ingest ${killAt ? `after ${killAt} of 300 reports` : 'at start'}, then ingest again`, async (root, dir) => {
    const src = corpus(dir, 300, 40);
    const db = path.join(dir, 'db.sqlite');
    const p = startCli(root, ['ingest', '--db', db, '--json', src], { cwd: dir });
    const first = watch(p, Date.now(), DEADLINE_MS);
    let ended = false;
    void first.then(() => (ended = true));
    if (killAt === 0) await sleep(150);
    else while (!ended && liveCount(db) < killAt) await sleep(10);
    p.kill('SIGKILL');
    const r0 = await first;
    const mid = dbCheck(db, (d) => `${num(d, 'SELECT COUNT(*) FROM reports')}`) ?? '0';
    const r = await cli(root, ['ingest', '--db', db, '--json', src], { cwd: dir });
    const bad = crashed(r) ?? complete(db, 300, 300 * 40);
    return {
      bad,
      detail: `${r0.signal === 'SIGKILL' ? 'killed' : 'ended before the kill'} with ${mid} reports stored; then ${outcomeText(summaryOf(r), r)}`,
    };
  });
}

function mount(dir: string, opts: string): boolean {
  fs.mkdirSync(dir, { recursive: true });
  return spawnOk('mount', ['-t', 'tmpfs', '-o', opts, 'tmpfs', dir]);
}

function spawnOk(cmd: string, args: string[]): boolean {
  const r = spawnSyncQuiet(cmd, args);
  return r === 0;
}

const spawnSyncQuiet = (cmd: string, args: string[]) => spawnSync(cmd, args, { stdio: 'ignore' }).status;

/** A clear error: the process ended by itself, exit 1, and says what (not a trace). */
function clearError(r: Run): string | null {
  return crashed(r) ?? (r.code === 0 ? null : /\S/.test(r.stderr + r.stdout) ? null : 'failed without saying why');
}

fault('read-only database (read-only file system)', async (root, dir) => {
  const mnt = path.join(dir, 'mnt');
  if (!mount(mnt, 'size=32m')) return { bad: null, detail: 'SKIPPED: cannot mount a tmpfs (needs root)' };
  try {
    const db = path.join(mnt, 'db.sqlite');
    const src = corpus(dir, 2, 5);
    const one = path.join(src, 'r0000.xml.gz');
    await cli(root, ['ingest', '--db', db, '--json', one], { cwd: dir });
    spawnSync('mount', ['-o', 'remount,ro', mnt]);
    const r = await cli(root, ['ingest', '--db', db, '--json', src], { cwd: dir, deadlineMs: 30_000 });
    spawnSync('mount', ['-o', 'remount,rw', mnt]);
    const bad = clearError(r) ?? (r.code === 0 ? 'exit 0 on a read-only database' : null) ?? complete(db, 1, 5);
    const again = await cli(root, ['ingest', '--db', db, '--json', src], { cwd: dir });
    return {
      bad: bad ?? crashed(again) ?? complete(db, 2, 10),
      detail: `exit ${r.code} in ${r.ms} ms: ${firstLine(r.stderr) || outcomeText(summaryOf(r), r)}`,
    };
  } finally {
    spawnSync('umount', ['-l', mnt]);
  }
});

fault('locked database (a write transaction held 8 s)', async (root, dir) => {
  const db = path.join(dir, 'db.sqlite');
  const src = corpus(dir, 20, 10);
  await cli(root, ['ingest', '--db', db, '--json', path.join(src, 'r0000.xml.gz')], { cwd: dir });
  const holder = spawn(
    process.execPath,
    [
      '-e',
      `const D=require(${JSON.stringify(requireCjs.resolve('better-sqlite3'))});const d=new D(${JSON.stringify(db)});d.pragma('busy_timeout=0');d.exec('BEGIN IMMEDIATE');d.exec("UPDATE reports SET input=input");process.stdout.write('held\\n');setTimeout(()=>{d.exec('ROLLBACK');d.close()},8000);`,
    ],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  await new Promise((r) => holder.stdout.once('data', r));
  const r = await cli(root, ['ingest', '--db', db, '--json', src], { cwd: dir, deadlineMs: 40_000 });
  await new Promise((res) => (holder.exitCode !== null ? res(null) : holder.once('exit', res)));
  const s = summaryOf(r);
  const claimed = s ? s.reports.dmarc + s.duplicates : 0;
  let bad = clearError(r);
  if (!bad && s && claimed > 0)
    bad = dbCheck(db, (d) => (num(d, 'SELECT COUNT(*) FROM reports') < claimed ? 'loss: reported stored but not in the database' : null));
  const again = await cli(root, ['ingest', '--db', db, '--json', src], { cwd: dir });
  return {
    bad: bad ?? crashed(again) ?? complete(db, 20, 200),
    detail: `exit ${r.code} in ${r.ms} ms: ${r.code === 0 ? outcomeText(s, r) : firstLine(r.stderr) || outcomeText(s, r)}`,
  };
});

fault('full disk (a 1 MiB tmpfs) during ingest', async (root, dir) => {
  const mnt = path.join(dir, 'mnt');
  if (!mount(mnt, 'size=1m')) return { bad: null, detail: 'SKIPPED: cannot mount a tmpfs (needs root)' };
  try {
    const db = path.join(mnt, 'db.sqlite');
    const src = corpus(dir, 100, 40);
    const r = await cli(root, ['ingest', '--db', db, '--json', src], { cwd: dir });
    const s = summaryOf(r);
    const text = `${r.stderr}\n${r.stdout}`;
    let bad = clearError(r);
    if (!bad && r.code === 0) bad = 'exit 0 on a full disk';
    if (!bad && /cannot rollback/i.test(text)) bad = `misleading error: ${firstLine(text)}`;
    if (!bad && !/full|SQLITE_FULL|ENOSPC/i.test(text)) bad = `the error does not say the disk is full: ${firstLine(text)}`;
    const stored = s ? s.reports.dmarc : 0;
    if (!bad)
      bad = dbCheck(db, (d) =>
        num(d, 'SELECT COUNT(*) FROM reports') < stored ? `loss: ${stored} reported stored, fewer in the database` : null,
      );
    // Move to a disk with room and finish: every report once.
    const big = path.join(dir, 'big');
    fs.mkdirSync(big);
    for (const f of fs.readdirSync(mnt)) fs.copyFileSync(path.join(mnt, f), path.join(big, f));
    const db2 = path.join(big, 'db.sqlite');
    const again = await cli(root, ['ingest', '--db', db2, '--json', src], { cwd: dir });
    return { bad: bad ?? crashed(again) ?? complete(db2, 100, 4000), detail: `exit ${r.code}: ${firstLine(text)}` };
  } finally {
    spawnSync('umount', ['-l', mnt]);
  }
});

let dovecot: Dovecot | null = null;
let dovecotUsers = 0;
async function mailbox(): Promise<{ d: Dovecot; user: string } | null> {
  if (!findDovecot()) return null;
  dovecot ??= await startDovecot(Array.from({ length: 20 }, (_, i) => `box${i}`));
  return { d: dovecot, user: `box${dovecotUsers++}` };
}

function fetchConfig(dir: string, d: Dovecot, user: string, extra = ''): string {
  const cfg = path.join(dir, 'fetch.toml');
  fs.writeFileSync(
    cfg,
    `[database]\npath = "db.sqlite"\n\n[[mailbox]]\nname = "dmarc"\nhost = "127.0.0.1"\nport = ${d.port}\nsecurity = "none"\nuser = "${user}"\npassword = "${PASSWORD}"\n${extra}`,
  );
  return cfg;
}

/** Whether this build knows a config key (its schema names it). */
const knows = (root: string, key: string) => fs.readFileSync(path.join(root, 'dist/src/config/schema.js'), 'utf8').includes(key);

fault('two fetch at once on one mailbox (300 mails, database migrated)', async (root, dir) => {
  const m = await mailbox();
  if (!m) return { bad: null, detail: 'SKIPPED: dovecot is not installed' };
  for (let i = 0; i < 300; i++) await m.d.append(m.user, reportMail(`m-${i}`, 5));
  const cfg = fetchConfig(dir, m.d, m.user);
  // The database exists and is migrated first, as beside a running `ruawatch run`.
  fs.mkdirSync(path.join(dir, 'empty'));
  await cli(root, ['ingest', '--config', cfg, '--json', path.join(dir, 'empty')], { cwd: dir });
  const [a, b] = await Promise.all([
    cli(root, ['fetch', '--config', cfg, '--json'], { cwd: dir, deadlineMs: 120_000 }),
    cli(root, ['fetch', '--config', cfg, '--json'], { cwd: dir, deadlineMs: 120_000 }),
  ]);
  const bad = crashed(a) ?? crashed(b);
  // Whatever is left (a reader that stepped aside): one more pass.
  await cli(root, ['fetch', '--config', cfg, '--json'], { cwd: dir, deadlineMs: 120_000 });
  const processed = await m.d.count(m.user, 'Processed');
  const invalid = (await m.d.folders(m.user)).includes('Invalid') ? await m.d.count(m.user, 'Invalid') : 0;
  const inbox = await m.d.count(m.user, 'INBOX');
  const detail = `Processed ${processed}, Invalid ${invalid}, INBOX ${inbox}; ${outcomeText(summaryOf(a), a)} / ${outcomeText(summaryOf(b), b)}`;
  if (bad) return { bad, detail };
  if (processed > 300) return { bad: `duplicate: ${processed - 300} mails twice in Processed`, detail };
  if (invalid > 0) return { bad: `${invalid} good mails moved to Invalid`, detail };
  const failed = (summaryOf(a)?.failed.length ?? 0) + (summaryOf(b)?.failed.length ?? 0);
  if (failed > 0) return { bad: `${failed} good mail(s) reported failed`, detail };
  if (processed + inbox < 300) return { bad: 'loss: mails missing', detail };
  return { bad: complete(path.join(dir, 'db.sqlite'), 300, 1500), detail };
});

/** `fetch` into a database on a 1 MiB file system (full), or a read-only one. */
for (const mode of ['full', 'read-only'] as const) {
  fault(`${mode} database during fetch (60 mails)`, async (root, dir) => {
    const m = await mailbox();
    if (!m) return { bad: null, detail: 'SKIPPED: dovecot is not installed' };
    const mnt = path.join(dir, 'mnt');
    if (!mount(mnt, mode === 'full' ? 'size=1m' : 'size=32m')) return { bad: null, detail: 'SKIPPED: cannot mount a tmpfs (needs root)' };
    try {
      for (let i = 0; i < 60; i++) await m.d.append(m.user, reportMail(`d-${i}`, 60));
      const cfgFile = fetchConfig(dir, m.d, m.user);
      fs.writeFileSync(cfgFile, fs.readFileSync(cfgFile, 'utf8').replace('path = "db.sqlite"', `path = "${path.join(mnt, 'db.sqlite')}"`));
      if (mode === 'read-only') {
        await cli(root, ['report', '--config', cfgFile, '--json'], { cwd: dir });
        spawnSync('mount', ['-o', 'remount,ro', mnt]);
      }
      const r = await cli(root, ['fetch', '--config', cfgFile, '--json'], { cwd: dir, deadlineMs: 60_000 });
      if (mode === 'read-only') spawnSync('mount', ['-o', 'remount,rw', mnt]);
      const s = summaryOf(r);
      const text = `${r.stderr}\n${r.stdout}`;
      const processed = (await m.d.folders(m.user)).includes('Processed') ? await m.d.count(m.user, 'Processed') : 0;
      const invalid = (await m.d.folders(m.user)).includes('Invalid') ? await m.d.count(m.user, 'Invalid') : 0;
      const stored = fs.existsSync(path.join(mnt, 'db.sqlite')) ? Math.floor(reportCount(path.join(mnt, 'db.sqlite')) / 1e9) : 0;
      const problems: string[] = [];
      const c = clearError(r);
      if (c) problems.push(c);
      else if (r.code === 0) problems.push('exit 0');
      if (/connection lost|reconnect/i.test(text)) problems.push('a database error taken for an IMAP drop');
      if (/cannot rollback/i.test(text)) problems.push('"cannot rollback" instead of the database error');
      if (s && s.inputs > 60) problems.push(`${s.inputs} inputs counted for 60 mails`);
      if (processed > stored) problems.push(`loss: ${processed} mails in Processed, ${stored} reports stored`);
      if (invalid > 0) problems.push(`${invalid} good mails moved to Invalid`);
      const dbBad = dbCheck(path.join(mnt, 'db.sqlite'));
      if (dbBad) problems.push(dbBad);
      return {
        bad: problems.length ? problems.join('; ') : null,
        detail: `exit ${r.code} in ${r.ms} ms, ${s ? `${s.inputs} inputs, ` : ''}Processed ${processed}, Invalid ${invalid}, stored ${stored}: ${firstLine(s?.failed[0]?.error ?? text)}`,
      };
    } finally {
      spawnSync('umount', ['-l', mnt]);
    }
  });
}

fault('frozen IMAP server (SIGSTOP) during fetch', async (root, dir) => {
  const m = await mailbox();
  if (!m) return { bad: null, detail: 'SKIPPED: dovecot is not installed' };
  for (let i = 0; i < 20; i++) await m.d.append(m.user, reportMail(`f-${i}`, 5));
  // A build with an idle-read timeout and a poll deadline is given short ones; one without, its defaults.
  const extra = knows(root, 'poll_timeout_seconds') ? 'timeout_seconds = 3\n\n[schedule]\npoll_timeout_seconds = 10\n' : '';
  const cfg = fetchConfig(dir, m.d, m.user, extra);
  const p = startCli(root, ['fetch', '--config', cfg, '--json'], { cwd: dir });
  const run = watch(p, Date.now(), 60_000);
  await sleep(400);
  m.d.freeze();
  let r: Run;
  try {
    r = await run;
  } finally {
    m.d.thaw();
  }
  const bad = crashed(r);
  const after = await cli(root, ['fetch', '--config', cfg, '--json'], { cwd: dir, deadlineMs: 60_000 });
  const processed = await m.d.count(m.user, 'Processed');
  return {
    bad:
      bad ??
      crashed(after) ??
      (processed !== 20 ? `${processed} of 20 in Processed after thawing` : complete(path.join(dir, 'db.sqlite'), 20, 100)),
    detail: `ended in ${r.ms} ms, exit ${r.code}: ${firstLine(r.stderr) || outcomeText(summaryOf(r), r)}`,
  };
});

/** A loopback SMTP server (smtp-server) that answers 554 to any message naming `refuse`. */
async function smtpSink(
  refuse: RegExp,
  code = 554,
): Promise<{ port: number; accepted: string[]; refused: number; close: () => Promise<void> }> {
  const accepted: string[] = [];
  let refused = 0;
  const server = new SMTPServer({
    authOptional: true,
    disabledCommands: ['STARTTLS', 'AUTH'],
    logger: false,
    onData(stream, _session, done) {
      const chunks: Buffer[] = [];
      stream.on('data', (d: Buffer) => chunks.push(d));
      stream.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        if (refuse.test(text)) {
          refused++;
          const err = new Error(code >= 500 ? '5.7.1 Message content rejected' : '4.7.1 Try again later') as Error & {
            responseCode: number;
          };
          err.responseCode = code;
          done(err);
        } else {
          accepted.push(/^Subject: (.*)$/m.exec(text)?.[1] ?? '');
          done();
        }
      });
    },
  });
  const port = await freePort();
  await new Promise<void>((r) => server.listen(port, '127.0.0.1', r));
  return {
    port,
    accepted,
    get refused() {
      return refused;
    },
    close: () => new Promise((r) => server.close(() => r())),
  };
}

// A content filter refusing one alert for good (554), or deferring it every time (451, a "soft
// reject"): either way the alerts after it must get through.
for (const code of [554, 451])
  fault(`SMTP server answers ${code} to one alert${code >= 500 ? '' : ' every time'}, and accepts the others`, async (root, dir) => {
    const smtp = await smtpSink(/203\.0\.113\.66/, code);
    try {
      const cfg = path.join(dir, 'alerts.toml');
      fs.writeFileSync(
        cfg,
        `[database]\npath = "db.sqlite"\n\n[analysis]\nreverse_dns = false\n\n[alerts.email]\nhost = "127.0.0.1"\nport = ${smtp.port}\nsecurity = "none"\nfrom = "ruawatch@example.com"\nto = ["postmaster@example.com"]\n`,
      );
      // A new source failing DMARC: the alert names it, and the filter refuses that.
      const failing = path.join(dir, 'failing.xml');
      fs.writeFileSync(
        failing,
        dmarcXml({
          id: 'f1',
          records: [
            { ip: '203.0.113.66', count: 400, pass: false },
            { ip: '192.0.2.1', count: 1000 },
          ],
        }),
      );
      // The domain's history before it (the rule watches domains with a baseline).
      const history = path.join(dir, 'history');
      fs.mkdirSync(history);
      for (let d = 10; d <= 20; d++)
        fs.writeFileSync(
          path.join(history, `h${d}.xml`),
          dmarcXml({ id: `h${d}`, begin: BASE - d * DAY, end: BASE - d * DAY + DAY - 1, records: [{ ip: '192.0.2.1', count: 500 }] }),
        );
      const i1 = await cli(root, ['ingest', '--config', cfg, '--json', history, failing], { cwd: dir });
      const a1 = await cli(root, ['alerts', '--config', cfg, '--at', isoDay(BASE + DAY), '--json'], { cwd: dir, deadlineMs: 60_000 });
      // Then TLS failures: a second alert, which nothing refuses.
      const tls = path.join(dir, 'tls.json');
      fs.writeFileSync(tls, tlsJson({ id: 't-fail', successful: 1000, failed: 300, sessions: 300 }));
      await cli(root, ['ingest', '--config', cfg, '--json', tls], { cwd: dir });
      const a2 = await cli(root, ['alerts', '--config', cfg, '--at', isoDay(BASE + DAY), '--json'], { cwd: dir, deadlineMs: 60_000 });
      // A few more runs, as a poll every few minutes would make.
      const more = [];
      for (let k = 0; k < 3; k++)
        more.push(await cli(root, ['alerts', '--config', cfg, '--at', isoDay(BASE + DAY), '--json'], { cwd: dir, deadlineMs: 60_000 }));
      const bad = crashed(i1) ?? crashed(a1) ?? crashed(a2) ?? more.map(crashed).find((b) => b) ?? null;
      const tlsSent = smtp.accepted.some((s) => /tls/i.test(s));
      const detail = `refused ${smtp.refused}, accepted ${smtp.accepted.length}: ${smtp.accepted.map((s) => JSON.stringify(s)).join(', ') || 'none'}`;
      if (bad) return { bad, detail };
      if (smtp.refused === 0)
        return { bad: 'the case did not work: no alert was refused', detail: `${detail}; ${firstLine(a1.stdout + a1.stderr)}` };
      return { bad: tlsSent ? null : 'the later TLS alert was never delivered', detail };
    } finally {
      await smtp.close();
    }
  });

// ---------------------------------------------------------------------------------------------
// Main

interface Row {
  root: string;
  group: Group;
  name: string;
  bad: string | null;
  detail: string;
}

const rows: Row[] = [];
const selected = cases.filter((c) => (!only || only.test(c.name)) && (!groups || groups.has(c.group)));
const label = (root: string) => {
  try {
    return spawnSync('git', ['-C', root, 'rev-parse', '--short', 'HEAD'], { encoding: 'utf8' }).stdout.trim() || path.basename(root);
  } catch {
    return path.basename(root);
  }
};

try {
  for (const root of roots) {
    const tag = label(root);
    for (const c of selected) {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ruawatch-hostile-'));
      let o: Outcome;
      try {
        o = await c.run(root, dir);
      } catch (e) {
        o = { bad: `the case could not run: ${(e as Error).message.slice(0, 160)}`, detail: '' };
      } finally {
        fs.rmSync(dir, { recursive: true, force: true });
      }
      rows.push({ root: tag, group: c.group, name: c.name, ...o });
      process.stdout.write(
        `${tag} ${c.group.padEnd(6)} ${o.bad ? 'BAD     ' : 'survived'} ${c.name}: ${o.bad ? `${o.bad}; ` : ''}${o.detail}\n`,
      );
    }
  }
} finally {
  await (dovecot as Dovecot | null)?.stop();
}

const tags = [...new Set(rows.map((r) => r.root))];
const title: Record<Group, string> = { ingest: 'hostile inputs (ingest)', web: 'hostile web requests', fault: 'faults injected' };
process.stdout.write(`\n| | ${tags.map((t) => `${t}: survived | ${t}: bad`).join(' | ')} |\n|---|${tags.map(() => '---|---|').join('')}\n`);
for (const g of ['ingest', 'web', 'fault'] as Group[]) {
  const cells = tags.map((t) => {
    const rs = rows.filter((r) => r.root === t && r.group === g);
    return `${rs.filter((r) => !r.bad).length} of ${rs.length} | ${rs.filter((r) => r.bad).length}`;
  });
  if (rows.some((r) => r.group === g)) process.stdout.write(`| ${title[g]} | ${cells.join(' | ')} |\n`);
}
