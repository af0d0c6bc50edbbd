import type {
  AnalysisInput,
  AnalysisSettings,
  CoverageDay,
  DkimDay,
  PolicyDay,
  PolicyRow,
  RecordRow,
  ReportRow,
  SourceDay,
  TlsDay,
  TlsFailureDay,
  TlsRow,
} from './types.js';

export const DAY = 86_400;

/**
 * A report is shared out over at most this many days: a longer range is attributed to its last
 * MAX_SHARE_DAYS days. Aggregate reports cover a day (RFC 7489 section 7.2, ri=86400 by default),
 * some a week; a range of months or millennia is broken or hostile, and must not cost one row, or
 * one loop turn, per day it claims.
 */
export const MAX_SHARE_DAYS = 31;
/** Ranges are clamped to [1970-01-01, 9999-12-31]: every day number stays a printable date. */
const MIN_TS = 0;
const MAX_TS = Date.UTC(9999, 11, 31, 23, 59, 59) / 1000;

/** A range of whole UTC days, [from, to) as day numbers (epoch seconds / 86,400). */
export interface Window {
  from: number;
  to: number;
}

export interface Windows {
  baseline: Window;
  recent: Window;
  latest: Window;
  /** The last whole day. */
  last: Window;
  /** The days without a sight of an alert's source after which it resolves (at most the recent days). */
  quiet: Window;
  /** From this day on the rules look at single days (fast detection, recovery, silence). */
  daily: number;
}

/**
 * The one definition of "the last N days" that alerts, the digest, the dashboard and /metrics
 * share: the N whole UTC days before the day `now` falls in. The current day is always left out:
 * reports for a day arrive during the next one, so today is incomplete. As of the end of
 * 2026-11-08 (`--at 2026-11-08`), the last 7 days are 2026-11-02 to 2026-11-08.
 */
export function lastDays(now: number, n: number): Window {
  const today = Math.floor(now / DAY);
  return { from: today - n, to: today };
}

/** The windows the drift rules compare as of `now`: the recent days, the baseline before them, the latest days. */
export function windowsAt(now: number, s: AnalysisSettings): Windows {
  const recent = lastDays(now, s.recentDays);
  const latest = lastDays(now, s.latestDays);
  const quiet = lastDays(now, Math.min(s.quietDays, s.recentDays));
  return {
    recent,
    baseline: { from: recent.from - s.baselineDays, to: recent.from },
    latest,
    last: lastDays(now, 1),
    quiet,
    daily: Math.max(recent.from, Math.min(latest.from, quiet.from, recent.to - 2)),
  };
}

export function inWindow(day: number, w: Window): boolean {
  return day >= w.from && day < w.to;
}

/**
 * How a report's range is shared out over UTC days, pro rata to the seconds it covers in each
 * (a report from 12:00 to 12:00 counts half on each day). A report with an empty or inverted range
 * counts on the day it begins. Bounded whatever the range: times are clamped to years 1970-9999
 * and a range longer than `maxDays` (MAX_SHARE_DAYS) is attributed to its last `maxDays` days, so
 * at most `maxDays` + 1 days come back.
 */
export function dayShares(begin: number, end: number, maxDays = MAX_SHARE_DAYS): [day: number, share: number][] {
  const b0 = clamp(begin);
  const e = clamp(end);
  if (e <= b0) return [[Math.floor(b0 / DAY), 1]];
  const b = Math.max(b0, e - maxDays * DAY);
  const first = Math.floor(b / DAY);
  const last = Math.floor((e - 1) / DAY);
  if (first === last) return [[first, 1]];
  const out: [number, number][] = [];
  for (let d = first; d <= last; d++) {
    const lo = Math.max(b, d * DAY);
    const hi = Math.min(e, (d + 1) * DAY);
    out.push([d, (hi - lo) / (e - b)]);
  }
  return out;
}

/**
 * The rollup rows one aggregate report may make at most (a row per record and day it is shared
 * out over, and per further DKIM signature of a record and day), as many as a report of the most
 * records the limits let in (maxRecordsPerReport) makes over one day. A report of 2,000,000 records
 * claiming 31 days would otherwise make 64 million rows, minutes of sorting and gigabytes of
 * temporary files for one message anyone can send.
 */
export const MAX_REPORT_ROLLUP_ROWS = 2_000_000;

/**
 * Below MAX_REPORT_ROLLUP_ROWS, a report may make REPORT_SPREAD_ROWS rows or twice its rows of a
 * day, whichever is more: a daily report (two UTC days at most) of up to 1,000,000 records is
 * always shared out exactly, and so is a weekly one of up to 12,500 records or a monthly one of up
 * to 3,125 (within the first INPUT_SPREAD_ROWS of its input); what one report adds to the rollups
 * stays a small multiple of what it stores. A mail of 100 reports of 14,000 records claiming 31
 * days would make 45 million rows without it, 10 million with it alone, 3.5 million with
 * INPUT_SPREAD_ROWS too (ten reports of 98,000 rows, the others of 28,000).
 */
export const REPORT_SPREAD_ROWS = 100_000;

/**
 * What the reports of one input (a mail, a file, one message of an mbox) may make together of
 * their REPORT_SPREAD_ROWS: ten reports' worth. Past it a report of the input may make twice its
 * rows of a day, which shares a daily report out exactly whatever its size, and not more. Without
 * it one mail of 100 reports of 3,125 records claiming 31 days (a zip of a few MB; the input limits
 * let in 100 reports and 200 MiB of XML) made 9.7 million rollup rows; with it 1.6 million, and
 * what an input adds to the rollups past the first million rows is at most twice what it stores.
 */
export const INPUT_SPREAD_ROWS = 1_000_000;

/**
 * What a report of an input whose earlier reports made `used` rollup rows may spread over days
 * (reportShares `spread`): REPORT_SPREAD_ROWS, less once the input nears INPUT_SPREAD_ROWS.
 */
export function inputSpread(used: number): number {
  return Math.max(0, Math.min(REPORT_SPREAD_ROWS, INPUT_SPREAD_ROWS - used));
}

/**
 * The spread a report of an input takes (inputSpread), charging the input's budget with the rows
 * it then makes: `rows` a day over the days reportShares gives it.
 */
export function takeSpread(budget: { rollupRows: number }, begin: number, end: number, rows: number, maxRows?: number): number {
  const spread = inputSpread(budget.rollupRows);
  budget.rollupRows += rows * reportShares(begin, end, rows, maxRows, spread).length;
  return spread;
}

/**
 * How an aggregate report making `rows` rollup rows a day (its records and their DKIM signatures
 * past the first) is shared out over days (dayShares), over fewer days when rows x days would
 * pass its budget (`spread`, REPORT_SPREAD_ROWS unless its input used up INPUT_SPREAD_ROWS, or
 * twice `rows`, at most `maxRows`): then it is attributed to its last days, as many as keep it
 * within (its last day alone, at worst, which makes `rows` rows even past the budget). What it
 * counts is unchanged, only when.
 */
export function reportShares(
  begin: number,
  end: number,
  rows: number,
  maxRows = MAX_REPORT_ROLLUP_ROWS,
  spread = REPORT_SPREAD_ROWS,
): [day: number, share: number][] {
  const perDay = Math.max(1, rows);
  const budget = Math.min(maxRows, Math.max(spread, 2 * perDay));
  const days = Math.floor(budget / perDay);
  if (days > MAX_SHARE_DAYS) return dayShares(begin, end);
  if (days <= 1) return [[countDay(begin, end), 1]];
  // A range of n days' seconds touches at most n + 1 day numbers.
  return dayShares(begin, end, days - 1);
}

function clamp(t: number): number {
  return Number.isFinite(t) ? Math.min(MAX_TS, Math.max(MIN_TS, Math.trunc(t))) : MIN_TS;
}

/** The day a report is counted on (coverage, report counts): the last day it is shared out over. */
export function countDay(begin: number, end: number): number {
  const shares = dayShares(begin, end);
  return shares[shares.length - 1]![0];
}

/** Override reasons that mean "forwarded or list mail", which fails authentication by nature. */
export const FORWARDED_REASONS = ['forwarded', 'trusted_forwarder', 'mailing_list'] as const;
const FORWARDED = new Set<string>(FORWARDED_REASONS);

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
  /** Forwarded and mailing-list messages failing DMARC: counted, but never held against a source. */
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

export function mergeTally(into: Tally, from: Tally): void {
  into.messages += from.messages;
  into.dmarcPass += from.dmarcPass;
  into.dkimAlignedPass += from.dkimAlignedPass;
  into.spfAlignedPass += from.spfAlignedPass;
  into.forwarded += from.forwarded;
  into.none += from.none;
  into.quarantine += from.quarantine;
  into.reject += from.reject;
}

/** Messages a pass rate is measured over: forwarded mail that failed is left out. */
export function judged(t: Tally): number {
  return t.messages - t.forwarded;
}

export function passRate(t: Tally): number | null {
  const n = judged(t);
  return n > 0 ? t.dmarcPass / n : null;
}

/** Lower case for ASCII letters only, as SQLite's lower() does, so both sides agree on any text. */
export function asciiLower(s: string): string {
  return s.replace(/[A-Z]+/g, (m) => m.toLowerCase());
}

/** An MX host name as the rollups key it: lower case, without trailing dots. */
export function mxKey(host: string): string {
  return asciiLower(host).replace(/\.+$/, '');
}

/** A published DMARC policy as receivers apply it: RFC 7489 section 6.3's defaults filled in. */
export interface EffectivePolicy {
  p: string;
  sp: string;
  np: string | null;
  pct: number;
  adkim: string;
  aspf: string;
}

/** The policy of a report's policy_published, defaults filled in (sp defaults to p; pct to 100; r alignment). */
export function effectivePolicy(p: {
  p: string | null;
  sp: string | null;
  np: string | null;
  pct: number | null;
  adkim: string | null;
  aspf: string | null;
}): EffectivePolicy {
  const main = p.p ?? 'none';
  return { p: main, sp: p.sp ?? main, np: p.np || null, pct: p.pct ?? 100, adkim: p.adkim ?? 'r', aspf: p.aspf ?? 'r' };
}

/**
 * A policy's one text: the key of its policy_daily rows and what messages quote, e.g.
 * "p=reject; sp=reject; pct=100; adkim=r; aspf=r" (np only when published).
 */
export function policyKey(e: EffectivePolicy): string {
  return `p=${e.p}; sp=${e.sp}; ${e.np ? `np=${e.np}; ` : ''}pct=${e.pct}; adkim=${e.adkim}; aspf=${e.aspf}`;
}

const POLICY_KEY = /^p=([^;]*); sp=([^;]*); (?:np=([^;]+); )?pct=(\d+); adkim=([^;]*); aspf=([^;]*)$/;

/** policyKey's text back as a policy; null for any other text. */
export function parsePolicyKey(text: string): EffectivePolicy | null {
  const m = POLICY_KEY.exec(text);
  if (!m) return null;
  return { p: m[1]!, sp: m[2]!, np: m[3] ?? null, pct: Number(m[4]), adkim: m[5]!, aspf: m[6]! };
}

/*
 * What follows is the straightforward recomputation of the daily rollups from rows, in memory: the
 * reference the database's rollups are tested against, and how the rule tables feed the rules.
 */

/**
 * Per (day, policy domain, source IP, header_from): the tally of the records, shared out over the
 * days of their report; and per (day, domain, source IP, DKIM domain, selector, result) the
 * messages of records that are not forwarded.
 */
export function rollupRecords(records: RecordRow[], maxRows = MAX_REPORT_ROLLUP_ROWS): { sources: SourceDay[]; dkim: DkimDay[] } {
  const sources = new Map<string, SourceDay>();
  const dkim = new Map<string, DkimDay>();
  for (const r of records) {
    const hf = asciiLower(r.headerFrom ?? '');
    const forwarded = isForwarded(r);
    for (const [day, share] of reportShares(r.begin, r.end, r.reportRows ?? 1, maxRows, r.spreadRows)) {
      const key = `${r.domain}\0${day}\0${r.sourceIp}\0${hf}`;
      let row = sources.get(key);
      if (!row) {
        row = { domain: r.domain, day, sourceIp: r.sourceIp, headerFrom: hf, ...emptyTally() };
        sources.set(key, row);
      }
      addToTally(row, r, share);
      if (forwarded) continue;
      for (const sig of r.dkim) {
        const d = asciiLower(sig.domain ?? '');
        const s = asciiLower(sig.selector ?? '');
        const k = `${r.domain}\0${day}\0${r.sourceIp}\0${d}\0${s}\0${sig.result}`;
        let x = dkim.get(k);
        if (!x) {
          x = { domain: r.domain, day, sourceIp: r.sourceIp, signingDomain: d, selector: s, result: sig.result, messages: 0 };
          dkim.set(k, x);
        }
        x.messages += r.count * share;
      }
    }
  }
  return { sources: [...sources.values()], dkim: [...dkim.values()] };
}

/**
 * TLS sessions per (day, policy domain, MX) and failures per (day, domain, MX, result type,
 * reporter). A failure goes to the MX its details name, else to the policy's only MX, else to '*';
 * successful sessions to the policy's MX hosts in equal shares, else to '*'. Failed sessions the details leave out are
 * 'unspecified' (RFC 8460 section 4.3: details are optional).
 */
/** MX hosts of one policy over which its successful sessions are shared out, at most. */
export const MAX_POLICY_HOSTS = 32;

/**
 * The MX hosts over which a policy's successful sessions are shared out. A policy names a handful;
 * a report listing thousands (nothing bounds the list but the report's size) would make a row per
 * host and day: past MAX_POLICY_HOSTS, none (successes go to '*').
 */
function policyHosts(row: TlsRow): string[] {
  const named = [...new Set(row.mxHosts.map(mxKey))].sort();
  return named.length > MAX_POLICY_HOSTS ? [] : named;
}

/**
 * TLS rollup rows one report may make, at most. A report names a policy or a few, each with a few
 * MX hosts and failure details; 2,000 policies of 32 hosts over 31 days (a 122 KB gzip) made 2
 * million rows, held in memory (815 MiB) until written, and the limits let in thirty times that.
 */
export const MAX_TLS_REPORT_ROWS = 100_000;

/**
 * The policies of one TLS report (as rollupTls reads them), bounded to MAX_TLS_REPORT_ROWS rows
 * in all (or its last day's, some three per policy and failure detail, when these alone are
 * more): past it a day, successes go to '*' instead of being shared over each policy's MX hosts,
 * and the report is shared out over fewer of its last days (reportShares), its last alone at worst.
 * What it counts is unchanged.
 */
export function boundTlsReport(rows: TlsRow[]): TlsRow[] {
  // A day's rows of a policy: one per MX host its successes go to, and per failure detail (and the
  // failures it leaves out) one per MX and one per result type.
  const perDay = (shared: boolean) =>
    rows.reduce((n, r) => n + (shared ? Math.max(1, policyHosts(r).length) : 1) + 2 * (r.failures.length + 1), 0);
  let rowsPerDay = perDay(true);
  let out = rows;
  if (rowsPerDay > MAX_TLS_REPORT_ROWS) {
    out = rows.map((r) => ({ ...r, mxHosts: [] }));
    rowsPerDay = perDay(false);
  }
  return out.map((r) => ({ ...r, reportRows: rowsPerDay }));
}

export function rollupTls(rows: TlsRow[]): { tls: TlsDay[]; tlsFailures: TlsFailureDay[] } {
  const tls = new Map<string, TlsDay>();
  const failures = new Map<string, TlsFailureDay>();
  for (const row of rows) {
    const hosts = policyHosts(row);
    const only = hosts.length === 1 ? hosts[0]! : '*';
    const failed: { mx: string; type: string; sessions: number }[] = [];
    let detailed = 0;
    for (const f of row.failures) {
      detailed += f.sessions;
      failed.push({ mx: f.mx ? mxKey(f.mx) : only, type: f.resultType, sessions: f.sessions });
    }
    if (row.failed > detailed) failed.push({ mx: only, type: 'unspecified', sessions: row.failed - detailed });
    for (const [day, share] of reportShares(row.begin, row.end, row.reportRows ?? 1, MAX_TLS_REPORT_ROWS, row.spreadRows)) {
      const at = (mx: string) => {
        const key = `${row.domain}\0${day}\0${mx}`;
        let t = tls.get(key);
        if (!t) {
          t = { domain: row.domain, day, mx, successful: 0, failed: 0 };
          tls.set(key, t);
        }
        return t;
      };
      // RFC 8460 counts successful sessions per policy: shared out evenly over its MX hosts, so a
      // failure share can be taken per MX.
      if (hosts.length > 1) for (const h of hosts) at(h).successful += (row.successful * share) / hosts.length;
      else at(only).successful += row.successful * share;
      for (const f of failed) {
        at(f.mx).failed += f.sessions * share;
        const key = `${row.domain}\0${day}\0${f.mx}\0${f.type}\0${row.reporter}`;
        const x = failures.get(key) ?? { domain: row.domain, day, mx: f.mx, resultType: f.type, reporter: row.reporter, sessions: 0 };
        x.sessions += f.sessions * share;
        failures.set(key, x);
      }
    }
  }
  return { tls: [...tls.values()], tlsFailures: [...failures.values()] };
}

/** Coverage: per (kind, domain, reporter, day a report ends) the reports and how far they reached. */
export function rollupCoverage(reports: ReportRow[]): CoverageDay[] {
  const out = new Map<string, CoverageDay>();
  for (const r of reports) {
    const day = countDay(r.begin, r.end);
    const key = `${r.kind}\0${r.domain}\0${r.reporter}\0${day}`;
    const c = out.get(key) ?? { kind: r.kind, domain: r.domain, reporter: r.reporter, day, reports: 0, lastEnd: r.end };
    c.reports++;
    c.lastEnd = Math.max(c.lastEnd, r.end);
    out.set(key, c);
  }
  return [...out.values()];
}

/** Per (domain, day, effective policy): the share of reports that saw it, and the reports ending that day. */
export function rollupPolicies(policies: PolicyRow[], maxRows = MAX_REPORT_ROLLUP_ROWS): PolicyDay[] {
  const out = new Map<string, PolicyDay>();
  for (const p of policies) {
    const published = effectivePolicy(p);
    const policy = policyKey(published);
    const shares = reportShares(p.begin, p.end, p.reportRows ?? 1, maxRows, p.spreadRows);
    const last = shares[shares.length - 1]![0];
    for (const [day, share] of shares) {
      const key = `${p.domain}\0${day}\0${policy}`;
      const x = out.get(key) ?? { domain: p.domain, day, policy, published, weight: 0, reports: 0 };
      x.weight += share;
      if (day === last) x.reports++;
      out.set(key, x);
    }
  }
  return [...out.values()];
}

/** The analysis input for raw rows, rolled up in memory: how the rule tables are written. */
export function rollupInput(raw: { records?: RecordRow[]; tls?: TlsRow[]; reports?: ReportRow[]; policies?: PolicyRow[] }): AnalysisInput {
  return {
    ...rollupRecords(raw.records ?? []),
    ...rollupTls(raw.tls ?? []),
    coverage: rollupCoverage(raw.reports ?? []),
    policies: rollupPolicies(raw.policies ?? []),
  };
}

export interface DailyRollup extends Tally {
  day: string; // YYYY-MM-DD
  domain: string;
  sourceIp: string;
  headerFrom: string | null;
}

/** Daily rollups per (policy domain, source IP, header_from) with ISO days, in day order. */
export function dailyRollups(records: RecordRow[]): DailyRollup[] {
  return rollupRecords(records)
    .sources.map(({ day, headerFrom, ...t }) => ({ ...t, day: isoDay(day), headerFrom: headerFrom || null }))
    .sort((a, b) => a.day.localeCompare(b.day) || a.domain.localeCompare(b.domain) || a.sourceIp.localeCompare(b.sourceIp));
}

export function isoDay(day: number): string {
  const d = new Date(day * DAY * 1000);
  return Number.isNaN(d.getTime()) ? '?' : d.toISOString().slice(0, 10);
}
