import type { AnalysisSettings, RecordRow } from './types.js';

export const DAY = 86_400;

/** A range of whole UTC days, [from, to) as day numbers (epoch seconds / 86,400). */
export interface Window {
  from: number;
  to: number;
}

export interface Windows {
  baseline: Window;
  recent: Window;
  latest: Window;
}

/**
 * The windows as of `now`. The current day is left out: reports for a day arrive during the next
 * one, so today is always incomplete. `--at 2026-11-20` therefore means "through the 20th".
 */
export function windowsAt(now: number, s: AnalysisSettings): Windows {
  const today = Math.floor(now / DAY);
  const recent = { from: today - s.recentDays, to: today };
  return {
    recent,
    baseline: { from: recent.from - s.baselineDays, to: recent.from },
    latest: { from: today - s.latestDays, to: today },
  };
}

/**
 * How a report's range is shared out over UTC days, pro rata to the seconds it covers in each
 * (a report from 12:00 to 12:00 counts half on each day). A report with an empty or inverted range
 * counts on the day it begins.
 */
export function dayShares(begin: number, end: number): [day: number, share: number][] {
  if (end <= begin) return [[Math.floor(begin / DAY), 1]];
  const first = Math.floor(begin / DAY);
  const last = Math.floor((end - 1) / DAY);
  if (first === last) return [[first, 1]];
  const out: [number, number][] = [];
  for (let d = first; d <= last; d++) {
    const lo = Math.max(begin, d * DAY);
    const hi = Math.min(end, (d + 1) * DAY);
    out.push([d, (hi - lo) / (end - begin)]);
  }
  return out;
}

/** The part of a report's range that falls inside a window, 0..1. */
export function shareIn(begin: number, end: number, w: Window): number {
  let total = 0;
  for (const [day, share] of dayShares(begin, end)) if (day >= w.from && day < w.to) total += share;
  return total;
}

/** Override reasons that mean "forwarded or list mail", which fails authentication by nature. */
const FORWARDED = new Set(['forwarded', 'trusted_forwarder', 'mailing_list']);

export function isForwarded(r: RecordRow): boolean {
  return r.reasons.some((t) => FORWARDED.has(t));
}

/** RFC 7489 section 6.6.2: a message passes DMARC when either aligned identifier passes. */
export function passesDmarc(r: RecordRow): boolean {
  return r.dkimAligned === 'pass' || r.spfAligned === 'pass';
}

export interface Tally {
  messages: number;
  dmarcPass: number;
  dkimAlignedPass: number;
  spfAlignedPass: number;
  /** Forwarded and mailing-list messages: counted, but never held against a source. */
  forwarded: number;
  none: number;
  quarantine: number;
  reject: number;
}

export function emptyTally(): Tally {
  return { messages: 0, dmarcPass: 0, dkimAlignedPass: 0, spfAlignedPass: 0, forwarded: 0, none: 0, quarantine: 0, reject: 0 };
}

export function addToTally(t: Tally, r: RecordRow, weight: number): void {
  const n = r.count * weight;
  t.messages += n;
  if (passesDmarc(r)) t.dmarcPass += n;
  else if (isForwarded(r)) t.forwarded += n;
  if (r.dkimAligned === 'pass') t.dkimAlignedPass += n;
  if (r.spfAligned === 'pass') t.spfAlignedPass += n;
  if (r.disposition === 'quarantine') t.quarantine += n;
  else if (r.disposition === 'reject') t.reject += n;
  else t.none += n;
}

/** Messages a pass rate is measured over: forwarded mail that failed is left out. */
export function judged(t: Tally): number {
  return t.messages - t.forwarded;
}

export function passRate(t: Tally): number | null {
  const n = judged(t);
  return n > 0 ? t.dmarcPass / n : null;
}

export interface DailyRollup extends Tally {
  day: string; // YYYY-MM-DD
  domain: string;
  sourceIp: string;
  headerFrom: string | null;
}

/**
 * Daily rollups per (policy domain, source IP, header_from). A report spanning several days is
 * shared out over them pro rata, so message counts can be fractional.
 */
export function dailyRollups(records: RecordRow[]): DailyRollup[] {
  const out = new Map<string, DailyRollup>();
  for (const r of records) {
    for (const [day, share] of dayShares(r.begin, r.end)) {
      const key = `${day}\0${r.domain}\0${r.sourceIp}\0${r.headerFrom ?? ''}`;
      let row = out.get(key);
      if (!row) {
        row = { day: isoDay(day), domain: r.domain, sourceIp: r.sourceIp, headerFrom: r.headerFrom, ...emptyTally() };
        out.set(key, row);
      }
      addToTally(row, r, share);
    }
  }
  return [...out.values()].sort(
    (a, b) => a.day.localeCompare(b.day) || a.domain.localeCompare(b.domain) || a.sourceIp.localeCompare(b.sourceIp),
  );
}

export function isoDay(day: number): string {
  return new Date(day * DAY * 1000).toISOString().slice(0, 10);
}
