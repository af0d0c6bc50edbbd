import fs from 'node:fs';
import { parse as parseToml } from 'smol-toml';
import { z } from 'zod';
import { RuawatchError, errorMessage } from '../errors.js';
import { inRange, parseRange, rangeSize, type Address, type Range } from './ip.js';

/**
 * Known sending services: which reverse DNS names, DKIM signing domains, SPF domains, AS numbers
 * and AS organisations belong to which service. The bundled map (known-services.json) and a user's
 * file ([enrich] services_file) share one format, checked by one schema.
 */

/** The types the bundled map uses; a user's file may use these or words of its own. */
export const SERVICE_TYPES = [
  'email provider',
  'marketing',
  'transactional',
  'helpdesk',
  'crm',
  'saas',
  'security gateway',
  'forwarder/list',
  'hosting',
  'isp',
  'own',
] as const;

const domain = z
  .string()
  .transform((s) =>
    s
      .trim()
      .toLowerCase()
      .replace(/^\*?\./, '')
      .replace(/\.$/, ''),
  )
  .pipe(z.string().regex(/^([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/, 'not a domain name'));

const ipRange = z.string().refine((s) => parseRange(s) !== null, 'not an IP address, CIDR block or "first-last" range');

export const serviceEntrySchema = z.strictObject({
  /** Stable identifier; an entry of a user's file with the id of a bundled one replaces it. */
  id: z.string().regex(/^[a-z0-9][a-z0-9._-]*$/, 'lower-case letters, digits, ".", "_" and "-"'),
  name: z.string().trim().min(1),
  type: z.string().trim().min(1),
  /** Base domains of reverse DNS names: "google.com" matches mail-ed1-f54.google.com. */
  ptr_domains: z.array(domain).default([]),
  /** DKIM signing domains (d=), matched the same way. */
  dkim_domains: z.array(domain).default([]),
  /** SPF domains: the MAIL FROM (return-path) domains the service sends with, and the domains its customers include. */
  spf_domains: z.array(domain).default([]),
  /** What the service tells its customers to add to their SPF record, e.g. "include:_spf.google.com". */
  spf_include: z.string().trim().min(1).optional(),
  asns: z.array(z.number().int().min(1).max(0xffffffff)).default([]),
  /** Words of AS organisation names, matched whole and without regard to case: "SendGrid" matches "SendGrid, Inc.". */
  as_orgs: z.array(z.string().trim().min(2)).default([]),
  /** Addresses, CIDR blocks or "first-last" ranges; the smallest block holding an address wins. */
  ip_ranges: z.array(ipRange).default([]),
  note: z.string().optional(),
});

export type ServiceEntry = z.infer<typeof serviceEntrySchema>;

const fileSchema = z.strictObject({ service: z.array(serviceEntrySchema) });

/** How a service was recognised, strongest evidence first (the order matches are tried in). */
export type MatchKind = 'ip_range' | 'ptr' | 'asn' | 'dkim' | 'spf' | 'as_org' | 'ptr_unconfirmed';

export interface ServiceMatch {
  id: string;
  service: string;
  service_type: string;
  matched_by: MatchKind;
  /** What matched: the range, the name or domain, the AS number or organisation. */
  evidence: string;
}

/** What is known of a source when its services are matched. */
export interface MatchInput {
  addr: Address | null;
  asn: number | null;
  asOrg: string | null;
  /** The reverse DNS name, and whether its forward lookup gave this address back (FCrDNS). */
  ptr?: string | null;
  ptrConfirmed?: boolean;
  dkimDomains?: readonly string[];
  spfDomains?: readonly string[];
}

/** Types whose AS numbers say only where a server is rented, weaker evidence than a DKIM or SPF domain. */
const NETWORK_ONLY_TYPES = new Set(['hosting', 'isp']);

export class ServiceMap {
  readonly entries: readonly ServiceEntry[];
  private readonly ptr = new Map<string, ServiceEntry>();
  private readonly dkim = new Map<string, ServiceEntry>();
  private readonly spf = new Map<string, ServiceEntry>();
  private readonly asn = new Map<number, ServiceEntry>();
  private readonly orgs: { words: string[]; entry: ServiceEntry }[] = [];
  private readonly orgMemo = new Map<string, ServiceEntry[]>();
  private readonly ranges: { range: Range; size: number; text: string; entry: ServiceEntry }[] = [];

  /**
   * The bundled entries with a user's over them: a user's entry replaces the bundled one of the
   * same id, and where two entries claim the same domain, AS number or range, the user's wins.
   */
  constructor(bundled: readonly ServiceEntry[], user: readonly ServiceEntry[] = []) {
    const replaced = new Set(user.map((e) => e.id));
    this.entries = [...bundled.filter((e) => !replaced.has(e.id)), ...user];
    for (const e of this.entries) {
      for (const d of e.ptr_domains) this.ptr.set(d, e);
      for (const d of e.dkim_domains) this.dkim.set(d, e);
      for (const d of e.spf_domains) this.spf.set(d, e);
      for (const n of e.asns) this.asn.set(n, e);
      for (const o of e.as_orgs) this.orgs.push({ words: words(o), entry: e });
      for (const text of e.ip_ranges) {
        const range = parseRange(text)!;
        this.ranges.push({ range, size: rangeSize(range), text, entry: e });
      }
    }
    // Later entries (the user's) first among equals, then the smallest block first.
    this.ranges.reverse();
    this.ranges.sort((a, b) => a.size - b.size);
    this.orgs.reverse();
  }

  /** Every service the facts point at, strongest evidence first, each service once. */
  match(q: MatchInput): ServiceMatch[] {
    const out: ServiceMatch[] = [];
    const seen = new Set<string>();
    const add = (e: ServiceEntry | undefined, by: MatchKind, evidence: string) => {
      if (!e || seen.has(e.id)) return;
      seen.add(e.id);
      out.push({ id: e.id, service: e.name, service_type: e.type, matched_by: by, evidence });
    };
    if (q.addr) {
      const addr = q.addr;
      const r = this.ranges.find((x) => inRange(addr, x.range));
      if (r) add(r.entry, 'ip_range', r.text);
    }
    const ptr = q.ptr ? normalise(q.ptr) : null;
    if (ptr && q.ptrConfirmed) this.bySuffix(this.ptr, ptr, (e, d) => add(e, 'ptr', d));
    const byAsn = q.asn === null ? undefined : this.asn.get(q.asn);
    if (byAsn && !NETWORK_ONLY_TYPES.has(byAsn.type)) add(byAsn, 'asn', `AS${q.asn}`);
    for (const d of q.dkimDomains ?? []) this.bySuffix(this.dkim, normalise(d), (e, m) => add(e, 'dkim', m));
    for (const d of q.spfDomains ?? []) this.bySuffix(this.spf, normalise(d), (e, m) => add(e, 'spf', m));
    if (byAsn) add(byAsn, 'asn', `AS${q.asn}`);
    if (q.asOrg) for (const e of this.byOrg(q.asOrg)) add(e, 'as_org', q.asOrg);
    if (ptr && !q.ptrConfirmed) this.bySuffix(this.ptr, ptr, (e, d) => add(e, 'ptr_unconfirmed', d));
    return out;
  }

  /** Entries whose organisation words occur in an AS organisation name, remembered per name (there are some 90,000). */
  private byOrg(org: string): ServiceEntry[] {
    let found = this.orgMemo.get(org);
    if (!found) {
      const w = words(org);
      found = this.orgs.filter((o) => containsRun(w, o.words)).map((o) => o.entry);
      if (this.orgMemo.size >= 100_000) this.orgMemo.clear();
      this.orgMemo.set(org, found);
    }
    return found;
  }

  /** The entry of the longest listed domain that `name` is or ends in (on a label boundary). */
  private bySuffix(map: Map<string, ServiceEntry>, name: string, found: (e: ServiceEntry, domain: string) => void): void {
    for (let at = 0; at >= 0 && at < name.length;) {
      const candidate = name.slice(at);
      const e = map.get(candidate);
      if (e) {
        found(e, candidate);
        return;
      }
      const dot = name.indexOf('.', at);
      at = dot < 0 ? -1 : dot + 1;
    }
  }
}

function normalise(name: string): string {
  return name.trim().toLowerCase().replace(/\.$/, '');
}

function words(s: string): string[] {
  return s
    .toLowerCase()
    .split(/[^\p{L}\p{N}]+/u)
    .filter(Boolean);
}

function containsRun(hay: string[], needle: string[]): boolean {
  outer: for (let i = 0; i + needle.length <= hay.length; i++) {
    for (let j = 0; j < needle.length; j++) if (hay[i + j] !== needle[j]) continue outer;
    return true;
  }
  return false;
}

/** Checks a list of entries (the bundled map, a parsed user file), naming the first problems by path. */
export function parseServices(tree: unknown, where: string): ServiceEntry[] {
  const parsed = fileSchema.safeParse(tree);
  if (!parsed.success) {
    const lines = parsed.error.issues.slice(0, 10).map((i) => {
      const at = i.path
        .map((p) => (typeof p === 'number' ? `[${p}]` : `.${String(p)}`))
        .join('')
        .replace(/^\./, '');
      return `  ${at || '(top level)'}: ${i.code === 'unrecognized_keys' ? `unknown key ${i.keys.join(', ')}` : i.message}`;
    });
    throw new RuawatchError('E_CONFIG', `${where}: not a services file:\n${lines.join('\n')}`);
  }
  const ids = new Set<string>();
  for (const e of parsed.data.service) {
    if (ids.has(e.id)) throw new RuawatchError('E_CONFIG', `${where}: the id "${e.id}" is used twice`);
    ids.add(e.id);
  }
  return parsed.data.service;
}

/**
 * A user's services file: TOML (`[[service]]` blocks) or JSON (`{"service": [...]}`, the bundled
 * map's own format), told apart by the first character: "{" is JSON.
 */
export function readServicesFile(file: string): ServiceEntry[] {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new RuawatchError('E_CONFIG', `cannot read the services file ${file}: ${errorMessage(err)}`);
  }
  let tree: unknown;
  const json = /^\s*\{/.test(text);
  try {
    tree = json ? JSON.parse(text) : parseToml(text);
  } catch (err) {
    throw new RuawatchError('E_CONFIG', `${file} is not valid ${json ? 'JSON' : 'TOML'}: ${errorMessage(err)}`);
  }
  return parseServices(tree, file);
}
