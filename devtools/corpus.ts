/** Deterministic report corpora, shared by the benchmarks and the tests. */
import fs from 'node:fs';
import path from 'node:path';
import { gzipSync, zipSync } from 'fflate';

/** mulberry32: a small seeded PRNG, so the corpus is the same on every run and machine. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const RESULTS = ['pass', 'pass', 'pass', 'fail', 'softfail', 'none'];

function recordXml(rand: () => number, i: number): string {
  const ip =
    rand() < 0.1
      ? `2001:db8:${Math.floor(rand() * 65535).toString(16)}::${(i % 65535).toString(16)}`
      : `${10 + Math.floor(rand() * 200)}.${Math.floor(rand() * 256)}.${Math.floor(rand() * 256)}.${i % 256}`;
  const dkim = rand() < 0.8 ? 'pass' : 'fail';
  const spf = rand() < 0.7 ? 'pass' : 'fail';
  return `  <record>
    <row>
      <source_ip>${ip}</source_ip>
      <count>${1 + Math.floor(rand() * 50)}</count>
      <policy_evaluated>
        <disposition>${dkim === 'pass' || spf === 'pass' ? 'none' : 'quarantine'}</disposition>
        <dkim>${dkim}</dkim>
        <spf>${spf}</spf>
      </policy_evaluated>
    </row>
    <identifiers>
      <header_from>example.com</header_from>
      <envelope_from>bounces.example.com</envelope_from>
    </identifiers>
    <auth_results>
      <dkim>
        <domain>example.com</domain>
        <selector>s${Math.floor(rand() * 3)}</selector>
        <result>${dkim}</result>
      </dkim>
      <spf>
        <domain>bounces.example.com</domain>
        <scope>mfrom</scope>
        <result>${RESULTS[Math.floor(rand() * RESULTS.length)]}</result>
      </spf>
    </auth_results>
  </record>
`;
}

function header(reporter: string, id: string, begin: number): string {
  return `<?xml version="1.0" encoding="UTF-8"?>
<feedback>
  <version>1.0</version>
  <report_metadata>
    <org_name>${reporter}</org_name>
    <email>noreply-dmarc@${reporter}</email>
    <report_id>${id}</report_id>
    <date_range>
      <begin>${begin}</begin>
      <end>${begin + 86399}</end>
    </date_range>
  </report_metadata>
  <policy_published>
    <domain>example.com</domain>
    <adkim>r</adkim>
    <aspf>r</aspf>
    <p>quarantine</p>
    <sp>quarantine</sp>
    <pct>100</pct>
  </policy_published>
`;
}

const REPORTERS = ['google.com', 'yahoo.com', 'outlook.com', 'mail.ru', 'gmx.net', 'mimecast.org', 'fastmail.com', 'web.de'];

export function reportXml(n: number, records: number, seed = n + 1): string {
  const rand = rng(seed);
  const parts = [header(REPORTERS[n % REPORTERS.length]!, `bench-${n}`, 1_700_000_000 + (n % 365) * 86400)];
  for (let i = 0; i < records; i++) parts.push(recordXml(rand, i));
  parts.push('</feedback>\n');
  return parts.join('');
}

/** `count` reports of `records` records each, as .xml.gz files. */
export function writeGzCorpus(dir: string, count: number, records: number): void {
  fs.mkdirSync(dir, { recursive: true });
  for (let n = 0; n < count; n++) fs.writeFileSync(path.join(dir, `r${n}.xml.gz`), gzipSync(Buffer.from(reportXml(n, records))));
}

/** The same reports as report mails with a zip attachment, the way Google sends them. */
export function writeEmlCorpus(dir: string, count: number, records: number): void {
  fs.mkdirSync(dir, { recursive: true });
  for (let n = 0; n < count; n++) fs.writeFileSync(path.join(dir, `r${n}.eml`), emlMessage(n, records));
}

export function emlMessage(n: number, records: number): string {
  {
    const name = `${REPORTERS[n % REPORTERS.length]}!example.com!${n}.xml`;
    const z = Buffer.from(zipSync({ [name]: Buffer.from(reportXml(n, records)) }))
      .toString('base64')
      .replace(/.{76}/g, '$&\r\n');
    const mail = [
      `From: noreply-dmarc-support@${REPORTERS[n % REPORTERS.length]}`,
      'To: dmarc@example.com',
      `Subject: Report domain: example.com Submitter: ${REPORTERS[n % REPORTERS.length]} Report-ID: bench-${n}`,
      'Date: Tue, 14 Nov 2023 12:00:00 +0000',
      `Message-ID: <bench-${n}@bench.example>`,
      'MIME-Version: 1.0',
      'Content-Type: multipart/mixed; boundary="bench"',
      '',
      '--bench',
      'Content-Type: text/plain',
      '',
      'This is an aggregate report.',
      '--bench',
      `Content-Type: application/zip; name="${name}.zip"`,
      'Content-Transfer-Encoding: base64',
      `Content-Disposition: attachment; filename="${name}.zip"`,
      '',
      z,
      '--bench--',
      '',
    ].join('\r\n');
    return mail;
  }
}

/** One big report written in a stream: 200,000 records is about 125 MB. */
export async function writeBigReport(file: string, records: number): Promise<void> {
  const out = fs.createWriteStream(file);
  const rand = rng(42);
  const write = (s: string) => (out.write(s) ? Promise.resolve() : new Promise<void>((r) => out.once('drain', () => r())));
  await write(header('big-reporter.example', 'bench-big', 1_700_000_000));
  let batch: string[] = [];
  for (let i = 0; i < records; i++) {
    batch.push(recordXml(rand, i));
    if (batch.length === 1000) {
      await write(batch.join(''));
      batch = [];
    }
  }
  await write(batch.join('') + '</feedback>\n');
  await new Promise<void>((resolve, reject) => out.end((err?: Error | null) => (err ? reject(err) : resolve())));
}

/**
 * `days` days of daily reports from `perDay` reporters, `records` records each, as .xml.gz: the
 * windows `ruawatch alerts` reads (35 days by default) filled at a busy domain's volume.
 */
export function writeDailyCorpus(dir: string, days: number, perDay: number, records: number, firstDay: number): void {
  fs.mkdirSync(dir, { recursive: true });
  for (let d = 0; d < days; d++) {
    for (let k = 0; k < perDay; k++) {
      const rand = rng(d * 1000 + k + 1);
      const parts = [header(REPORTERS[k % REPORTERS.length]!, `daily-${d}-${k}`, (firstDay + d) * 86400)];
      for (let i = 0; i < records; i++) parts.push(recordXml(rand, i));
      parts.push('</feedback>\n');
      fs.writeFileSync(path.join(dir, `d${d}-${k}.xml.gz`), gzipSync(Buffer.from(parts.join(''))));
    }
  }
}

/**
 * The reporters of the realistic corpus, with the date ranges their reports use (as in the real
 * samples): most cover one UTC day, ending at 23:59:59 (Google, Yahoo, GMX, Fastmail) or at the
 * next midnight (Microsoft, Mail.Ru); Zoho and a company's own gateway in Central Europe cover a
 * local day, 08:00 to 08:00 and 23:00 to 23:00 UTC, so their reports span two UTC days. `share` is
 * the share of a domain's mail that goes to that reporter's users.
 */
const REAL_REPORTERS = [
  { org: 'google.com', tag: 'google.com', email: 'noreply-dmarc-support@google.com', share: 0.44, offset: 0, span: 86_399 },
  { org: 'Outlook.com', tag: 'protection.outlook.com', email: 'dmarcreport@microsoft.com', share: 0.24, offset: 0, span: 86_400 },
  { org: 'Yahoo', tag: 'yahoo.com', email: 'dmarchelp@yahooinc.com', share: 0.12, offset: 0, span: 86_399 },
  { org: 'GMX', tag: 'gmx.net', email: 'dmarc_support@gmx.net', share: 0.06, offset: 0, span: 86_399 },
  { org: 'Mail.Ru', tag: 'mail.ru', email: 'dmarc_support@corp.mail.ru', share: 0.04, offset: 0, span: 86_400 },
  { org: 'Fastmail Pty Ltd', tag: 'fastmail.com', email: 'dmarc-reports@fastmail.com', share: 0.03, offset: 0, span: 86_399 },
  { org: 'zoho.com', tag: 'zoho.com', email: 'noreply-dmarc@zoho.com', share: 0.03, offset: 8 * 3600, span: 86_400 },
  { org: 'mailgw.example.de', tag: 'mailgw.example.de', email: 'dmarc@mailgw.example.de', share: 0.04, offset: 23 * 3600, span: 86_400 },
] as const;

/** Options of writeRealisticCorpus; the defaults give about 2,000 reports and 100,000 records. */
export interface RealisticCorpusOptions {
  /** Consecutive UTC days of reports. */
  days?: number;
  /** The first day, as a UTC day number (epoch seconds / 86,400). */
  firstDay?: number;
  /**
   * Domains with a few hundred sources each (180-340 of their own, 8-20 ESP servers, 6-12
   * forwarders; 30 messages a day per source, median), with tens (12-50 of their own; 3 a day) and
   * with 2-10 (1 a day); by default 5, 8 and 22.
   */
  large?: number;
  medium?: number;
  small?: number;
  seed?: number;
}

/** One sending address of a domain, stable over the days. */
interface RealSource {
  ip: string;
  /** Messages a day, across all reporters. */
  volume: number;
  /** Share of the days it sends on. */
  active: number;
  kind: 'own' | 'esp' | 'forwarder';
  /** An ESP's own signing domain, signed beside the domain's (the second DKIM signature). */
  espDomain?: string;
  /** A misconfigured sender: DKIM fails, SPF aligned. */
  broken?: boolean;
  /** A forwarder that keeps the signature intact (DKIM still passes). */
  keepsSignature?: boolean;
  listType?: 'forwarded' | 'mailing_list';
}

interface RealDomain {
  name: string;
  policy: 'none' | 'quarantine' | 'reject';
  selector: string;
  sources: RealSource[];
  /** Spoofing sources a day, on average. */
  spoofs: number;
  /** Each reporter's share of this domain's mail: its recipients are not spread like everyone's. */
  shares: number[];
}

/**
 * A model of the aggregate reports a mailbox watching many domains receives, as .xml.gz files
 * named the way reporters name them: a long tail of policy domains (a few with a few hundred
 * stable sources, some with tens, most with 2-10), some sources shared between domains (ESPs'
 * servers, forwarders and mailing lists), eight reporters each sending one report a day per
 * domain listing the sources its users got mail from that day, one record per source. About 10% of
 * sources are IPv6, some records carry a second DKIM signature (an ESP's) or a forwarded /
 * mailing_list override, and a few spoofing sources appear once. Returns the counts written.
 */
export function writeRealisticCorpus(dir: string, opts: RealisticCorpusOptions = {}): { reports: number; records: number } {
  const days = opts.days ?? 14;
  const firstDay = opts.firstDay ?? 19_676; // 2023-11-15
  const rand = rng(opts.seed ?? 7);
  const int = (lo: number, hi: number) => lo + Math.floor(rand() * (hi - lo + 1));
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)]!;
  // Messages a day spread log-uniformly over a factor of about 50 around `median`.
  const volume = (median: number) => median * Math.exp((rand() - 0.5) * 4);
  const used = new Set<string>();
  const ip = (): string => {
    for (;;) {
      const a =
        rand() < 0.1
          ? `2a0${int(0, 9)}:${int(0x100, 0xffff).toString(16)}:${int(0, 0xffff).toString(16)}::${int(1, 0xfff).toString(16)}`
          : `${pick([23, 37, 45, 52, 63, 77, 81, 91, 104, 141, 149, 167, 185, 194, 203, 212])}.${int(0, 255)}.${int(0, 255)}.${int(1, 254)}`;
      if (!used.has(a)) {
        used.add(a);
        return a;
      }
    }
  };
  // Shared by many domains: ESPs' sending servers (some sign with their own domain as well) and
  // forwarders / mailing lists.
  const esps: RealSource[] = [];
  for (let e = 0; e < 16; e++) {
    const espDomain = rand() < 0.4 ? `esp${e}-mail.example` : undefined;
    for (let k = 0; k < 4; k++) esps.push({ ip: ip(), volume: 0, active: 0.9, kind: 'esp', ...(espDomain ? { espDomain } : {}) });
  }
  const forwarders: RealSource[] = [];
  for (let f = 0; f < 24; f++) {
    forwarders.push({
      ip: ip(),
      volume: 0,
      active: 0.6,
      kind: 'forwarder',
      keepsSignature: rand() < 0.4,
      listType: rand() < 0.5 ? 'forwarded' : 'mailing_list',
    });
  }
  const domains: RealDomain[] = [];
  const addDomain = (name: string, own: number, shared: number, fwd: number, median: number, spoofs: number) => {
    const sources: RealSource[] = [];
    for (let k = 0; k < own; k++)
      sources.push({ ip: ip(), volume: volume(median), active: 0.85 + rand() * 0.15, kind: 'own', broken: rand() < 0.04 });
    const espPicks = new Set<RealSource>();
    while (espPicks.size < shared) espPicks.add(pick(esps));
    for (const s of espPicks) sources.push({ ...s, volume: volume(median) });
    const fwdPicks = new Set<RealSource>();
    while (fwdPicks.size < fwd) fwdPicks.add(pick(forwarders));
    for (const s of fwdPicks) sources.push({ ...s, volume: volume(median / 8) });
    domains.push({
      name,
      policy: pick(['none', 'none', 'quarantine', 'reject'] as const),
      selector: pick(['s1', 'google', 'selector1', 'k1', 'dkim']),
      sources,
      spoofs,
      // Google's and Microsoft's users get mail from every domain; a smaller domain's correspondents
      // are often at only some of the others, and a company's gateway gets mail from few domains.
      shares: REAL_REPORTERS.map((r, k) =>
        k < 2 || rand() < (k === REAL_REPORTERS.length - 1 ? 0.3 : own > 100 ? 1 : 0.5) ? r.share * Math.exp((rand() - 0.5) * 3) : 0,
      ),
    });
  };
  const large = opts.large ?? 5;
  const medium = opts.medium ?? 8;
  const small = opts.small ?? 22;
  for (let d = 0; d < large; d++) addDomain(`big${d + 1}.example`, int(180, 340), int(8, 20), int(6, 12), 30, 6);
  for (let d = 0; d < medium; d++) addDomain(`mid${d + 1}.example`, int(12, 50), int(2, 6), int(1, 4), 3, 1.5);
  for (let d = 0; d < small; d++) {
    const n = int(2, 10);
    const shared = Math.min(n - 1, int(0, 2));
    const fwd = rand() < 0.5 ? 1 : 0;
    addDomain(`small${d + 1}.example`, n - shared - fwd, shared, fwd, 1, 0.3);
  }

  fs.mkdirSync(dir, { recursive: true });
  let reports = 0;
  let records = 0;
  for (let day = firstDay; day < firstDay + days; day++) {
    for (const dom of domains) {
      // Messages each source sent that day, then what each reporter's users got of them.
      const sent = dom.sources.map((s) => (rand() < s.active ? s.volume * (0.5 + rand()) : 0));
      const spoofers = Math.floor(dom.spoofs * 2 * rand() + rand());
      const spoofAt = Array.from({ length: spoofers }, () => {
        let x = rand();
        let r = 0;
        while (r < REAL_REPORTERS.length - 1 && x >= REAL_REPORTERS[r]!.share) x -= REAL_REPORTERS[r++]!.share;
        return r;
      });
      REAL_REPORTERS.forEach((rep, r) => {
        const rows: string[] = [];
        dom.sources.forEach((s, k) => {
          const expected = sent[k]! * dom.shares[r]!;
          if (expected === 0 || rand() >= 1 - Math.exp(-expected)) return;
          rows.push(realRecordXml(dom, s, Math.max(1, Math.round(expected * (0.5 + rand())))));
        });
        spoofAt.forEach((at) => {
          if (at === r) rows.push(realRecordXml(dom, { ip: ip(), volume: 0, active: 0, kind: 'own' }, int(1, 3), true));
        });
        if (rows.length === 0) return;
        const begin = day * 86_400 + rep.offset - (rep.offset > 12 * 3600 ? 86_400 : 0);
        const end = begin + rep.span;
        const id = `${day}.${reports}.${Math.floor(rand() * 1e9)}`;
        const xml = realHeader(rep, dom, id, begin, end) + rows.join('') + '</feedback>\n';
        const file = `${rep.tag}!${dom.name}!${begin}!${end}!${id}.xml.gz`;
        // mtime 0: no time in the gzip header, so the files are the same bytes on every run.
        fs.writeFileSync(path.join(dir, file), gzipSync(Buffer.from(xml), { mtime: 0 }));
        reports++;
        records += rows.length;
      });
    }
  }
  return { reports, records };
}

function realHeader(rep: (typeof REAL_REPORTERS)[number], dom: RealDomain, id: string, begin: number, end: number): string {
  return `<?xml version="1.0" encoding="UTF-8"?>
<feedback>
  <version>1.0</version>
  <report_metadata>
    <org_name>${rep.org}</org_name>
    <email>${rep.email}</email>
    <report_id>${id}</report_id>
    <date_range>
      <begin>${begin}</begin>
      <end>${end}</end>
    </date_range>
  </report_metadata>
  <policy_published>
    <domain>${dom.name}</domain>
    <adkim>r</adkim>
    <aspf>r</aspf>
    <p>${dom.policy}</p>
    <sp>${dom.policy}</sp>
    <pct>100</pct>
  </policy_published>
`;
}

function realRecordXml(dom: RealDomain, s: RealSource, count: number, spoof = false): string {
  // Own servers: DKIM and SPF aligned. An ESP: the domain's DKIM signature (and perhaps the
  // ESP's own), SPF on the ESP's bounce domain, so not aligned. A forwarder or list: SPF fails,
  // DKIM survives only if the message was not changed, and the reporter notes an override.
  const fwd = s.kind === 'forwarder';
  const dkimPass = !spoof && !s.broken && (!fwd || s.keepsSignature === true);
  const spfAligned = !spoof && s.kind === 'own';
  const pass = dkimPass || spfAligned;
  const disposition = pass || fwd || dom.policy === 'none' ? 'none' : dom.policy;
  const mfrom = s.kind === 'esp' ? `bounce.${s.espDomain ?? 'esp-mail.example'}` : spoof ? 'mailer.example.net' : dom.name;
  const reason = fwd && !pass ? `\n        <reason>\n          <type>${s.listType}</type>\n        </reason>` : '';
  const sigs = spoof
    ? []
    : [
        { d: dom.name, s: dom.selector, r: dkimPass ? 'pass' : 'fail' },
        ...(s.espDomain && !fwd ? [{ d: s.espDomain, s: 'esp', r: 'pass' }] : []),
      ];
  const dkim = sigs
    .map(
      (g) =>
        `\n      <dkim>\n        <domain>${g.d}</domain>\n        <selector>${g.s}</selector>\n        <result>${g.r}</result>\n      </dkim>`,
    )
    .join('');
  return `  <record>
    <row>
      <source_ip>${s.ip}</source_ip>
      <count>${count}</count>
      <policy_evaluated>
        <disposition>${disposition}</disposition>
        <dkim>${dkimPass ? 'pass' : 'fail'}</dkim>
        <spf>${spfAligned ? 'pass' : 'fail'}</spf>${reason}
      </policy_evaluated>
    </row>
    <identifiers>
      <header_from>${dom.name}</header_from>
      <envelope_from>${mfrom}</envelope_from>
    </identifiers>
    <auth_results>${dkim}
      <spf>
        <domain>${mfrom}</domain>
        <scope>mfrom</scope>
        <result>${spoof || fwd ? 'fail' : 'pass'}</result>
      </spf>
    </auth_results>
  </record>
`;
}
