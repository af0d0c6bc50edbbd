/**
 * Source IPs as findings, `report`, the dashboard, the digest and /metrics show them: the facts of
 * analyse/senders.ts (SenderFacts) from an Enricher. Only types come from src/enrich here; the
 * enricher itself is made by App.enricher(), which imports that code when it is first asked for.
 */
import { describeSender, sourceFields, type SenderFacts, type SourceFields } from '../analyse/senders.js';
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

/** The IPs a finding names: its source, and the first few it lists (as the reverse DNS lookups take them). */
export function mentionedIps(findings: Finding[]): Set<string> {
  const ips = new Set<string>();
  for (const f of findings) {
    if (f.source_ip) ips.add(f.source_ip);
    const listed = f.details.source_ips;
    if (Array.isArray(listed)) for (const ip of listed.slice(0, 3)) ips.add(ip);
  }
  return ips;
}

/**
 * What evaluateRules' `prepare` does with enrichment on: the rules get a lookup of who a source is,
 * which they ask only about the sources whose failures the answer could change, and the IPs in
 * `labelled` get the label that findings' messages show in place of the reverse DNS name. The
 * answers last for one group of domains; `done` (evaluateRules' option of that name) keeps in
 * `seen` those about the sources of the group's findings, for decorateFindings() and for a second
 * evaluation (`reuse`), whose labelled IPs alone are looked up again (with their names). An
 * evaluation of 10,000 domains asks about some 100,000 sources: only the findings' are kept.
 */
export function enrichEvaluation(
  enricher: Enricher,
  opts: {
    names?: ReadonlyMap<string, string> | null;
    labelled?: ReadonlySet<string>;
    /** Every source gets its label, made when the rules ask for it (no reverse DNS to wait for). */
    labelAll?: boolean;
    reuse?: ReadonlyMap<string, SenderFacts>;
  } = {},
): {
  prepare: (input: AnalysisInput) => void;
  done: (input: AnalysisInput, findings: readonly Finding[]) => void;
  seen: Map<string, SenderFacts>;
} {
  const labelled = opts.labelled ?? new Set<string>();
  const seen = new Map<string, SenderFacts>();
  const reused = new Map<string, SenderFacts>();
  if (opts.reuse) for (const [ip, f] of opts.reuse) if (!labelled.has(ip)) reused.set(ip, f);
  // This group's answers.
  let group = new Map<string, SenderFacts>();
  const names = opts.names;
  const done = (_input: AnalysisInput, findings: readonly Finding[]) => {
    for (const f of findings) {
      const facts = f.source_ip ? group.get(f.source_ip) : undefined;
      if (facts) seen.set(f.source_ip!, facts);
    }
    group = new Map();
  };
  const prepare = (input: AnalysisInput) => {
    group = new Map(reused);
    // An IP the lookups asked about and got no name for has none; the others were not asked.
    const ptr = (ip: string) => (names && labelled.has(ip) ? (names.get(ip) ?? null) : undefined);
    // The DKIM domains by source are gathered only when a full answer is first asked for: the
    // forwarder exemption, which asks about every failing source, needs the address alone.
    let one: ((ip: string) => SenderFacts) | null = null;
    const address = senderLookup(enricher, { ptr });
    // The facts of the address alone, for the forwarder exemption (asked twice for a source failing
    // both DMARC and DKIM); a domain's summed sources are asked once each, so the map is bounded.
    const own = new Map<string, SenderFacts>();
    const senders = {
      get: (ip: string) => {
        let f = group.get(ip);
        if (!f) {
          one ??= senderLookup(enricher, { ptr, dkim: dkimDomainsOf(input.dkim) });
          group.set(ip, (f = one(ip)));
        }
        return f;
      },
      byAddress: (ip: string) => {
        let f = group.get(ip) ?? own.get(ip);
        if (!f) {
          if (own.size >= OWN_MAX) own.clear();
          own.set(ip, (f = address(ip)));
        }
        return f;
      },
    };
    input.senders = senders;
    // The sources of the group, asked when a label is first wanted: a large domain's summed
    // sources (AnalysisInput.rest, added after this) are named by their most failing only.
    let sources: Set<string> | null = null;
    const present = () => (sources ??= presentIps(input));
    if (opts.labelAll) input.names = new LazyLabels((ip) => (present().has(ip) ? describeSender(senders.get(ip)) : undefined));
    else if (labelled.size) {
      input.names = new LazyLabels((ip) => {
        if (!labelled.has(ip)) return undefined;
        return present().has(ip) ? describeSender(senders.get(ip)) : names?.get(ip);
      });
    }
  };
  return { prepare, done, seen };
}

const OWN_MAX = 65_536;

/** The IPs of a group's rollups: its sources, and the most failing of the sources summed. */
function presentIps(input: AnalysisInput): Set<string> {
  const out = new Set(input.sources.map((s) => s.sourceIp));
  for (const r of input.rest ?? []) for (const [ip] of r.top) out.add(ip);
  return out;
}

/**
 * Labels made on demand: the rules read `names` only for the IPs they put in a message, so a domain
 * with a million sources costs a label per finding, not per source.
 */
class LazyLabels extends Map<string, string> {
  constructor(private readonly label: (ip: string) => string | undefined) {
    super();
  }
  override get(ip: string): string | undefined {
    return this.label(ip);
  }
}

/**
 * Findings about one source gain asn, as_org, country, service and service_type; source_name stays
 * the reverse DNS name (the rules saw labels in its place).
 */
export function decorateFindings(
  findings: Finding[],
  seen: ReadonlyMap<string, SenderFacts>,
  names: ReadonlyMap<string, string>,
): Finding[] {
  for (const f of findings) {
    if (!f.source_ip) continue;
    Object.assign(f, sourceFields(seen.get(f.source_ip)));
    f.source_name = names.get(f.source_ip) ?? null;
  }
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

const serviceCache = new WeakMap<Db, { key: string; value: ServiceTotal[] }>();

/**
 * Messages and DMARC pass rate per known service over a window of days (all policy domains), for
 * /metrics. Every source of the window is looked up (each address once per process, then from the
 * enricher's cache); the answer is kept until a report is added or the window moves.
 */
export function serviceTotals(db: Db, w: { from: number; to: number }, enricher: Enricher): ServiceTotal[] {
  const version = (db.prepare(`SELECT max(id) FROM reports`).pluck().get() as number | null) ?? 0;
  const key = `${version}:${w.from}:${w.to}`;
  const hit = serviceCache.get(db);
  if (hit?.key === key) return hit.value;
  const rows = db
    .prepare(
      `SELECT source_ip, SUM(messages), SUM(dmarc_pass) FROM dmarc_daily WHERE day >= ? AND day < ? GROUP BY source_ip HAVING SUM(messages) > 0`,
    )
    .raw(true)
    .all(w.from, w.to) as [string, number, number][];
  const dkim = dkimDomainsOf(
    (
      db
        .prepare(`SELECT DISTINCT source_ip, signing_domain FROM dkim_daily WHERE day >= ? AND day < ? AND signing_domain <> ''`)
        .raw(true)
        .all(w.from, w.to) as [string, string][]
    ).map(([sourceIp, signingDomain]) => ({ sourceIp, signingDomain })),
  );
  const names = cachedNames(
    db,
    rows.map((r) => r[0]),
  );
  const senders = sendersOf(
    enricher,
    rows.map((r) => r[0]),
    { ptr: (ip) => names.get(ip), dkim },
  );
  const sums = new Map<string, { service: string; service_type: string; messages: number; pass: number }>();
  for (const [ip, messages, pass] of rows) {
    const f = senders.get(ip);
    const service = f?.service ?? '';
    const t = sums.get(service) ?? { service, service_type: f?.service_type ?? '', messages: 0, pass: 0 };
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
  serviceCache.set(db, { key, value });
  return value;
}
