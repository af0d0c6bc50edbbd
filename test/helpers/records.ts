import { DAY, type RecordRow } from '../../src/analyse/index.js';

/**
 * Aggregate-report records for the rule tables (test/unit): each source sends `perDay` messages a
 * day from day `from` to day `to`, a share `pass` of them passing DMARC by DKIM alignment.
 */
export interface Src {
  ip: string;
  from: number; // first day
  to: number; // last day, inclusive
  perDay: number;
  pass?: number; // share passing DMARC, 0..1 (by DKIM alignment, with the selector below)
  spfAligned?: boolean;
  selector?: string;
  reasons?: string[];
  dkimFailResult?: string;
  domain?: string;
  reporter?: string;
  disposition?: string;
  /** The signing domain; else the policy domain. */
  dkimDomain?: string;
}

/** One record per day per source, with `pass` of the messages passing (and their DKIM passing). */
export function rows(...sources: Src[]): RecordRow[] {
  const out: RecordRow[] = [];
  for (const s of sources) {
    for (let d = s.from; d <= s.to; d++) {
      const pass = Math.round(s.perDay * (s.pass ?? 1));
      const base = {
        domain: s.domain ?? 'example.com',
        reporter: s.reporter ?? 'google.com',
        begin: d * DAY,
        end: (d + 1) * DAY - 1,
        sourceIp: s.ip,
        headerFrom: s.domain ?? 'example.com',
        disposition: s.disposition ?? 'none',
        reasons: s.reasons ?? [],
      };
      const sel = s.selector ?? 's1';
      const dkimDomain = s.dkimDomain ?? s.domain ?? 'example.com';
      if (pass > 0) {
        out.push({
          ...base,
          count: pass,
          dkimAligned: 'pass',
          spfAligned: s.spfAligned ? 'pass' : 'fail',
          dkim: [{ domain: dkimDomain, selector: sel, result: 'pass' }],
        });
      }
      if (s.perDay - pass > 0) {
        out.push({
          ...base,
          count: s.perDay - pass,
          dkimAligned: 'fail',
          spfAligned: s.spfAligned ? 'pass' : 'fail',
          dkim: s.dkimFailResult === 'none' ? [] : [{ domain: dkimDomain, selector: sel, result: s.dkimFailResult ?? 'fail' }],
        });
      }
    }
  }
  return out;
}
