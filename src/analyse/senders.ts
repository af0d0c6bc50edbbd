import type { Tally } from './rollups.js';
import type { Finding } from './types.js';

/**
 * Who a source IP is (src/enrich, looked up by the caller) and the two ways the rules use it. Pure:
 * facts in, exemptions and classifications out. Neither can hide a failure on the facts of the
 * message alone: the forwarder exemption needs evidence from the address itself, and a known
 * service that fails only changes how the finding reads, never whether it exists or how severe it is.
 */
export interface SenderFacts {
  asn: number | null;
  as_org: string | null;
  /** ISO 3166-1 alpha-2. */
  country: string | null;
  /** The special-purpose block the address is in ("private (RFC 1918)"), if any. */
  special: string | null;
  service: string | null;
  service_id: string | null;
  service_type: string | null;
  /** How the service was recognised (ip_range, ptr, asn, dkim, spf, as_org, ptr_unconfirmed). */
  matched_by: string | null;
  /** What the service tells its customers to add to SPF ("include:sendgrid.net"), when the map says. */
  spf_include: string | null;
  /** The reverse DNS name, when looked up; null when there is none, undefined when not looked up. */
  ptr?: string | null;
}

/** The fields a finding about one source gains (added to its JSON; nothing renamed). */
export interface SourceFields {
  asn: number | null;
  as_org: string | null;
  country: string | null;
  service: string | null;
  service_type: string | null;
}

/**
 * Who the source IPs are, asked one IP at a time (a Map will do): the rules ask only about the
 * sources whose failures the answer could change, so a domain with a million passing sources does
 * not cost a million lookups.
 */
export interface Senders {
  get(ip: string): SenderFacts | undefined;
  /** The facts of the address alone (no DKIM or SPF domain), when cheaper: all the forwarder exemption may use. */
  byAddress?(ip: string): SenderFacts | undefined;
}

export const FORWARDER_TYPE = 'forwarder/list';

/** Evidence that comes from the address itself: its range, its confirmed name, its network. */
const ADDRESS_EVIDENCE = new Set(['ip_range', 'ptr', 'asn']);

/** Types that send mail as their customers, and so can be set up (SPF include, DKIM keys) or not. */
const NOT_A_SENDER = new Set(['hosting', 'isp', FORWARDER_TYPE]);

export function sourceFields(f: SenderFacts | undefined): SourceFields {
  return {
    asn: f?.asn ?? null,
    as_org: f?.as_org ?? null,
    country: f?.country ?? null,
    service: f?.service ?? null,
    service_type: f?.service_type ?? null,
  };
}

/**
 * Which of the given source IPs (those with failing mail: only their failures can be exempted) are
 * known forwarders or mailing-list operators, whose failing mail joins the forwarded exemption (as
 * a forwarded or mailing_list override reason does): only when the address itself says so (a range
 * of the user's, a forward-confirmed name, the operator's own network). A DKIM or SPF domain, an
 * unconfirmed name or an AS organisation's name is something a sender can claim, and is not enough
 * to leave a failure out.
 */
export function forwarderExemptions(senders: Senders | undefined, ips: Iterable<string>): Set<string> {
  const out = new Set<string>();
  if (!senders) return out;
  for (const ip of ips) {
    const f = senders.byAddress ? senders.byAddress(ip) : senders.get(ip);
    if (f && f.service_type === FORWARDER_TYPE && f.matched_by !== null && ADDRESS_EVIDENCE.has(f.matched_by)) out.add(ip);
  }
  return out;
}

/** The source IPs with mail that failed DMARC and was not forwarded, in rows of tallies. */
export function failingSources(rows: Iterable<Tally & { sourceIp: string }>): Set<string> {
  const out = new Set<string>();
  for (const r of rows) if (r.messages - r.dmarcPass - r.forwarded > 0) out.add(r.sourceIp);
  return out;
}

/** The source IPs with DKIM results other than pass, in rows of dkim_daily. */
export function failingSignatures(rows: Iterable<{ sourceIp: string; result: string }>): Set<string> {
  const out = new Set<string>();
  for (const r of rows) if (r.result !== 'pass') out.add(r.sourceIp);
  return out;
}

/** A source's daily tally as the forwarded exemption sees it: what failed counts as forwarded. */
export function exemptTally<T extends Tally>(r: T): T {
  return { ...r, forwarded: Math.max(r.forwarded, r.messages - r.dmarcPass) };
}

/**
 * Whether a policy domain has set up a service, as its reports show: one of the service's sources
 * passed DMARC for the domain for at least half its messages over the windows the rules read
 * (baseline and recent). Asked only for the services of the findings' sources, each answer
 * remembered.
 */
export function authorisedServices(
  sources: Iterable<{ domain: string; ip: string; base: Tally; recent: Tally }>,
  senders: Senders | undefined,
): (domain: string, serviceId: string) => boolean {
  const answers = new Map<string, boolean>();
  let passing: { domain: string; ip: string }[] | null = null;
  return (domain, serviceId) => {
    const key = `${domain}\0${serviceId}`;
    let yes = answers.get(key);
    if (yes === undefined) {
      if (!passing) {
        passing = [];
        for (const s of sources) {
          const pass = s.base.dmarcPass + s.recent.dmarcPass;
          const judged = s.base.messages - s.base.forwarded + s.recent.messages - s.recent.forwarded;
          if (judged > 0 && pass * 2 >= judged) passing.push({ domain: s.domain, ip: s.ip });
        }
      }
      yes = passing.some((s) => s.domain === domain && senders?.get(s.ip)?.service_id === serviceId);
      answers.set(key, yes);
    }
    return yes;
  };
}

export type SenderClass =
  /** A known sending service the domain has not set up: add it to SPF and DKIM, or it is someone else using it. */
  | { sender: 'unconfigured_sender'; service: string; service_type: string; spf_include: string | null }
  /** A known service the domain did set up (another of its sources passes): a real failure. */
  | { sender: 'configured_service_failing'; service: string; service_type: string; spf_include: string | null };

/** How a source finding reads given who the source is; null when the source is no known sending service. */
export function classifySender(
  domain: string,
  facts: SenderFacts | undefined,
  authorised: (domain: string, serviceId: string) => boolean,
): SenderClass | null {
  if (!facts?.service || !facts.service_id || !facts.service_type || NOT_A_SENDER.has(facts.service_type)) return null;
  const base = { service: facts.service, service_type: facts.service_type, spf_include: facts.spf_include };
  return authorised(domain, facts.service_id)
    ? { sender: 'configured_service_failing', ...base }
    : { sender: 'unconfigured_sender', ...base };
}

/** What to add to DNS to set a service up for a domain: its SPF include and its DKIM keys. */
export function setupAdvice(domain: string, c: { service: string; spf_include: string | null }): string {
  const spf = c.spf_include ? `add ${c.spf_include} to the SPF record of ${domain}` : `authorise it in the SPF record of ${domain}`;
  return `${spf} and publish ${c.service}'s DKIM keys for ${domain} (as its setup pages give them, under _domainkey.${domain})`;
}

/**
 * A source finding (new_failing_source, pass_rate_drop of one source) with what the source's
 * service says about it. Kind, key and severity stay as the rule made them: a known service can
 * change how a failure reads, never whether it is one.
 */
export function classifyFinding(
  f: Finding,
  senders: Senders | undefined,
  authorised: (domain: string, serviceId: string) => boolean,
): Finding {
  if (!f.source_ip || !senders) return f;
  const c = classifySender(f.domain, senders.get(f.source_ip), authorised);
  if (!c) return f;
  const details = { ...f.details, sender: c.sender, service: c.service, spf_include: c.spf_include };
  if (f.kind === 'new_failing_source' && c.sender === 'unconfigured_sender') {
    return {
      ...f,
      summary: `${f.summary}. An unconfigured sender: ${c.service} (${c.service_type}) is not set up for ${f.domain}; if you send through it, ${setupAdvice(f.domain, c)}; if you do not, someone is sending as ${f.domain} through ${c.service}`,
      details,
    };
  }
  // The domain uses the service (another of its sources passes), or the source passed before: what
  // fails is this source's setup at the service.
  const hint =
    c.sender === 'configured_service_failing'
      ? `${c.service} is set up for ${f.domain} (other ${c.service} sources pass): check the DKIM keys and SPF include this account signs with`
      : `check ${c.service}'s setup for ${f.domain}: ${setupAdvice(f.domain, c)}`;
  return { ...f, summary: `${f.summary}. ${hint}`, details };
}

/**
 * The label a source gets in findings' messages, in place of the bare address:
 * "AS64500 Example Hosting, DE; no reverse DNS; not a known mail service", or
 * "SendGrid (Twilio), transactional" for a known service.
 */
export function describeSender(f: SenderFacts): string {
  const name = f.ptr === undefined ? null : f.ptr === null ? 'no reverse DNS' : f.ptr;
  if (f.service && f.service_type && !NOT_A_SENDER.has(f.service_type)) return `${f.service}, ${f.service_type}`;
  if (f.service && f.service_type === FORWARDER_TYPE) return `${f.service}, ${f.service_type}${name ? `; ${name}` : ''}`;
  const parts: string[] = [];
  if (f.special) parts.push(f.special);
  else {
    const network = f.asn === null ? 'network unknown' : `AS${f.asn}${f.as_org ? ` ${f.as_org}` : ''}`;
    parts.push(f.country ? `${network}, ${f.country}` : network);
  }
  if (name) parts.push(name);
  parts.push(f.service ? `${f.service} (${f.service_type ?? 'service'}): not a known mail service` : 'not a known mail service');
  return parts.join('; ');
}
