import zlib from 'node:zlib';
import { gzipSync, zipSync } from 'fflate';

/** A small, valid RFC 7489 aggregate report to vary in tests. */
export function dmarcXml(
  opts: {
    reportId?: string;
    orgName?: string;
    email?: string;
    domain?: string;
    begin?: number;
    end?: number;
    records?: string[];
    decl?: string;
    rootAttrs?: string;
    extraPolicy?: string;
  } = {},
): string {
  const records = opts.records ?? [record({})];
  return `${opts.decl ?? '<?xml version="1.0" encoding="UTF-8"?>'}
<feedback${opts.rootAttrs ?? ''}>
  <report_metadata>
    <org_name>${opts.orgName ?? 'receiver.example'}</org_name>
    <email>${opts.email ?? 'dmarc@receiver.example'}</email>
    <report_id>${opts.reportId ?? 'r-1'}</report_id>
    <date_range><begin>${opts.begin ?? 1700000000}</begin><end>${opts.end ?? 1700086399}</end></date_range>
  </report_metadata>
  <policy_published><domain>${opts.domain ?? 'example.com'}</domain><adkim>r</adkim><aspf>r</aspf><p>reject</p>${opts.extraPolicy ?? ''}</policy_published>
${records.join('\n')}
</feedback>
`;
}

export function record(r: {
  ip?: string;
  count?: number;
  dkim?: string;
  spf?: string;
  extra?: string;
  reasons?: string;
  headerFrom?: string;
}): string {
  return `  <record>
    <row><source_ip>${r.ip ?? '192.0.2.10'}</source_ip><count>${r.count ?? 3}</count>
      <policy_evaluated><disposition>none</disposition><dkim>${r.dkim ?? 'pass'}</dkim><spf>${r.spf ?? 'fail'}</spf>${r.reasons ?? ''}</policy_evaluated></row>
    <identifiers><header_from>${r.headerFrom ?? 'example.com'}</header_from></identifiers>
    <auth_results><dkim><domain>example.com</domain><selector>s1</selector><result>pass</result></dkim>${r.extra ?? ''}<spf><domain>bounce.example.net</domain><result>softfail</result></spf></auth_results>
  </record>`;
}

/**
 * A gzip stream that expands to `total` zero bytes: one compressed 64 MiB member repeated (RFC 1952
 * allows several members), so building it never holds the expansion.
 */
export function gzipBomb(total: number, prefix = '', unit = '\0'): Buffer {
  const size = 64 * 1024 * 1024;
  const member = zlib.gzipSync(Buffer.from(unit.repeat(size / unit.length)), { level: 9 });
  const head = prefix ? [zlib.gzipSync(Buffer.from(prefix))] : [];
  return Buffer.concat([...head, ...new Array<Buffer>(Math.ceil(total / size)).fill(member)]);
}

export function gzip(data: string | Uint8Array): Buffer {
  return Buffer.from(gzipSync(typeof data === 'string' ? Buffer.from(data) : data));
}

export function zip(entries: Record<string, string | Uint8Array>): Buffer {
  return Buffer.from(zipSync(Object.fromEntries(Object.entries(entries).map(([k, v]) => [k, typeof v === 'string' ? Buffer.from(v) : v]))));
}

/** A mail with the given MIME parts (already encoded bodies). */
export function mail(parts: { headers: string; body: string }[], top: { subject?: string; from?: string; boundary?: string } = {}): string {
  const b = top.boundary ?? 'b0undary-ruawatch';
  return [
    `From: ${top.from ?? 'noreply-dmarc@receiver.example'}`,
    'To: dmarc@example.com',
    `Subject: ${top.subject ?? 'Report domain: example.com'}`,
    'Date: Tue, 14 Nov 2023 12:00:00 +0000',
    'Message-ID: <report-mail-1@receiver.example>',
    'MIME-Version: 1.0',
    `Content-Type: multipart/mixed; boundary="${b}"`,
    '',
    ...parts.flatMap((p) => [`--${b}`, p.headers, '', p.body]),
    `--${b}--`,
    '',
  ].join('\r\n');
}

export function base64Lines(b: Uint8Array): string {
  return Buffer.from(b).toString('base64').replace(/.{76}/g, '$&\r\n');
}

/**
 * A one-entry zip written the ZIP64 way (APPNOTE 4.3.14, 4.5.3): 0xFFFFFFFF in every 32-bit size
 * and offset field, the real values in ZIP64 extra fields, a ZIP64 end of central directory and
 * its locator. Deflated with node's zlib so nothing here shares code with the reader under test.
 */
export function zip64(name: string, content: string): Buffer {
  const data = zlib.deflateRawSync(Buffer.from(content));
  const nameBuf = Buffer.from(name);
  const size = Buffer.byteLength(content);
  const crc = zlib.crc32(Buffer.from(content));
  const extra = (values: number[]) => {
    const b = Buffer.alloc(4 + 8 * values.length);
    b.writeUInt16LE(0x0001, 0);
    b.writeUInt16LE(8 * values.length, 2);
    values.forEach((v, i) => b.writeBigUInt64LE(BigInt(v), 4 + 8 * i));
    return b;
  };
  const localExtra = extra([size, data.length]);
  const local = Buffer.alloc(30);
  local.writeUInt32LE(0x04034b50, 0);
  local.writeUInt16LE(45, 4);
  local.writeUInt16LE(8, 8);
  local.writeUInt32LE(crc >>> 0, 14);
  local.writeUInt32LE(0xffffffff, 18);
  local.writeUInt32LE(0xffffffff, 22);
  local.writeUInt16LE(nameBuf.length, 26);
  local.writeUInt16LE(localExtra.length, 28);
  const centralExtra = extra([size, data.length, 0]);
  const central = Buffer.alloc(46);
  central.writeUInt32LE(0x02014b50, 0);
  central.writeUInt16LE(45, 4);
  central.writeUInt16LE(45, 6);
  central.writeUInt16LE(8, 10);
  central.writeUInt32LE(crc >>> 0, 16);
  central.writeUInt32LE(0xffffffff, 20);
  central.writeUInt32LE(0xffffffff, 24);
  central.writeUInt16LE(nameBuf.length, 28);
  central.writeUInt16LE(centralExtra.length, 30);
  central.writeUInt32LE(0xffffffff, 42);
  const body = Buffer.concat([local, nameBuf, localExtra, data]);
  const cd = Buffer.concat([central, nameBuf, centralExtra]);
  const eocd64 = Buffer.alloc(56);
  eocd64.writeUInt32LE(0x06064b50, 0);
  eocd64.writeBigUInt64LE(44n, 4);
  eocd64.writeUInt16LE(45, 12);
  eocd64.writeUInt16LE(45, 14);
  eocd64.writeBigUInt64LE(1n, 24);
  eocd64.writeBigUInt64LE(1n, 32);
  eocd64.writeBigUInt64LE(BigInt(cd.length), 40);
  eocd64.writeBigUInt64LE(BigInt(body.length), 48);
  const locator = Buffer.alloc(20);
  locator.writeUInt32LE(0x07064b50, 0);
  locator.writeBigUInt64LE(BigInt(body.length + cd.length), 8);
  locator.writeUInt32LE(1, 16);
  const eocd = Buffer.alloc(22);
  eocd.writeUInt32LE(0x06054b50, 0);
  eocd.writeUInt16LE(0xffff, 8);
  eocd.writeUInt16LE(0xffff, 10);
  eocd.writeUInt32LE(0xffffffff, 12);
  eocd.writeUInt32LE(0xffffffff, 16);
  return Buffer.concat([body, cd, eocd64, locator, eocd]);
}

/**
 * Zips within zips, `width` entries at each of `levels` levels, the innermost holding `leaf`: 4
 * levels of 100 stand for 10^8 copies of the leaf in about 600 KB (the amplification of issue 19).
 */
export function nestedZip(levels: number, width: number, leaf: string | Uint8Array): Buffer {
  let data: Uint8Array = typeof leaf === 'string' ? Buffer.from(leaf) : leaf;
  for (let level = 0; level < levels; level++) {
    const entries: Record<string, Uint8Array> = {};
    for (let i = 0; i < width; i++) entries[`r${i}.${level === 0 ? 'xml' : 'zip'}`] = data;
    data = zipSync(entries);
  }
  return Buffer.from(data);
}
