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
