import zlib from 'node:zlib';
import { gzipSync, zipSync } from 'fflate';

/** A small, valid RFC 7489 aggregate report to vary in tests. */
export function dmarcXml(opts: {
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
} = {}): string {
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

export function record(r: { ip?: string; count?: number; dkim?: string; spf?: string; extra?: string; reasons?: string; headerFrom?: string }): string {
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
  return Buffer.from(
    zipSync(Object.fromEntries(Object.entries(entries).map(([k, v]) => [k, typeof v === 'string' ? Buffer.from(v) : v]))),
  );
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
