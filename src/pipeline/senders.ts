/**
 * Source IPs as findings, `report`, the dashboard, the digest and /metrics show them: the facts of
 * analyse/senders.ts (SenderFacts) from an Enricher. Only types come from src/enrich here; the
 * enricher itself is made by App.enricher(), which imports that code when it is first asked for.
 */
import { describeSender, sourceFields, type SenderFacts, type SourceFields } from '../analyse/senders.js';
import { mentionedIn, nameFindings } from '../analyse/names.js';
import type { AnalysisInput, Finding } from '../analyse/types.js';
import type { Enricher } from '../enrich/index.js';
import { DAY } from '../analyse/rollups.js';
import type { Db } from '../store/db.js';
import { cachedNames, dkimDomainsBySource, type ReportFilter, type ReportTotals } from '../store/summary.js';

export interface SourceContext {
  /** The reverse DNS name of an IP: a name, null when it has none, undefined when not looked up. */
  ptr?: (ip: string) => string | null | undefined;
  /** DKIM signing domains seen for each IP (dkim_daily). */
  dkim?: ReadonlyMap<string, readonly string[]>;
}

/**
 * Facts for each IP, each looked up once. Names come from the reverse DNS cache and count as
 * unconfirmed (ptr_unconfirmed, the weakest evidence): nothing here resolves them forward.
 */
export function sendersOf(enricher: Enricher, ips: Iterable<string>, ctx: SourceContext = {}): Map<string, SenderFacts> {
  const one = senderLookup(enricher, ctx);
  const out = new Map<string, SenderFacts>();
  for (const ip of ips) if (!out.has(ip)) out.set(ip, one(ip));
  return out;
}

/** What the services map tells customers to add to SPF, by service id. */
const spfIncludes = new WeakMap<Enricher, Map<string, string>>();

/** A function giving the facts of one IP (not remembered: the enricher caches the network facts). */
export function senderLookup(enricher: Enricher, ctx: SourceContext = {}): (ip: string) => SenderFacts {
  let spf = spfIncludes.get(enricher);
  if (!spf) {
    spf = new Map();
    for (const e of enricher.data().services.entries) if (e.spf_include) spf.set(e.id, e.spf_include);
    spfIncludes.set(enricher, spf);
  }
  const includes = spf;
  return (ip) => {
    const ptr = ctx.ptr?.(ip);
    const e = enricher.enrich({ ip, ptr: ptr ?? null, ptrConfirmed: false, dkimDomains: ctx.dkim?.get(ip) ?? [] });
    const best = e.matches[0];
    return {
      asn: e.asn,
      as_org: e.as_org,
      country: e.country,
      special: e.special,
      service: e.service,
      service_id: best?.id ?? null,
      service_type: e.service_type,
      matched_by: e.matched_by,
      spf_include: best ? (includes.get(best.id) ?? null) : null,
      ...(ptr === undefined ? {} : { ptr }),
    };
  };
}

/** DKIM signing domains per source IP, from rows of dkim_daily. */
export function dkimDomainsOf(rows: Iterable<{ sourceIp: string; signingDomain: string }>): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const r of rows) {
    if (!r.signingDomain) continue;
    const list = out.get(r.sourceIp);
    if (!list) out.set(r.sourceIp, [r.signingDomain]);
    else if (!list.includes(r.signingDomain)) list.push(r.signingDomain);
  }
  return out;
}

/**
 * What evaluateRules' `prepare` and `examine` do with enrichment on. `prepare` gives the rules a
 * lookup of who a source is, which they ask only about the sources whose failures the answer could
 * change; each group of domains has its own, dropped with the group. `examine` keeps the facts of
 * the sources the group's findings mention (`facts`), asked while the group's DKIM domains are at
 * hand: all that labelFindings() needs once the evaluation is over.
 */
export function enrichEvaluation(enricher: Enricher): {
  prepare: (input: AnalysisInput) => void;
  examine: (input: AnalysisInput, findings: readonly Finding[]) => void;
  facts: Map<string, SenderFacts>;
} {
  const facts = new Map<string, SenderFacts>();
  const prepare = (input: AnalysisInput) => {
    // The DKIM domains by source are gathered only when a full answer is first asked for: the
    // forwarder exemption, which asks about every failing source, needs the address alone.
    let one: ((ip: string) => SenderFacts) | null = null;
    const address = senderLookup(enricher);
    const full = new Map<string, SenderFacts>();
    // The facts of the address alone, for the forwarder exemption (asked twice for a source failing
    // both DMARC and DKIM); a large domain's summed sources are asked once each, so the map is bounded.
    const own = new Map<string, SenderFacts>();
    input.senders = {
      get: (ip: string) => {
        let f = full.get(ip);
        if (!f) {
          one ??= senderLookup(enricher, { dkim: dkimDomainsOf(input.dkim) });
          full.set(ip, (f = one(ip)));
        }
        return f;
      },
      byAddress: (ip: string) => {
        let f = full.get(ip) ?? own.get(ip);
        if (!f) {
          if (own.size >= OWN_MAX) own.clear();
          own.set(ip, (f = address(ip)));
        }
        return f;
      },
    };
  };
  const examine = (input: AnalysisInput, findings: readonly Finding[]) => {
    const mentioned = new Set<string>(mentionedIn(findings));
    for (const f of findings) if (f.source_ip) mentioned.add(f.source_ip);
    if (mentioned.size === 0 || !input.senders) return;
    // Labels are for the domain's own sources (an address only failure reports named has no rows here).
    const present = new Set<string>();
    for (const s of input.sources) if (mentioned.has(s.sourceIp)) present.add(s.sourceIp);
    // A large domain's summed sources (store/analysis.ts) are mentioned by their most failing only.
    for (const r of input.rest ?? []) {
      for (const [ip] of [...r.top, ...(r.newFailing?.top ?? [])]) if (mentioned.has(ip)) present.add(ip);
    }
    for (const ip of present) if (!facts.has(ip)) facts.set(ip, input.senders.get(ip)!);
  };
  return { prepare, examine, facts };
}

const OWN_MAX = 65_536;

/**
 * Names the findings of an unnamed evaluation (analyse/names.ts): beside each address its messages
 * mention, who the source is (describeSender, with its reverse DNS name when looked up) when
 * enrichment knows it, else the reverse DNS name. Findings about one source gain asn, as_org,
 * country, service and service_type (with enrichment on); source_name is the reverse DNS name.
 * `names` null: reverse DNS was not looked up.
 */
export function labelFindings(
  findings: Finding[],
  names: ReadonlyMap<string, string> | null,
  facts: ReadonlyMap<string, SenderFacts> | null,
): Finding[] {
  nameFindings(findings, {
    label: (ip) => {
      const f = facts?.get(ip);
      if (f) return describeSender(names ? { ...f, ptr: names.get(ip) ?? null } : f);
      return names?.get(ip);
    },
    name: (ip) => names?.get(ip),
  });
  if (facts) for (const f of findings) if (f.source_ip) Object.assign(f, sourceFields(facts.get(f.source_ip)));
  return findings;
}

/**
 * Report totals with who each source is: asn, as_org, country, service and service_type added to
 * every source (`report --enrich`, the digest). DKIM domains come from the same days' rollups,
 * names from the reverse DNS cache (findings' sources only).
 */
export function enrichTotals(db: Db, totals: ReportTotals, f: ReportFilter, enricher: Enricher): ReportTotals {
  const from = f.since === undefined ? undefined : Math.floor(f.since / DAY);
  const to = f.until === undefined ? undefined : Math.ceil(f.until / DAY);
  for (const d of totals.domains) {
    if (d.sources.length === 0) continue;
    const ips = d.sources.map((s) => s.ip);
    const names = cachedNames(db, ips);
    const senders = sendersOf(enricher, ips, { ptr: (ip) => names.get(ip), dkim: dkimDomainsBySource(db, d.domain, from, to) });
    for (const s of d.sources) Object.assign(s, sourceFields(senders.get(s.ip)));
  }
  return totals;
}

/** The digest's failing sources with who they are: the fields, and the label its lines show. */
export function enrichDigest(
  db: Db,
  domains: { domain: string; failing: ({ ip: string; name: string | null; who?: string } & Partial<SourceFields>)[] }[],
  f: ReportFilter,
  enricher: Enricher,
): void {
  const from = f.since === undefined ? undefined : Math.floor(f.since / DAY);
  const to = f.until === undefined ? undefined : Math.ceil(f.until / DAY);
  for (const d of domains) {
    if (d.failing.length === 0) continue;
    const ips = d.failing.map((s) => s.ip);
    const names = cachedNames(db, ips);
    const senders = sendersOf(enricher, ips, { ptr: (ip) => names.get(ip), dkim: dkimDomainsBySource(db, d.domain, from, to) });
    for (const s of d.failing) {
      const facts = senders.get(s.ip);
      Object.assign(s, sourceFields(facts));
      // The name, when known, is shown beside the label already.
      if (facts) s.who = describeSender({ ...facts, ptr: undefined });
    }
  }
}

export interface ServiceTotal {
  /** '' for sources of no known service. */
  service: string;
  service_type: string;
  messages: number;
  pass_rate: number | null;
}

/** The policy domains with rows in a window of days (@from, @to), from domain_daily's key. */
const WINDOW_DOMAINS = `SELECT domain FROM domain_daily WHERE day >= @from AND day < @to`;

const WINDOW_SOURCES = `SELECT source_ip, SUM(messages), SUM(dmarc_pass) FROM dmarc_daily
  WHERE domain IN (${WINDOW_DOMAINS}) AND day >= @from AND day < @to
  GROUP BY source_ip HAVING SUM(messages) > 0`;

/** Each (source IP, DKIM signing domain) of a window of days once. */
const WINDOW_DKIM = `SELECT DISTINCT source_ip, signing_domain FROM dkim_daily
  WHERE domain IN (${WINDOW_DOMAINS}) AND day >= @from AND day < @to AND signing_domain <> ''`;

/** A source IP over a window of days, as windowSenders gives it. */
export interface WindowSender {
  ip: string;
  messages: number;
  /** Messages passing DMARC. */
  pass: number;
  /** Its DKIM signing domains, sorted. */
  dkim: string[];
  /** Its cached reverse DNS name: null when it has none, undefined when never looked up. */
  ptr: string | null | undefined;
}

/**
 * Each source IP over a window of days (day numbers, `to` exclusive), all policy domains, with its
 * messages and DMARC passes (sources of no messages left out), its DKIM signing domains and its
 * cached reverse name, one at a time. dmarc_daily's key starts with (domain, day), so a condition
 * on the day alone scans every day kept; every (domain, day) it has rows for has a row in
 * domain_daily (key (day, domain)), which gives the window's domains, and each domain's days of
 * the window are then one range of dmarc_daily's key: the cost follows the window's rows, not the
 * history. (At 10,000 domains and 35 days, one search per domain took 0.5-0.6 s where one per
 * (domain, day) took 0.6-1.0 s and the scan 0.6-0.8 s, a cost that grows with each day kept.) One
 * statement builds the sums and the lists, read a row at a time: the window has 86,000 sources
 * there, and holding them, their domains and their names as objects at once took a process's peak
 * from 248 to 360 MiB. The connection is busy until the iteration ends.
 */
export function* windowSenders(db: Db, w: { from: number; to: number }): Generator<WindowSender> {
  const rows = db
    .prepare(
      `WITH s (source_ip, messages, pass) AS (${WINDOW_SOURCES}),
            k AS (SELECT source_ip, json_group_array(signing_domain) AS domains FROM (${WINDOW_DKIM}) GROUP BY source_ip)
       SELECT s.source_ip, s.messages, s.pass, k.domains, r.ip IS NOT NULL, r.name
         FROM s LEFT JOIN k ON k.source_ip = s.source_ip LEFT JOIN reverse_dns r ON r.ip = s.source_ip`,
    )
    .raw(true)
    .iterate({ from: w.from, to: w.to }) as IterableIterator<[string, number, number, string | null, number, string | null]>;
  for (const [ip, messages, pass, domains, named, name] of rows) {
    yield { ip, messages, pass, dkim: domains === null ? [] : (JSON.parse(domains) as string[]).sort(), ptr: named ? name : undefined };
  }
}

/**
 * Messages and DMARC pass rate per known service over a window of days (all policy domains), for
 * /metrics, which decides how long to keep the answer (web/metrics.ts). Every source of the window
 * is looked up, one at a time (windowSenders).
 */
export function serviceTotals(db: Db, w: { from: number; to: number }, enricher: Enricher): ServiceTotal[] {
  // The lookup reads the source at hand: its name and its domains.
  let at: WindowSender | undefined;
  const dkim = new Map<string, string[]>();
  const who = senderLookup(enricher, { ptr: () => at?.ptr, dkim });
  const sums = new Map<string, { service: string; service_type: string; messages: number; pass: number }>();
  for (const source of windowSenders(db, w)) {
    at = source;
    const { ip, messages, pass } = source;
    dkim.clear();
    if (source.dkim.length) dkim.set(ip, source.dkim);
    const f = who(ip);
    const service = f.service ?? '';
    const t = sums.get(service) ?? { service, service_type: f.service_type ?? '', messages: 0, pass: 0 };
    t.messages += messages;
    t.pass += pass;
    sums.set(service, t);
  }
  const value = [...sums.values()]
    .sort((a, b) => a.service.localeCompare(b.service))
    .map((t) => ({
      service: t.service,
      service_type: t.service_type,
      messages: Math.round(t.messages * 1e6) / 1e6,
      pass_rate: t.messages > 0 ? Math.round((t.pass / t.messages) * 10000) / 10000 : null,
    }));
  return value;
}
