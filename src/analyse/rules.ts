import { DAY, emptyTally, inWindow, isoDay, judged, mergeTally, passRate, type Tally, type Windows } from './rollups.js';
import { authorisedServices, classifyFinding, exemptTally, failingSignatures, failingSources, forwarderExemptions } from './senders.js';
import type { AnalysisInput, AnalysisSettings, Finding, Severity } from './types.js';

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
  headerFroms: string[];
}

function named(ip: string, names: Map<string, string> | undefined): string {
  const name = names?.get(ip);
  return name ? `${ip} (${name})` : ip;
}

function selectorLabel(key: string): string {
  const [d, s] = key.split('/');
  return `DKIM ${s || '(no selector)'} (${d || 'no domain'})`;
}

/** Why a source fails, from its recent auth results: "DKIM s1 (example.com) fails; SPF not aligned". */
function failureCause(st: SourceStats): string {
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
  if (failing.length === 0 && signatures > 0 && st.recent.dkimAlignedPass < judged(st.recent) / 2) parts.push('DKIM not aligned');
  if (st.recent.spfAlignedPass < judged(st.recent) / 2) parts.push('SPF not aligned');
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
        dkimRecent: NO_DKIM,
        headerFroms: [],
      };
      out.set(key, st);
    }
    if (inBase) mergeTally(st.base, r);
    if (inRecent) {
      mergeTally(st.recent, r);
      if (r.headerFrom && !st.headerFroms.includes(r.headerFrom)) st.headerFroms.push(r.headerFrom);
    }
  }
  return out;
}

const NO_DKIM = new Map<string, Map<string, number>>();
const NO_IPS = new Set<string>();

/** Fills the recent DKIM results of the given sources (by "domain\0ip" key). */
function withDkim(input: AnalysisInput, w: Windows, sources: Map<string, SourceStats>): void {
  if (sources.size === 0) return;
  for (const d of input.dkim) {
    if (!inWindow(d.day, w.recent)) continue;
    const st = sources.get(`${d.domain}\0${d.sourceIp}`);
    if (!st) continue;
    if (st.dkimRecent === NO_DKIM) st.dkimRecent = new Map();
    const sel = `${d.signingDomain}/${d.selector}`;
    const m = st.dkimRecent.get(sel) ?? new Map<string, number>();
    m.set(d.result, (m.get(d.result) ?? 0) + d.messages);
    st.dkimRecent.set(sel, m);
  }
}

function policyOf(input: AnalysisInput, domain: string, w: Windows): string | null {
  // The policy most reports saw on the latest day that has one decides how bad a failing source is.
  let best: { day: number; weight: number; policy: string } | null = null;
  for (const p of input.policies) {
    if (p.domain !== domain || p.day >= w.recent.to) continue;
    if (
      !best ||
      p.day > best.day ||
      (p.day === best.day && (p.weight > best.weight || (p.weight === best.weight && p.policy < best.policy)))
    ) {
      best = { day: p.day, weight: p.weight, policy: p.policy };
    }
  }
  return best ? (/^p=([^;]*)/.exec(best.policy)?.[1] ?? null) : null;
}
/** pass_rate_drop per source and per domain, and new_failing_source. */
export function passRateFindings(input: AnalysisInput, w: Windows, s: AnalysisSettings): Finding[] {
  const out: Finding[] = [];
  const stats = sourceStats(input, w);
  const flagged = new Set<string>();
  const domainBase = new Map<string, number>();
  for (const st of stats.values()) domainBase.set(st.domain, (domainBase.get(st.domain) ?? 0) + st.base.messages);
  const days = s.recentDays;
  // Findings are made once the DKIM results of their sources are known (withDkim).
  const pending: { st: SourceStats; make: (cause: string) => Finding }[] = [];

  for (const [key, st] of stats) {
    const before = passRate(st.base);
    const now = passRate(st.recent);
    const who = named(st.ip, input.names);
    if (
      before !== null &&
      now !== null &&
      judged(st.base) >= s.dropMinMessages &&
      before >= s.dropMinBaselineRate &&
      judged(st.recent) >= s.dropMinMessages &&
      now <= before - s.dropPoints
    ) {
      flagged.add(key);
      pending.push({
        st,
        make: (cause) => ({
          key: `pass_rate_drop:${st.domain}:${st.ip}`,
          kind: 'pass_rate_drop',
          severity: now < 0.5 ? 'critical' : 'warning',
          domain: st.domain,
          source_ip: st.ip,
          source_name: input.names?.get(st.ip) ?? null,
          reporter: null,
          summary: `mail from ${who} for ${st.domain} passing DMARC fell from ${pct(before)} to ${pct(now)} over ${num(judged(st.recent))} messages in the last ${days} days${cause ? `; ${cause}` : ''}`,
          details: {
            baseline_pass_rate: round(before * 100),
            recent_pass_rate: round(now * 100),
            baseline_messages: Math.round(judged(st.base)),
            recent_messages: Math.round(judged(st.recent)),
            cause,
          },
        }),
      });
      continue;
    }
    const watched = (domainBase.get(st.domain) ?? 0) >= s.dropMinMessages;
    if (watched && st.base.messages === 0 && now !== null && judged(st.recent) >= s.newSourceMinMessages && now <= s.newSourceMaxPassRate) {
      flagged.add(key);
      const p = policyOf(input, st.domain, w);
      const fate =
        st.recent.reject + st.recent.quarantine > 0
          ? `; receivers rejected ${num(st.recent.reject)} and quarantined ${num(st.recent.quarantine)}`
          : '; receivers delivered them';
      pending.push({
        st,
        make: (cause) => ({
          key: `new_failing_source:${st.domain}:${st.ip}`,
          kind: 'new_failing_source',
          // Under p=none spoofed mail is delivered; under quarantine/reject it is stopped, but a real
          // sender that was never set up is losing mail either way.
          severity: p === 'none' || p === null ? 'critical' : 'warning',
          domain: st.domain,
          source_ip: st.ip,
          source_name: input.names?.get(st.ip) ?? null,
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
  const authorised = authorisedServices(stats.values(), input.senders);
  for (const p of pending) out.push(classifyFinding(p.make(failureCause(p.st)), input.senders, authorised));
  collapseNewSources(out, s, days, input.names);

  // A domain-wide drop that the flagged sources do not explain: many small failing sources, or a
  // change that hits every sender at once.
  const domains = new Map<string, { base: Tally; recent: Tally; failing: Map<string, number> }>();
  for (const [key, st] of stats) {
    if (flagged.has(key)) continue;
    const d = domains.get(st.domain) ?? { base: emptyTally(), recent: emptyTally(), failing: new Map() };
    mergeTally(d.base, st.base);
    mergeTally(d.recent, st.recent);
    const fails = judged(st.recent) - st.recent.dmarcPass;
    if (fails > 0) d.failing.set(st.ip, fails);
    domains.set(st.domain, d);
  }
  for (const [domain, d] of domains) {
    const before = passRate(d.base);
    const now = passRate(d.recent);
    if (
      before === null ||
      now === null ||
      judged(d.base) < s.dropMinMessages ||
      before < s.dropMinBaselineRate ||
      judged(d.recent) < s.dropMinMessages ||
      now > before - s.dropPoints
    )
      continue;
    const top = [...d.failing]
      .sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]))
      .slice(0, 3)
      .map(([ip, n]) => `${named(ip, input.names)} ${num(n)}`);
    out.push({
      key: `pass_rate_drop:${domain}`,
      kind: 'pass_rate_drop',
      severity: now < 0.5 ? 'critical' : 'warning',
      domain,
      source_ip: null,
      source_name: null,
      reporter: null,
      summary: `mail for ${domain} passing DMARC fell from ${pct(before)} to ${pct(now)} over ${num(judged(d.recent))} messages in the last ${days} days; failing from ${d.failing.size} sources (most: ${top.join(', ')})`,
      details: {
        baseline_pass_rate: round(before * 100),
        recent_pass_rate: round(now * 100),
        baseline_messages: Math.round(judged(d.base)),
        recent_messages: Math.round(judged(d.recent)),
        failing_sources: d.failing.size,
      },
    });
  }
  return out;
}

/**
 * A spoofing run from a botnet shows up as hundreds of new sources at once: past
 * newSourceMaxFindings for a domain they become one finding for the domain, naming the largest,
 * instead of a page per IP.
 */
function collapseNewSources(out: Finding[], s: AnalysisSettings, days: number, names: Map<string, string> | undefined): void {
  const byDomain = new Map<string, Finding[]>();
  for (const f of out) if (f.kind === 'new_failing_source') byDomain.set(f.domain, [...(byDomain.get(f.domain) ?? []), f]);
  for (const [domain, list] of byDomain) {
    if (list.length <= s.newSourceMaxFindings) continue;
    const n = (f: Finding, k: string) => Number(f.details[k] ?? 0);
    list.sort((a, b) => n(b, 'recent_messages') - n(a, 'recent_messages') || a.key.localeCompare(b.key));
    const messages = list.reduce((t, f) => t + n(f, 'recent_messages'), 0);
    const rejected = list.reduce((t, f) => t + n(f, 'rejected'), 0);
    const quarantined = list.reduce((t, f) => t + n(f, 'quarantined'), 0);
    const top = list.slice(0, 5).map((f) => `${named(f.source_ip!, names)} ${num(n(f, 'recent_messages'))}`);
    for (const f of list) out.splice(out.indexOf(f), 1);
    out.push({
      key: `new_failing_source:${domain}`,
      kind: 'new_failing_source',
      severity: list.some((f) => f.severity === 'critical') ? 'critical' : 'warning',
      domain,
      source_ip: null,
      source_name: null,
      reporter: null,
      summary: `${num(list.length)} new sources sent ${num(messages)} messages failing DMARC as ${domain} in the last ${days} days (most: ${top.join(', ')}); receivers rejected ${num(rejected)} and quarantined ${num(quarantined)}`,
      details: {
        sources: list.length,
        recent_messages: messages,
        rejected,
        quarantined,
        source_ips: list.slice(0, 20).map((f) => f.source_ip!),
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
 * dkim_selector_broken: a (signing domain, selector) that passed now fails. Measured only on
 * sources already seen in the baseline window, so a spoofer forging the selector cannot trip it,
 * and without forwarded or list mail, which breaks signatures by nature.
 */
export function dkimFindings(input: AnalysisInput, w: Windows, s: AnalysisSettings): Finding[] {
  const known = new Set<string>();
  const forwarders = input.senders ? forwarderExemptions(input.senders, failingSignatures(input.dkim)) : NO_IPS;
  for (const r of input.sources) if (inWindow(r.day, w.baseline) && !forwarders.has(r.sourceIp)) known.add(`${r.domain}\0${r.sourceIp}`);
  type Sel = {
    domain: string;
    d: string;
    s: string;
    basePass: number;
    base: number;
    recentPass: number;
    recent: number;
    results: Map<string, number>;
    ips: Map<string, number>;
  };
  const sels = new Map<string, Sel>();
  for (const r of input.dkim) {
    if (!r.signingDomain || !known.has(`${r.domain}\0${r.sourceIp}`)) continue;
    const inBase = inWindow(r.day, w.baseline);
    const inRecent = inWindow(r.day, w.recent);
    if (!inBase && !inRecent) continue;
    const key = `${r.domain}\0${r.signingDomain}\0${r.selector}`;
    let st = sels.get(key);
    if (!st) {
      st = {
        domain: r.domain,
        d: r.signingDomain,
        s: r.selector,
        basePass: 0,
        base: 0,
        recentPass: 0,
        recent: 0,
        results: new Map(),
        ips: new Map(),
      };
      sels.set(key, st);
    }
    const pass = r.result === 'pass';
    if (inBase) {
      st.base += r.messages;
      if (pass) st.basePass += r.messages;
    } else {
      st.recent += r.messages;
      if (pass) st.recentPass += r.messages;
      else {
        st.results.set(r.result, (st.results.get(r.result) ?? 0) + r.messages);
        st.ips.set(r.sourceIp, (st.ips.get(r.sourceIp) ?? 0) + r.messages);
      }
    }
  }
  const out: Finding[] = [];
  for (const st of sels.values()) {
    if (st.base < s.dkimMinSignatures || st.recent < s.dkimMinSignatures) continue;
    const before = st.basePass / st.base;
    const now = st.recentPass / st.recent;
    if (before < s.dkimMinBaselineRate || now > s.dkimMaxPassRate) continue;
    const results = [...st.results].sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]));
    const top = results[0]?.[0] ?? 'fail';
    const ips = [...st.ips]
      .sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]))
      .slice(0, 3)
      .map(([ip]) => named(ip, input.names));
    out.push({
      key: `dkim_selector_broken:${st.domain}:${st.d}:${st.s}`,
      kind: 'dkim_selector_broken',
      severity: 'critical',
      domain: st.domain,
      source_ip: null,
      source_name: null,
      reporter: null,
      summary: `DKIM selector ${st.s || '(none)'}._domainkey.${st.d} passed ${pct(before)} of ${num(st.base)} signatures, now ${pct(now)} of ${num(st.recent)} (${results.map(([r, n]) => `${r} ${num(n)}`).join(', ')}): ${DKIM_HINTS[top] ?? 'signatures fail'}; seen from ${ips.join(', ')}`,
      details: {
        signing_domain: st.d,
        selector: st.s,
        baseline_pass_rate: round(before * 100),
        recent_pass_rate: round(now * 100),
        baseline_signatures: Math.round(st.base),
        recent_signatures: Math.round(st.recent),
        result: top,
        source_ips: [...st.ips].sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0])).map(([ip]) => ip),
      },
    });
  }
  return out;
}

/** tls_failures: failed TLS sessions per (policy domain, MX, result type) over the latest window. */
export function tlsFindings(input: AnalysisInput, w: Windows, s: AnalysisSettings): Finding[] {
  const sessions = new Map<string, number>();
  for (const t of input.tls) {
    if (inWindow(t.day, w.latest)) sessions.set(t.domain, (sessions.get(t.domain) ?? 0) + t.successful + t.failed);
  }
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
    const total = sessions.get(f.domain) ?? 0;
    const rate = total > 0 ? f.n / total : 1;
    if (f.n < s.tlsMinFailedSessions || rate < s.tlsMinFailureRate) continue;
    const target = f.mx === '*' ? `the MX hosts of ${f.domain}` : `${f.mx} (${f.domain})`;
    out.push({
      key: `tls_failures:${f.domain}:${f.mx}:${f.type}`,
      kind: 'tls_failures',
      severity: rate >= 0.5 ? 'critical' : 'warning',
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
  const silentFor = (last: number) => (now - last) / DAY;
  const out: Finding[] = [];
  const silentDomains = new Set<string>();
  for (const d of perDomain.values()) {
    const gap = silentFor(d.last);
    if (!active(d.days) || gap < s.silentDays) continue;
    silentDomains.add(`${d.kind}\0${d.domain}`);
    out.push({
      key: `reporter_silent:${d.kind}:${d.domain}`,
      kind: 'reporter_silent',
      severity: 'critical',
      domain: d.domain,
      source_ip: null,
      source_name: null,
      reporter: null,
      summary: `no ${KIND_LABEL[d.kind]} reports for ${d.domain} for ${Math.floor(gap)} days (last covered ${isoDay(Math.floor((d.last - 1) / DAY))}); ${d.reporters.size} reporters sent them on ${d.days.size} of ${s.baselineDays} days before: check the rua record and the mailbox`,
      details: { report_kind: d.kind, silent_days: round(gap), baseline_days_reported: d.days.size, reporters: [...d.reporters].sort() },
    });
  }
  for (const a of perReporter.values()) {
    const gap = silentFor(a.last);
    if (!active(a.days) || gap < s.silentDays || silentDomains.has(`${a.kind}\0${a.domain}`)) continue;
    out.push({
      key: `reporter_silent:${a.kind}:${a.domain}:${a.reporter}`,
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

function strength(policy: string): number {
  const p = /p=(\w+)/.exec(policy)?.[1] ?? 'none';
  const pctv = Number(/pct=(\d+)/.exec(policy)?.[1] ?? 100);
  return (STRENGTH[p] ?? 0) * 1000 + pctv;
}

/**
 * policy_changed: the policy reporters saw over the latest window differs from the one they saw
 * over the baseline. It holds until the baseline has caught up, then closes without a "resolved"
 * message (a change is an event, not a fault).
 */
export function policyFindings(input: AnalysisInput, w: Windows): Finding[] {
  const tallies = new Map<string, { base: Map<string, number>; latest: Map<string, number>; latestReports: number }>();
  for (const p of input.policies) {
    const inBase = inWindow(p.day, w.baseline);
    const inLatest = inWindow(p.day, w.latest);
    if (!inBase && !inLatest) continue;
    const t = tallies.get(p.domain) ?? { base: new Map(), latest: new Map(), latestReports: 0 };
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
    const weaker = strength(now) < strength(before);
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
