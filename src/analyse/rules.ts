import {
  DAY,
  emptyTally,
  inWindow,
  isoDay,
  judged,
  lastDays,
  mergeTally,
  passRate,
  type Tally,
  type Window,
  type Windows,
  type EffectivePolicy,
} from './rollups.js';
import { mention } from './names.js';
import { authorisedServices, classifyFinding, exemptTally, failingSignatures, failingSources, forwarderExemptions } from './senders.js';
import type { AnalysisInput, AnalysisSettings, Finding, NewFailingSum, OpenAlert, Severity } from './types.js';

/**
 * The drift rules. Each reads the daily rollups and the windows and returns findings; none does
 * I/O. Every finding belongs to one policy domain, so the rules give the same findings whether
 * they see one domain at a time or all at once. Thresholds come from AnalysisSettings ([analysis]
 * in the config); docs/findings.md explains each. Ties are broken by name, so the order rows come
 * in never changes a finding.
 */

export function pct(r: number | null): string {
  return r === null ? '-' : `${(r * 100).toFixed(1)}%`;
}

export function num(n: number): string {
  return Math.round(n).toLocaleString('en-US');
}

const round = (n: number, digits = 1) => Math.round(n * 10 ** digits) / 10 ** digits;

interface SourceStats {
  domain: string;
  ip: string;
  base: Tally;
  recent: Tally;
  /**
   * Recent DKIM results of this source, per "d/s": weighted counts by result word. Filled only
   * for the sources a finding is about (withDkim): a domain can have hundreds of thousands.
   */
  dkimRecent: Map<string, Map<string, number>>;
  /** The single days from Windows.daily on. */
  days: Map<number, Tally>;
  /** The days a finding about it judged, and its tally over them (the recent days when unset). */
  cause?: { win: Window; t: Tally };
  headerFroms: string[];
}

function selectorLabel(key: string): string {
  const [d, s] = key.split('/');
  return `DKIM ${s || '(no selector)'} (${d || 'no domain'})`;
}

/**
 * Why a source fails, from its auth results over the days a finding is about (st.cause):
 * "DKIM s1 (example.com) fails; SPF not aligned".
 */
function failureCause(st: SourceStats): string {
  const t = st.cause?.t ?? st.recent;
  const parts: string[] = [];
  const failing: [string, number][] = [];
  let signatures = 0;
  for (const [sel, results] of st.dkimRecent) {
    let pass = 0;
    let fail = 0;
    for (const [word, n] of results) {
      if (word === 'pass') pass += n;
      else fail += n;
    }
    signatures += pass + fail;
    if (fail > pass) failing.push([sel, fail]);
  }
  failing.sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]));
  if (signatures === 0) parts.push('no DKIM signature');
  for (const [sel] of failing.slice(0, 2)) parts.push(`${selectorLabel(sel)} fails`);
  if (failing.length === 0 && signatures > 0 && t.dkimAlignedPass < judged(t) / 2) parts.push('DKIM not aligned');
  if (t.spfAlignedPass < judged(t) / 2) parts.push('SPF not aligned');
  return parts.join(', ');
}

function sourceStats(input: AnalysisInput, w: Windows): Map<string, SourceStats> {
  const out = new Map<string, SourceStats>();
  const forwarders = input.senders ? forwarderExemptions(input.senders, failingSources(input.sources)) : NO_IPS;
  for (const row of input.sources) {
    const r = forwarders.has(row.sourceIp) ? exemptTally(row) : row;
    const inBase = inWindow(r.day, w.baseline);
    const inRecent = inWindow(r.day, w.recent);
    if (!inBase && !inRecent) continue;
    const key = `${r.domain}\0${r.sourceIp}`;
    let st = out.get(key);
    if (!st) {
      st = {
        domain: r.domain,
        ip: r.sourceIp,
        base: emptyTally(),
        recent: emptyTally(),
        days: NO_DAYS,
        dkimRecent: NO_DKIM,
        headerFroms: [],
      };
      out.set(key, st);
    }
    if (inBase) mergeTally(st.base, r);
    if (inRecent) {
      mergeTally(st.recent, r);
      if (r.day >= w.daily) {
        // Most sources of a large domain send on a day or two: no map for those that do not.
        if (st.days === NO_DAYS) st.days = new Map();
        const t = st.days.get(r.day) ?? emptyTally();
        mergeTally(t, r);
        st.days.set(r.day, t);
      }
      if (r.headerFrom && !st.headerFroms.includes(r.headerFrom)) st.headerFroms.push(r.headerFrom);
    }
  }
  return out;
}

const NO_DAYS: Map<number, Tally> = new Map();
const EMPTY: Readonly<Tally> = Object.freeze(emptyTally());

/** The tally of the single days (Windows.daily on) that fall in a window (not to be changed). */
function over(days: Map<number, Tally>, win: Window): Tally {
  if (days.size === 0) return EMPTY;
  const t = emptyTally();
  for (const [day, x] of days) if (inWindow(day, win)) mergeTally(t, x);
  return t;
}

const NO_DKIM = new Map<string, Map<string, number>>();
const NO_IPS = new Set<string>();

/** Fills the DKIM results of the given sources (by "domain\0ip" key) over the days their finding judged. */
function withDkim(input: AnalysisInput, w: Windows, sources: Map<string, SourceStats>): void {
  if (sources.size === 0) return;
  for (const d of input.dkim) {
    const st = sources.get(`${d.domain}\0${d.sourceIp}`);
    if (!st || !inWindow(d.day, st.cause?.win ?? w.recent)) continue;
    if (st.dkimRecent === NO_DKIM) st.dkimRecent = new Map();
    const sel = `${d.signingDomain}/${d.selector}`;
    const m = st.dkimRecent.get(sel) ?? new Map<string, number>();
    m.set(d.result, (m.get(d.result) ?? 0) + d.messages);
    st.dkimRecent.set(sel, m);
  }
}

function policyOf(input: AnalysisInput, domain: string, w: Windows): string | null {
  // The policy most reports saw on the latest day that has one decides how bad a failing source is.
  let best: { day: number; weight: number; policy: string; p: string } | null = null;
  for (const p of input.policies) {
    if (p.domain !== domain || p.day >= w.recent.to) continue;
    if (
      !best ||
      p.day > best.day ||
      (p.day === best.day && (p.weight > best.weight || (p.weight === best.weight && p.policy < best.policy)))
    ) {
      best = { day: p.day, weight: p.weight, policy: p.policy, p: p.published.p };
    }
  }
  return best?.p ?? null;
}

/** A number an open alert's frozen baseline holds, or null. */
function frozenNumber(a: OpenAlert | undefined, field: string): number | null {
  const v = a?.baseline[field];
  return typeof v === 'number' && Number.isFinite(v) ? v : null;
}

/**
 * The first day an open alert may be judged on: the day it opened when failure reports opened it
 * (the aggregate reports of the days before knew nothing of it), else any.
 */
function judgeFrom(a: OpenAlert): number {
  return frozenNumber(a, 'judge_from') ?? -Infinity;
}

/** What a pass-rate alert is about: the baseline it is judged against and the window that shows the fall. */
interface Judged {
  before: number;
  now: number;
  t: Tally;
  /** Days the numbers cover; 0 when no report has covered the alert's days yet. */
  days: number;
}

/**
 * Whether a source's (or a domain's) pass rate fell, and over which days. A new fall opens on the
 * recent days (7), or on the last two days when both fell, or on the last day alone when it
 * failed nearly completely: a total failure is paged the day after it starts, while a one-day dip
 * that recovers is not. An open alert is judged against its frozen baseline: it stays open until
 * the latest days are back within recoverPoints of that baseline, or the source has sent nothing
 * for quietDays; never because the failing days moved into the baseline.
 */
function judgeDrop(base: Tally, recent: Tally, days: Map<number, Tally>, w: Windows, s: AnalysisSettings, open?: OpenAlert): Judged | null {
  if (open) {
    const frozen = frozenNumber(open, 'baseline_pass_rate');
    const before = frozen !== null ? frozen / 100 : passRate(base);
    if (before === null) return null;
    const from = judgeFrom(open);
    const latest = over(days, { from: Math.max(w.latest.from, from), to: w.latest.to });
    if (from <= w.quiet.from && judged(over(days, w.quiet)) <= 0) return null; // silent for quietDays
    const lr = passRate(latest);
    if (lr !== null && lr >= before - s.recoverPoints) return null; // recovered
    if (lr !== null) return { before, now: lr, t: latest, days: s.latestDays };
    const rr = passRate(recent);
    if (rr !== null && from <= w.recent.from) return { before, now: rr, t: recent, days: s.recentDays };
    return {
      before,
      now: (frozenNumber(open, 'judged_pass_rate') ?? frozenNumber(open, 'recent_pass_rate') ?? 0) / 100,
      t: emptyTally(),
      days: 0,
    };
  }
  const before = passRate(base);
  if (before === null || judged(base) < s.dropMinMessages || before < s.dropMinBaselineRate) return null;
  const fell = (r: number | null): r is number => r !== null && r <= before - s.dropPoints;
  const now = passRate(recent);
  // What would resolve an open alert keeps one from opening: the latest days back near the baseline.
  const lr = passRate(over(days, w.latest));
  const recovered = lr !== null && lr >= before - s.recoverPoints;
  if (fell(now) && judged(recent) >= s.dropMinMessages && !recovered) return { before, now, t: recent, days: s.recentDays };
  const last = over(days, w.last);
  const previous = over(days, { from: w.last.from - 1, to: w.last.from });
  const two = over(days, { from: w.last.from - 1, to: w.last.to });
  const twoRate = passRate(two);
  if (fell(passRate(last)) && fell(passRate(previous)) && twoRate !== null && judged(two) >= s.dropMinMessages) {
    return { before, now: twoRate, t: two, days: 2 };
  }
  const lastRate = passRate(last);
  if (lastRate !== null && judged(last) >= s.dropMinMessages && lastRate <= s.fastMaxPassRate)
    return { before, now: lastRate, t: last, days: 1 };
  return null;
}

const overDays = (n: number) => (n === 1 ? 'on the last day' : n === 0 ? 'since failure reports began' : `in the last ${n} days`);

/** pass_rate_drop per source and per domain, and new_failing_source. */
export function passRateFindings(input: AnalysisInput, w: Windows, s: AnalysisSettings): Finding[] {
  const out: Finding[] = [];
  const stats = sourceStats(input, w);
  const flagged = new Set<string>();
  const domainBase = new Map<string, number>();
  for (const st of stats.values()) domainBase.set(st.domain, (domainBase.get(st.domain) ?? 0) + st.base.messages);
  const rest = restOf(input, w);
  for (const [domain, r] of rest) domainBase.set(domain, (domainBase.get(domain) ?? 0) + r.base.messages + (r.fresh?.base.messages ?? 0));
  const days = s.recentDays;
  // Findings are made once the DKIM results of their sources are known (withDkim).
  const pending: { st: SourceStats; make: (cause: string) => Finding }[] = [];
  const bursts = failureBursts(input, w, s);

  for (const [key, st] of stats) {
    const who = mention(st.ip);
    const dropKey = `pass_rate_drop:${st.domain}:${st.ip}`;
    const open = input.open?.get(dropKey);
    let j = judgeDrop(st.base, st.recent, st.days, w, s, open);
    const known = st.base.dmarcPass >= s.knownMinPassing;
    const burst = bursts.get(`${st.domain}\0${st.ip}`);
    const before = passRate(st.base);
    // Failure reports about a known, passing source: the fast signal, before any aggregate report.
    const burstOpens =
      !j && burst !== undefined && known && before !== null && before >= s.dropMinBaselineRate && burst >= s.failureMinReports;
    if (!j && burstOpens) {
      const b = open ? (frozenNumber(open, 'baseline_pass_rate') ?? before * 100) / 100 : before;
      j = {
        before: b,
        now: open ? (frozenNumber(open, 'judged_pass_rate') ?? frozenNumber(open, 'recent_pass_rate') ?? 0) / 100 : b,
        t: emptyTally(),
        days: 0,
      };
    }
    if (j) {
      const { before: was, now, t } = j;
      const fromFailures = j.days === 0;
      const judgeFromDay = open ? frozenNumber(open, 'judge_from') : fromFailures ? w.last.to : null;
      if (j.days > 0 && j.days < s.recentDays) st.cause = { win: lastDays(w.recent.to * DAY, j.days), t };
      flagged.add(key);
      pending.push({
        st,
        make: (cause) => ({
          key: dropKey,
          kind: 'pass_rate_drop',
          // Failure reports still arriving about a source whose drop is already judged (a burst
          // since yesterday on top of the aggregate reports' figures): it is getting worse now, so
          // critical, which a reminder then says (severity up).
          severity: fromFailures
            ? (open?.severity ?? 'warning')
            : now < 0.5 || (open !== undefined && burst !== undefined && burst >= s.failureMinReports)
              ? 'critical'
              : 'warning',
          domain: st.domain,
          source_ip: st.ip,
          source_name: null,
          reporter: null,
          summary: fromFailures
            ? `${num(burst ?? 0)} failure reports since yesterday say mail from ${who} for ${st.domain} fails DMARC; it passed ${pct(was)} before${cause ? `; ${cause}` : ''}`
            : `mail from ${who} for ${st.domain} passing DMARC fell from ${pct(was)} to ${pct(now)} over ${num(judged(t))} messages ${overDays(j.days)}${cause ? `; ${cause}` : ''}`,
          details: {
            baseline_pass_rate: round(was * 100),
            // recent_*: the recent days (recent_days), as ever; judged_*: the days the finding is about.
            recent_pass_rate: round((passRate(st.recent) ?? now) * 100),
            baseline_messages: open ? (frozenNumber(open, 'baseline_messages') ?? 0) : Math.round(judged(st.base)),
            recent_messages: Math.round(judged(st.recent)),
            judged_pass_rate: round(now * 100),
            judged_messages: Math.round(judged(t)),
            window_days: j.days,
            ...(burst !== undefined ? { failure_reports: burst } : {}),
            ...(judgeFromDay !== null ? { judge_from: judgeFromDay } : {}),
            cause,
          },
        }),
      });
      continue;
    }
    // "New" means not known: a few stray messages in the baseline do not make a source known.
    const newKey = `new_failing_source:${st.domain}:${st.ip}`;
    const openNew = input.open?.get(newKey) ?? input.open?.get(`new_failing_source:${st.domain}`);
    const quiet = over(st.days, w.quiet);
    const failingLately = judged(quiet) - quiet.dmarcPass >= 1;
    const now = passRate(st.recent);
    const watched = (domainBase.get(st.domain) ?? 0) >= s.dropMinMessages;
    const opens =
      !openNew &&
      failingLately &&
      watched &&
      !known &&
      now !== null &&
      judged(st.recent) >= s.newSourceMinMessages &&
      now <= s.newSourceMaxPassRate;
    // An open one stays open while the source keeps sending failing mail.
    const carries = openNew !== undefined && !known && now !== null && failingLately;
    if (opens || carries) {
      flagged.add(key);
      const p = policyOf(input, st.domain, w);
      const fate =
        st.recent.reject + st.recent.quarantine > 0
          ? `; receivers rejected ${num(st.recent.reject)} and quarantined ${num(st.recent.quarantine)}`
          : '; receivers delivered them';
      pending.push({
        st,
        make: (cause) => ({
          key: newKey,
          kind: 'new_failing_source',
          // Under p=none spoofed mail is delivered; under quarantine/reject it is stopped, but a real
          // sender that was never set up is losing mail either way.
          severity: p === 'none' || p === null ? 'critical' : 'warning',
          domain: st.domain,
          source_ip: st.ip,
          source_name: null,
          reporter: null,
          summary: `new source ${who} sent ${num(judged(st.recent))} messages as ${[...st.headerFroms].sort().slice(0, 3).join(', ') || st.domain} in the last ${days} days, ${pct(now)} passing DMARC${cause ? ` (${cause})` : ''}${fate}`,
          details: {
            recent_pass_rate: round(now * 100),
            recent_messages: Math.round(judged(st.recent)),
            policy: p,
            cause,
            rejected: Math.round(st.recent.reject),
            quarantined: Math.round(st.recent.quarantine),
          },
        }),
      });
    }
  }
  withDkim(input, w, new Map(pending.map((p) => [`${p.st.domain}\0${p.st.ip}`, p.st])));
  const held = authorisedServices(stats.values(), input.senders);
  const authorised = (domain: string, id: string) => rest.get(domain)?.services.has(id) === true || held(domain, id);
  for (const p of pending) out.push(classifyFinding(p.make(failureCause(p.st)), input.senders, authorised));
  // New failing sources summed with a domain's rest (store/analysis.ts): judged as the loop above
  // judges one (for a watched domain, or carrying a run open as one finding), with the severity
  // its policy gives.
  const summed = new Map<string, { sum: NewFailingSum; severity: Severity }>();
  for (const r of input.rest ?? []) {
    const watched = (domainBase.get(r.domain) ?? 0) >= s.dropMinMessages;
    if (!r.newFailing || (!watched && !input.open?.has(`new_failing_source:${r.domain}`))) continue;
    const p = policyOf(input, r.domain, w);
    summed.set(r.domain, { sum: r.newFailing, severity: p === 'none' || p === null ? 'critical' : 'warning' });
  }
  collapseNewSources(out, s, days, input, summed);

  // A domain-wide drop that the flagged sources do not explain: many small failing sources, or a
  // change that hits every sender at once.
  type DomainSum = { base: Tally; recent: Tally; days: Map<number, Tally>; failing: Map<string, number> };
  const domains = new Map<string, DomainSum>();
  /** Adds a source's (or the summed sources') windows to its domain's. */
  const addTo = (domain: string, x: { base: Tally; recent: Tally; days: Map<number, Tally> }): DomainSum => {
    let d = domains.get(domain);
    if (!d) domains.set(domain, (d = { base: emptyTally(), recent: emptyTally(), days: new Map<number, Tally>(), failing: new Map() }));
    mergeTally(d.base, x.base);
    mergeTally(d.recent, x.recent);
    for (const [day, t] of x.days) {
      const y = d.days.get(day) ?? emptyTally();
      mergeTally(y, t);
      d.days.set(day, y);
    }
    return d;
  };
  for (const [key, st] of stats) {
    if (flagged.has(key)) continue;
    const d = addTo(st.domain, st);
    const fails = judged(st.recent) - st.recent.dmarcPass;
    if (fails > 0) d.failing.set(st.ip, fails);
  }
  // The sources summed (a domain with more than are held one by one): only their most failing are named.
  const unnamed = new Map<string, number>();
  for (const [domain, r] of rest) {
    const d = addTo(domain, r);
    for (const [ip, n] of r.top) d.failing.set(ip, n);
    let more = r.failing - r.top.length;
    // New failing sources summed apart but not judged (a domain not watched): back in the sums.
    if (r.fresh && !summed.has(domain)) {
      addTo(domain, r.fresh);
      for (const [ip, n] of r.fresh.failingTop) d.failing.set(ip, n);
      more += r.fresh.sources - r.fresh.failingTop.length;
    }
    unnamed.set(domain, more);
  }
  for (const [domain, d] of domains) {
    const key = `pass_rate_drop:${domain}`;
    const j = judgeDrop(d.base, d.recent, d.days, w, s, input.open?.get(key));
    if (!j) continue;
    const { before, now, t } = j;
    const failing = [...d.failing].sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]));
    const top = failing.slice(0, 3).map(([ip, n]) => `${mention(ip)} ${num(n)}`);
    const failingSources = d.failing.size + (unnamed.get(domain) ?? 0);
    out.push({
      key,
      kind: 'pass_rate_drop',
      severity: now < 0.5 ? 'critical' : 'warning',
      domain,
      source_ip: null,
      source_name: null,
      reporter: null,
      summary: `mail for ${domain} passing DMARC fell from ${pct(before)} to ${pct(now)} over ${num(judged(t))} messages ${overDays(j.days)}; failing from ${failingSources} ${failingSources === 1 ? 'source' : 'sources'} (most: ${top.join(', ')})`,
      details: {
        baseline_pass_rate: round(before * 100),
        recent_pass_rate: round((passRate(d.recent) ?? now) * 100),
        baseline_messages: Math.round(judged(d.base)),
        recent_messages: Math.round(judged(d.recent)),
        judged_pass_rate: round(now * 100),
        judged_messages: Math.round(judged(t)),
        window_days: j.days,
        failing_sources: failingSources,
        source_ips: failing.slice(0, 20).map(([ip]) => ip),
      },
    });
  }
  return out;
}

/** The summed sources of each domain (AnalysisInput.rest) over the windows, as sourceStats() sums a source. */
type Summed = { base: Tally; recent: Tally; days: Map<number, Tally> };
type RestSum = Summed & {
  top: [string, number][];
  failing: number;
  services: Set<string>;
  /** The new failing sources summed apart (SourceRest.newFailing), summed the same way. */
  fresh: (Summed & { sources: number; failingTop: [string, number][] }) | null;
};

function restOf(input: AnalysisInput, w: Windows): Map<string, RestSum> {
  const out = new Map<string, RestSum>();
  for (const r of input.rest ?? []) {
    const nf = r.newFailing;
    out.set(r.domain, {
      ...summedDays(r.days, w),
      top: r.top,
      failing: r.failing,
      services: new Set(r.services),
      fresh: nf ? { ...summedDays(nf.days, w), sources: nf.sources, failingTop: nf.failingTop } : null,
    });
  }
  return out;
}

/** Tallies per day over the windows, as sourceStats() sums a source. */
function summedDays(list: (Tally & { day: number })[], w: Windows): Summed {
  const x = { base: emptyTally(), recent: emptyTally(), days: new Map<number, Tally>() };
  for (const t of list) {
    if (inWindow(t.day, w.baseline)) mergeTally(x.base, t);
    if (!inWindow(t.day, w.recent)) continue;
    mergeTally(x.recent, t);
    if (t.day >= w.daily) {
      const d = x.days.get(t.day) ?? emptyTally();
      mergeTally(d, t);
      x.days.set(t.day, d);
    }
  }
  return x;
}

/** Failure reports per "domain\0source IP" received over the last whole day and the current one. */
function failureBursts(input: AnalysisInput, w: Windows, s: AnalysisSettings): Map<string, number> {
  const out = new Map<string, number>();
  if (!input.failures?.length) return out;
  for (const f of input.failures) {
    if (f.day < w.last.from || f.day > w.last.to || !f.sourceIp) continue;
    const k = `${f.domain}\0${f.sourceIp}`;
    out.set(k, (out.get(k) ?? 0) + f.reports);
  }
  for (const [k, n] of out) if (n < s.failureMinReports) out.delete(k);
  return out;
}

/**
 * A spoofing run from a botnet shows up as hundreds of new sources at once: past
 * newSourceMaxFindings for a domain they become one finding for the domain, naming the largest,
 * instead of a page per IP.
 */
function collapseNewSources(
  out: Finding[],
  s: AnalysisSettings,
  days: number,
  input: AnalysisInput,
  summed: Map<string, { sum: NewFailingSum; severity: Severity }>,
): void {
  const byDomain = new Map<string, Finding[]>();
  for (const f of out) if (f.kind === 'new_failing_source') byDomain.set(f.domain, [...(byDomain.get(f.domain) ?? []), f]);
  for (const domain of summed.keys()) if (!byDomain.has(domain)) byDomain.set(domain, []);
  for (const [domain, list] of byDomain) {
    // Once folded, a run stays one finding while any of its sources goes on. New failing sources
    // summed rather than judged one by one (a domain with more sources to judge than are held)
    // are such a run too, however few are held.
    const folded = input.open?.has(`new_failing_source:${domain}`) && !list.some((f) => input.open?.has(f.key));
    const more = summed.get(domain);
    if (list.length <= s.newSourceMaxFindings && !folded && !more) continue;
    const n = (f: Finding, k: string) => Number(f.details[k] ?? 0);
    const all: [string, number][] = list.map((f) => [f.source_ip!, n(f, 'recent_messages')]);
    if (more) all.push(...more.sum.top);
    all.sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]));
    const sources = list.length + (more?.sum.sources ?? 0);
    const messages = list.reduce((t, f) => t + n(f, 'recent_messages'), 0) + (more?.sum.messages ?? 0);
    const rejected = list.reduce((t, f) => t + n(f, 'rejected'), 0) + (more?.sum.rejected ?? 0);
    const quarantined = list.reduce((t, f) => t + n(f, 'quarantined'), 0) + (more?.sum.quarantined ?? 0);
    const top = all.slice(0, 5).map(([ip, m]) => `${mention(ip)} ${num(m)}`);
    for (const f of list) out.splice(out.indexOf(f), 1);
    out.push({
      key: `new_failing_source:${domain}`,
      kind: 'new_failing_source',
      severity: list.some((f) => f.severity === 'critical') || more?.severity === 'critical' ? 'critical' : 'warning',
      domain,
      source_ip: null,
      source_name: null,
      reporter: null,
      summary:
        `${num(sources)} new sources sent ${num(messages)} messages failing DMARC as ${domain} in the last ${days} days (most: ${top.join(', ')}); receivers rejected ${num(rejected)} and quarantined ${num(quarantined)}` +
        (more ? `; ${num(more.sum.sources)} of them judged from their sums, more sources than are judged one by one` : ''),
      details: {
        sources,
        recent_messages: messages,
        rejected,
        quarantined,
        source_ips: all.slice(0, 20).map(([ip]) => ip),
        ...(more ? { sources_not_judged: more.sum.sources } : {}),
      },
    });
  }
}

const DKIM_HINTS: Record<string, string> = {
  permerror: 'the key record is missing or broken in DNS',
  temperror: 'DNS lookups of the key fail',
  fail: 'signatures no longer verify (key rotated without DNS, or the signer changed)',
  neutral: 'signatures no longer verify',
  policy: 'receivers refuse the signature (key too short?)',
  none: 'mail is no longer signed with it',
};

/**
 * dkim_selector_broken: a (signing domain, selector) that passed now fails. Judged only on the
 * (source, selector) pairs that passed in the baseline: a spoofer forging the selector never
 * passed with it, so it neither raises the finding nor, once its failures reach the baseline,
 * masks a real break. Forwarded and list mail, which breaks signatures by nature, is left out.
 * Opens on the recent days, on the last two days when both fail, or on the last day when it fails
 * nearly completely; an open one is judged against its frozen baseline (judgeDrop's rules).
 */
export function dkimFindings(input: AnalysisInput, w: Windows, s: AnalysisSettings): Finding[] {
  type Counts = { pass: number; all: number };
  // A large domain has hundreds of thousands of pairs, most seen once: the maps come when needed.
  type Pair = {
    base: Counts;
    recent: Counts;
    days?: Map<number, Counts>;
    results?: Map<string, number>;
    /** Failed results per single day (Windows.daily on), by result word. */
    dayResults?: Map<number, Map<string, number>>;
  };
  const pairs = new Map<string, Map<string, Pair>>(); // selector key -> source IP -> pair
  const add = (c: Counts, n: number, pass: boolean) => {
    c.all += n;
    if (pass) c.pass += n;
  };
  // Known forwarders' signatures join the forwarded exemption (senders.ts).
  const forwarders = input.senders ? forwarderExemptions(input.senders, failingSignatures(input.dkim)) : NO_IPS;
  for (const r of input.dkim) {
    if (!r.signingDomain || forwarders.has(r.sourceIp)) continue;
    const inBase = inWindow(r.day, w.baseline);
    const inRecent = inWindow(r.day, w.recent);
    if (!inBase && !inRecent) continue;
    const key = `dkim_selector_broken:${r.domain}:${r.signingDomain}:${r.selector}`;
    const m = pairs.get(key) ?? new Map<string, Pair>();
    pairs.set(key, m);
    let p = m.get(r.sourceIp);
    if (!p) {
      p = { base: { pass: 0, all: 0 }, recent: { pass: 0, all: 0 } };
      m.set(r.sourceIp, p);
    }
    const pass = r.result === 'pass';
    if (inBase) add(p.base, r.messages, pass);
    else {
      add(p.recent, r.messages, pass);
      if (!pass) {
        p.results ??= new Map();
        p.results.set(r.result, (p.results.get(r.result) ?? 0) + r.messages);
      }
      if (r.day >= w.daily) {
        p.days ??= new Map();
        const c = p.days.get(r.day) ?? { pass: 0, all: 0 };
        add(c, r.messages, pass);
        p.days.set(r.day, c);
        if (!pass) {
          p.dayResults ??= new Map();
          const m = p.dayResults.get(r.day) ?? new Map<string, number>();
          m.set(r.result, (m.get(r.result) ?? 0) + r.messages);
          p.dayResults.set(r.day, m);
        }
      }
    }
  }
  const bursts = new Map<string, number>(); // selector key -> failure reports from its known sources
  const out: Finding[] = [];
  for (const [key, m] of pairs) {
    const [, domain, d, sel] = key.split(':') as [string, string, string, string];
    const open = input.open?.get(key);
    const frozenKnown = new Set(Array.isArray(open?.baseline.known_sources) ? (open.baseline.known_sources as string[]) : []);
    const known = [...m].filter(([ip, p]) => (p.base.pass > 0 && p.base.pass >= p.base.all / 2) || frozenKnown.has(ip));
    if (known.length === 0) continue;
    const knownIps = new Set(known.map(([ip]) => ip));
    const base = { pass: 0, all: 0 };
    const recent = { pass: 0, all: 0 };
    const days = new Map<number, Counts>();
    const results = new Map<string, number>();
    const dayResults = new Map<number, Map<string, number>>();
    const ips = new Map<string, number>();
    for (const [ip, p] of known) {
      add(base, p.base.all, false);
      base.pass += p.base.pass;
      add(recent, p.recent.all, false);
      recent.pass += p.recent.pass;
      for (const [day, c] of p.days ?? []) {
        const x = days.get(day) ?? { pass: 0, all: 0 };
        x.pass += c.pass;
        x.all += c.all;
        days.set(day, x);
      }
      for (const [r, n] of p.results ?? []) results.set(r, (results.get(r) ?? 0) + n);
      for (const [day, m] of p.dayResults ?? []) {
        const x = dayResults.get(day) ?? new Map<string, number>();
        for (const [r, n] of m) x.set(r, (x.get(r) ?? 0) + n);
        dayResults.set(day, x);
      }
      const failed = p.recent.all - p.recent.pass;
      if (failed > 0) ips.set(ip, failed);
    }
    for (const f of input.failures ?? []) {
      if (f.domain !== domain || f.dkimDomain !== d || f.dkimSelector !== sel || f.day < w.last.from) continue;
      if (!knownIps.has(f.sourceIp)) continue;
      bursts.set(key, (bursts.get(key) ?? 0) + f.reports);
      // A source the failure reports name is one it fails from, before any aggregate report says so.
      if (!ips.has(f.sourceIp)) ips.set(f.sourceIp, 0);
    }
    const sum = (win: Window) => {
      const c = { pass: 0, all: 0 };
      for (const [day, x] of days) {
        if (!inWindow(day, win)) continue;
        c.pass += x.pass;
        c.all += x.all;
      }
      return c;
    };
    const rate = (c: Counts) => (c.all > 0 ? c.pass / c.all : null);
    let j: { before: number; now: number; c: Counts; days: number } | null = null;
    const burst = bursts.get(key) ?? 0;
    if (open) {
      const frozen = frozenNumber(open, 'baseline_pass_rate');
      const before = frozen !== null ? frozen / 100 : (rate(base) ?? 1);
      const from = judgeFrom(open);
      const latest = sum({ from: Math.max(w.latest.from, from), to: w.latest.to });
      const lr = rate(latest);
      const silent = from <= w.quiet.from && sum(w.quiet).all <= 0;
      const recovered = lr !== null && lr >= before - s.recoverPoints;
      if (!silent && !recovered) {
        const rr = rate(recent);
        j =
          lr !== null
            ? { before, now: lr, c: latest, days: s.latestDays }
            : rr !== null && from <= w.recent.from
              ? { before, now: rr, c: recent, days: s.recentDays }
              : {
                  before,
                  now: (frozenNumber(open, 'judged_pass_rate') ?? frozenNumber(open, 'recent_pass_rate') ?? 0) / 100,
                  c: { pass: 0, all: 0 },
                  days: 0,
                };
      }
    } else {
      const before = rate(base);
      if (before !== null && base.all >= s.dkimMinSignatures && before >= s.dkimMinBaselineRate) {
        const bad = (c: Counts) => c.all > 0 && c.pass / c.all <= s.dkimMaxPassRate;
        const last = sum(w.last);
        const two = sum({ from: w.last.from - 1, to: w.last.to });
        const lr = rate(sum(w.latest));
        const recovered = lr !== null && lr >= before - s.recoverPoints;
        if (recent.all >= s.dkimMinSignatures && bad(recent) && !recovered)
          j = { before, now: rate(recent)!, c: recent, days: s.recentDays };
        else if (two.all >= s.dkimMinSignatures && bad(last) && bad(sum({ from: w.last.from - 1, to: w.last.from })))
          j = { before, now: rate(two)!, c: two, days: 2 };
        else if (last.all >= s.dkimMinSignatures && rate(last)! <= s.fastMaxPassRate) j = { before, now: rate(last)!, c: last, days: 1 };
        else if (burst >= s.failureMinReports) j = { before, now: before, c: { pass: 0, all: 0 }, days: 0 };
      }
    }
    if (!j) continue;
    const { before, now, c } = j;
    // The results over the days the finding judged.
    let shown = results;
    if (j.days > 0 && j.days < s.recentDays) {
      const win = lastDays(w.recent.to * DAY, j.days);
      shown = new Map();
      for (const [day, m] of dayResults) if (inWindow(day, win)) for (const [r, n] of m) shown.set(r, (shown.get(r) ?? 0) + n);
    }
    const sorted = [...shown].sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]));
    const top = sorted[0]?.[0] ?? 'fail';
    const byFailed = [...ips].sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0])).map(([ip]) => ip);
    const knownTop = known
      .sort((a, b) => b[1].base.all - a[1].base.all || a[0].localeCompare(b[0]))
      .slice(0, 50)
      .map(([ip]) => ip);
    const seen = byFailed.slice(0, 3).map(mention);
    const judgeFromDay = open ? frozenNumber(open, 'judge_from') : j.days === 0 ? w.last.to : null;
    out.push({
      key,
      kind: 'dkim_selector_broken',
      severity: 'critical',
      domain,
      source_ip: null,
      source_name: null,
      reporter: null,
      summary:
        j.days === 0
          ? `${num(burst)} failure reports since yesterday say DKIM selector ${sel || '(none)'}._domainkey.${d} fails from sources where it passed ${pct(before)} before`
          : `DKIM selector ${sel || '(none)'}._domainkey.${d} passed ${pct(before)} of ${num(open ? (frozenNumber(open, 'baseline_signatures') ?? base.all) : base.all)} signatures, now ${pct(now)} of ${num(c.all)} ${j.days === s.recentDays ? '' : `${overDays(j.days)} `}(${sorted.map(([r, n]) => `${r} ${num(n)}`).join(', ')}): ${DKIM_HINTS[top] ?? 'signatures fail'}${seen.length ? `; seen from ${seen.join(', ')}` : ''}`,
      details: {
        signing_domain: d,
        selector: sel,
        baseline_pass_rate: round(before * 100),
        recent_pass_rate: round((rate(recent) ?? now) * 100),
        baseline_signatures: open ? (frozenNumber(open, 'baseline_signatures') ?? Math.round(base.all)) : Math.round(base.all),
        recent_signatures: Math.round(recent.all),
        judged_pass_rate: round(now * 100),
        judged_signatures: Math.round(c.all),
        window_days: j.days,
        result: top,
        source_ips: byFailed,
        known_sources: open && frozenKnown.size ? [...frozenKnown] : knownTop,
        ...(burst ? { failure_reports: burst } : {}),
        ...(judgeFromDay !== null ? { judge_from: judgeFromDay } : {}),
      },
    });
  }
  return out;
}

/** Whether a DKIM signing domain is the policy domain, or one is a subdomain of the other (relaxed alignment, RFC 7489 section 3.1.1, without the public suffix list). */
function alignedWith(signingDomain: string, domain: string): boolean {
  return signingDomain === domain || signingDomain.endsWith(`.${domain}`) || domain.endsWith(`.${signingDomain}`);
}

/**
 * One incident, one alert: when a DKIM key of the domain breaks, the sources signing with it fail
 * DMARC (unless SPF aligns), and each used to raise a pass_rate_drop beside the selector's
 * dkim_selector_broken: a broken CRM key gave two alerts and four messages. A source's drop is
 * left out when a selector finding of the same domain, on an aligned signing domain, fails from
 * that source; the selector's finding names it instead ("it breaks DMARC for mail from ...",
 * `dmarc_failing_sources`). A drop already open is kept as it is, so folding never resolves an
 * alert; once the selector recovers, a source still failing for another reason opens its own.
 */
export function foldSelectorDrops(drops: Finding[], dkim: Finding[], open: Map<string, OpenAlert> | undefined): Finding[] {
  const selectorOf = new Map<string, Finding>(); // domain \0 source IP -> the selector finding failing from it
  for (const f of dkim) {
    const signing = f.details.signing_domain;
    const ips = f.details.source_ips;
    if (f.kind !== 'dkim_selector_broken' || typeof signing !== 'string' || !Array.isArray(ips) || !alignedWith(signing, f.domain))
      continue;
    for (const ip of ips) if (!selectorOf.has(`${f.domain}\0${ip}`)) selectorOf.set(`${f.domain}\0${ip}`, f);
  }
  if (selectorOf.size === 0) return drops;
  const folded = new Map<Finding, Finding[]>();
  const out: Finding[] = [];
  for (const d of drops) {
    const sel =
      d.kind === 'pass_rate_drop' && d.source_ip !== null && !open?.has(d.key) ? selectorOf.get(`${d.domain}\0${d.source_ip}`) : undefined;
    if (!sel) {
      out.push(d);
      continue;
    }
    const list = folded.get(sel) ?? [];
    list.push(d);
    folded.set(sel, list);
  }
  for (const [sel, list] of folded) {
    list.sort((a, b) => a.source_ip!.localeCompare(b.source_ip!));
    const rates = (d: Finding) => {
      const before = d.details.baseline_pass_rate;
      const now = d.details.judged_pass_rate;
      return typeof before === 'number' && typeof now === 'number' && d.details.window_days !== 0
        ? `${before.toFixed(1)}% -> ${now.toFixed(1)}% passing`
        : '';
    };
    const one = list.length === 1 ? list[0]! : null;
    if (one && sel.summary.endsWith(`seen from ${mention(one.source_ip!)}`)) {
      // The message already names the one source: say what it does to its DMARC there.
      sel.summary += rates(one) ? `, where it breaks DMARC (${rates(one)})` : ', where it breaks DMARC';
    } else {
      const shown = list.slice(0, 3).map((d) => `${mention(d.source_ip!)}${rates(d) ? ` (${rates(d)})` : ''}`);
      const more = list.length > shown.length ? ` and ${list.length - shown.length} more` : '';
      sel.summary += `; it breaks DMARC for mail from ${shown.join(', ')}${more}`;
    }
    sel.details.dmarc_failing_sources = list.map((d) => d.source_ip!);
  }
  return out;
}

/**
 * tls_failures: failed TLS sessions per (policy domain, MX, result type) over the latest window,
 * as a share of that MX's sessions (successful sessions, which RFC 8460 counts per policy, are
 * shared out evenly over the policy's MX hosts). Critical from half the sessions; an open critical
 * one stays critical until the share falls under 40%, so a share hovering around 50% does not flip
 * the severity back and forth. An open one resolves when the share falls under half of
 * tlsMinFailureRate, or when the MX's sessions in the latest window all succeeded that way; while
 * no report mentions the MX at all, it stays open.
 */
export function tlsFindings(input: AnalysisInput, w: Windows, s: AnalysisSettings): Finding[] {
  // Sessions per domain and MX; '*' holds successes no MX was named for (older rollups, or a policy
  // without MX hosts), shared out evenly over the MX hosts seen for the domain.
  const perMx = new Map<string, Map<string, number>>();
  for (const t of input.tls) {
    if (!inWindow(t.day, w.latest)) continue;
    const m = perMx.get(t.domain) ?? new Map<string, number>();
    m.set(t.mx, (m.get(t.mx) ?? 0) + t.successful + t.failed);
    perMx.set(t.domain, m);
  }
  const sessionsOf = (domain: string, mx: string) => {
    const m = perMx.get(domain);
    if (!m) return 0;
    const hosts = [...m.keys()].filter((h) => h !== '*').length;
    const star = m.get('*') ?? 0;
    if (mx === '*') return hosts ? 0 : star;
    return (m.get(mx) ?? 0) + (hosts ? star / hosts : 0);
  };
  const fails = new Map<string, { domain: string; mx: string; type: string; n: number; reporters: Set<string> }>();
  for (const x of input.tlsFailures) {
    if (!inWindow(x.day, w.latest)) continue;
    const key = `${x.domain}\0${x.mx}\0${x.resultType}`;
    const f = fails.get(key) ?? { domain: x.domain, mx: x.mx, type: x.resultType, n: 0, reporters: new Set<string>() };
    f.n += x.sessions;
    f.reporters.add(x.reporter);
    fails.set(key, f);
  }
  const out: Finding[] = [];
  for (const f of fails.values()) {
    const key = `tls_failures:${f.domain}:${f.mx}:${f.type}`;
    const open = input.open?.get(key);
    const total = Math.max(sessionsOf(f.domain, f.mx), f.n);
    const rate = total > 0 ? f.n / total : 1;
    if (open ? rate < s.tlsMinFailureRate / 2 : f.n < s.tlsMinFailedSessions || rate < s.tlsMinFailureRate) continue;
    const critical = rate >= 0.5 || (open?.severity === 'critical' && rate >= 0.4);
    const target = f.mx === '*' ? `the MX hosts of ${f.domain}` : `${f.mx} (${f.domain})`;
    out.push({
      key,
      kind: 'tls_failures',
      severity: critical ? 'critical' : 'warning',
      domain: f.domain,
      source_ip: null,
      source_name: null,
      reporter: [...f.reporters].sort().join(', '),
      summary: `TLS to ${target} failed in ${num(f.n)} of ${num(total)} sessions (${pct(rate)}) over the last ${s.latestDays} days with ${f.type}; reported by ${[...f.reporters].sort().join(', ')}`,
      details: {
        mx: f.mx,
        result_type: f.type,
        failed_sessions: Math.round(f.n),
        sessions: Math.round(total),
        failure_rate: round(rate * 100),
      },
    });
  }
  // An open alert whose MX no TLS report mentions in the latest window (reports late, or the
  // mailbox not read) has nothing to be judged on: it stays open with the figures it had, and
  // resolves only when reports show the sessions succeeding again, never because time passed.
  const found = new Set(out.map((f) => f.key));
  for (const [key, a] of input.open ?? []) {
    if (!key.startsWith('tls_failures:') || found.has(key)) continue;
    // The key is tls_failures:DOMAIN:MX:TYPE; an alert opened before baselines were kept has only that.
    const parts = key.split(':');
    const mx = typeof a.baseline.mx === 'string' ? a.baseline.mx : parts.length === 4 ? parts[2]! : null;
    const type = typeof a.baseline.result_type === 'string' ? a.baseline.result_type : parts.length === 4 ? parts[3]! : null;
    if (mx === null || type === null || sessionsOf(a.domain, mx) > 0) continue;
    const target = mx === '*' ? `the MX hosts of ${a.domain}` : `${mx} (${a.domain})`;
    out.push({
      key,
      kind: 'tls_failures',
      severity: a.severity,
      domain: a.domain,
      source_ip: null,
      source_name: null,
      reporter: null,
      summary: `TLS to ${target} failed with ${type} (${pct((frozenNumber(a, 'failure_rate') ?? 0) / 100)} of sessions when last reported); no TLS report has mentioned it in the last ${s.latestDays} days, so it stays open until one shows it working`,
      details: { ...a.baseline, mx, result_type: type, no_recent_reports: 1 } as Finding['details'],
    });
  }
  return out;
}

const KIND_LABEL = { dmarc: 'DMARC aggregate', tlsrpt: 'TLS' } as const;

/**
 * reporter_silent: a reporter that sent reports on most baseline days has sent none for
 * silentDays; or nobody has reported on a domain at all, which says more (rua record removed,
 * mailbox broken) and replaces the per-reporter findings for it.
 */
export function silenceFindings(input: AnalysisInput, now: number, w: Windows, s: AnalysisSettings): Finding[] {
  type Seen = { days: Set<number>; last: number };
  const perReporter = new Map<string, Seen & { kind: 'dmarc' | 'tlsrpt'; domain: string; reporter: string }>();
  const perDomain = new Map<string, Seen & { kind: 'dmarc' | 'tlsrpt'; domain: string; reporters: Set<string> }>();
  const today = Math.floor(now / DAY);
  for (const r of input.coverage) {
    // Only whole days: a report counted on today (or later) is not in yet as of `now`.
    if (r.day >= today) continue;
    const day = r.day;
    const inBase = inWindow(day, w.baseline);
    const last = Math.min(r.lastEnd, now);
    const rk = `${r.kind}\0${r.domain}\0${r.reporter}`;
    const a = perReporter.get(rk) ?? { kind: r.kind, domain: r.domain, reporter: r.reporter, days: new Set<number>(), last: 0 };
    if (inBase) a.days.add(day);
    a.last = Math.max(a.last, last);
    perReporter.set(rk, a);
    const dk = `${r.kind}\0${r.domain}`;
    const b = perDomain.get(dk) ?? { kind: r.kind, domain: r.domain, reporters: new Set<string>(), days: new Set<number>(), last: 0 };
    if (inBase) {
      b.days.add(day);
      b.reporters.add(r.reporter);
    }
    b.last = Math.max(b.last, last);
    perDomain.set(dk, b);
  }
  const active = (days: Set<number>) => days.size >= s.silentActiveShare * s.baselineDays;
  // An open one stays open while the reporter stays silent, however few baseline days it has left.
  const watched = (key: string, days: Set<number>) => active(days) || (input.open?.has(key) ?? false);
  const silentFor = (last: number) => (now - last) / DAY;
  const out: Finding[] = [];
  const silentDomains = new Set<string>();
  for (const d of perDomain.values()) {
    const gap = silentFor(d.last);
    const key = `reporter_silent:${d.kind}:${d.domain}`;
    if (!watched(key, d.days) || gap < s.silentDays) continue;
    silentDomains.add(`${d.kind}\0${d.domain}`);
    out.push({
      key,
      kind: 'reporter_silent',
      severity: 'critical',
      domain: d.domain,
      source_ip: null,
      source_name: null,
      reporter: null,
      summary: `no ${KIND_LABEL[d.kind]} reports for ${d.domain} for ${Math.floor(gap)} days (last covered ${isoDay(Math.floor((d.last - 1) / DAY))}); ${d.reporters.size} ${d.reporters.size === 1 ? 'reporter' : 'reporters'} sent them on ${d.days.size} of ${s.baselineDays} days before: check the rua record and the mailbox`,
      details: { report_kind: d.kind, silent_days: round(gap), baseline_days_reported: d.days.size, reporters: [...d.reporters].sort() },
    });
  }
  for (const a of perReporter.values()) {
    const gap = silentFor(a.last);
    const key = `reporter_silent:${a.kind}:${a.domain}:${a.reporter}`;
    if (!watched(key, a.days) || gap < s.silentDays || silentDomains.has(`${a.kind}\0${a.domain}`)) continue;
    out.push({
      key,
      kind: 'reporter_silent',
      severity: 'warning',
      domain: a.domain,
      source_ip: null,
      source_name: null,
      reporter: a.reporter,
      summary: `${a.reporter} sent ${KIND_LABEL[a.kind]} reports for ${a.domain} on ${a.days.size} of ${s.baselineDays} days, but none for ${Math.floor(gap)} days (last covered ${isoDay(Math.floor((a.last - 1) / DAY))})`,
      details: { report_kind: a.kind, silent_days: round(gap), baseline_days_reported: a.days.size },
    });
  }
  return out;
}

const STRENGTH: Record<string, number> = { none: 0, quarantine: 1, reject: 2 };

/** How strongly a policy protects the domain: its mode first, then the share it applies to. */
function strength(policy: EffectivePolicy): number {
  return (STRENGTH[policy.p] ?? 0) * 1000 + policy.pct;
}

/**
 * policy_changed: the policy reporters saw over the latest window differs from the one they saw
 * over the baseline. It holds until the baseline has caught up, then closes without a "resolved"
 * message (a change is an event, not a fault).
 */
export function policyFindings(input: AnalysisInput, w: Windows): Finding[] {
  const tallies = new Map<string, { base: Map<string, number>; latest: Map<string, number>; latestReports: number }>();
  const published = new Map<string, EffectivePolicy>();
  for (const p of input.policies) {
    const inBase = inWindow(p.day, w.baseline);
    const inLatest = inWindow(p.day, w.latest);
    if (!inBase && !inLatest) continue;
    const t = tallies.get(p.domain) ?? { base: new Map(), latest: new Map(), latestReports: 0 };
    published.set(p.policy, p.published);
    if (inBase) t.base.set(p.policy, (t.base.get(p.policy) ?? 0) + p.weight);
    if (inLatest) {
      t.latest.set(p.policy, (t.latest.get(p.policy) ?? 0) + p.weight);
      t.latestReports += p.reports;
    }
    tallies.set(p.domain, t);
  }
  const majority = (m: Map<string, number>) => [...m].sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]))[0]?.[0] ?? null;
  const out: Finding[] = [];
  for (const [domain, t] of tallies) {
    const before = majority(t.base);
    const now = majority(t.latest);
    if (!before || !now || before === now) continue;
    const weaker = strength(published.get(now)!) < strength(published.get(before)!);
    const severity: Severity = weaker ? 'warning' : 'info';
    out.push({
      key: `policy_changed:${domain}:${now}`,
      kind: 'policy_changed',
      severity,
      domain,
      source_ip: null,
      source_name: null,
      reporter: null,
      summary: `the DMARC policy reporters see for ${domain} changed from "${before}" to "${now}"${weaker ? ' (weaker)' : ''}`,
      details: { before, after: now, latest_reports: t.latestReports },
    });
  }
  return out;
}
