/**
 * Who is sending: for a source IP, its network (AS number and organisation), its country and the
 * sending service it belongs to, all from data on disk, with no network at run time. Nothing here
 * is loaded until the first lookup: commands that never enrich never read the data.
 *
 *   const enricher = createEnricher(config.enrich, { cacheDir });
 *   enricher.enrich({ ip: '209.85.220.41', ptr: 'mail-sor-f41.google.com', ptrConfirmed: true })
 *   -> { asn: 15169, as_org: 'Google LLC', country: 'US', service: 'Google Workspace / Gmail', ... }
 */
import type { Config } from '../config/schema.js';
import { parseAddress, specialPurpose, type Address } from './ip.js';
import { BUNDLED_ASN, BUNDLED_COUNTRY, bundledDescriptions, openDataFile, type DataSource } from './sources.js';
import { ServiceMap, parseServices, readServicesFile, type MatchKind, type ServiceEntry, type ServiceMatch } from './services.js';
import knownServices from './known-services.json' with { type: 'json' };

export { confirmReverseName, systemForwardLookup, type ForwardLookup } from './dns.js';
export { parseAddress, parseRange, specialPurpose } from './ip.js';
export {
  ServiceMap,
  SERVICE_TYPES,
  parseServices,
  readServicesFile,
  type MatchKind,
  type ServiceEntry,
  type ServiceMatch,
} from './services.js';
export type { DataSource } from './sources.js';

export interface EnrichQuery {
  ip: string;
  /** The reverse DNS name of the address, when known. */
  ptr?: string | null;
  /** Whether that name resolves back to the address; an unconfirmed name is the weakest evidence. */
  ptrConfirmed?: boolean;
  /** DKIM signing domains of the record (auth_results/dkim/domain). */
  dkimDomains?: readonly string[];
  /** SPF domains of the record (auth_results/spf/domain: the MAIL FROM or HELO domain). */
  spfDomains?: readonly string[];
}

export interface Enrichment {
  /** The address in canonical form (IPv4-mapped IPv6 as IPv4), or as given when it is not one. */
  ip: string;
  asn: number | null;
  as_org: string | null;
  /** ISO 3166-1 alpha-2 code of the country the address is registered or located in. */
  country: string | null;
  /** The special-purpose block the address is in ("private (RFC 1918)"), or "not an IP address". */
  special: string | null;
  /** The service of the strongest match, its type and how it was matched; null when none matched. */
  service: string | null;
  service_type: string | null;
  matched_by: MatchKind | null;
  /** Every service the facts point at, strongest first (a forwarder's network, the DKIM signer...). */
  matches: ServiceMatch[];
}

/** The facts that depend on the address alone, cached per address. */
interface AddressFacts {
  addr: Address | null;
  asn: number | null;
  as_org: string | null;
  country: string | null;
  special: string | null;
}

export interface EnricherData {
  asn: readonly DataSource[];
  country: readonly DataSource[];
  services: ServiceMap;
}

export interface Enricher {
  /** Everything known about a source. Synchronous: the data is in memory once loaded. */
  enrich(q: EnrichQuery): Enrichment;
  /** The data files in use, loading them if not yet loaded (for `whois` and the docs' refresh advice). */
  data(): EnricherData;
}

export type EnrichSettings = Config['enrich'];

export interface EnricherOptions {
  /** Where compiled copies of CSV data files are kept; null: compiled in memory on every start. */
  cacheDir?: string | null;
  /**
   * Addresses whose network facts are kept in memory (default 4,096; the cache starts over when
   * full). An evaluation of many domains looks up each of its sources about once, so a larger cache
   * fills with addresses not asked again and only makes the heap grow (docs/performance.md).
   */
  cacheSize?: number;
}

/** The bundled map of known services, checked against the schema the user's files go through. */
export function bundledServices(): ServiceEntry[] {
  return parseServices(knownServices, 'known-services.json');
}

/** The data an [enrich] section names: the bundled files where it names none. Reads the files now. */
export function loadEnricherData(settings: EnrichSettings, opts: EnricherOptions = {}): EnricherData {
  const cacheDir = opts.cacheDir ?? null;
  const bundled = settings.asn_files.length && settings.country_files.length ? {} : bundledDescriptions();
  const open = (kind: 'asn' | 'country', files: string[], fallback: string) =>
    files.length ? files.map((f) => openDataFile(kind, f, cacheDir)) : [openDataFile(kind, fallback, null, bundled[kind])];
  const user = settings.services_file ? readServicesFile(settings.services_file) : [];
  return {
    asn: open('asn', settings.asn_files, BUNDLED_ASN),
    country: open('country', settings.country_files, BUNDLED_COUNTRY),
    services: new ServiceMap(settings.known_services ? bundledServices() : [], user),
  };
}

/** An enricher over the data of an [enrich] section, loaded on first use. */
export function createEnricher(settings: EnrichSettings, opts: EnricherOptions = {}): Enricher {
  let loaded: EnricherData | null = null;
  let inner: Enricher | null = null;
  const ready = () => {
    loaded ??= loadEnricherData(settings, opts);
    inner ??= enricherOver(loaded, opts.cacheSize);
    return inner;
  };
  return { enrich: (q) => ready().enrich(q), data: () => ready().data() };
}

/**
 * An enricher over data already in memory. Pure apart from its cache: the same query over the same
 * data gives the same answer, so rules can use it as rows in, findings out.
 */
export function enricherOver(data: EnricherData, cacheSize = 4_096): Enricher {
  const cache = new Map<string, AddressFacts>();
  const remember = (key: string, f: AddressFacts) => {
    if (cache.size >= cacheSize) cache.clear();
    cache.set(key, f);
    return f;
  };
  const facts = (ip: string): AddressFacts => {
    const hit = cache.get(ip);
    if (hit) return hit;
    const addr = parseAddress(ip);
    // Another spelling of an address already seen ("::ffff:192.0.2.1" for "192.0.2.1") shares its entry.
    const known = addr && addr.text !== ip ? cache.get(addr.text) : undefined;
    if (known) return remember(ip, known);
    const f = addressFacts(data, addr);
    if (addr && addr.text !== ip) remember(addr.text, f);
    return remember(ip, f);
  };
  return {
    data: () => data,
    enrich(q) {
      const f = facts(q.ip);
      const matches = f.addr
        ? data.services.match({
            addr: f.addr,
            asn: f.asn,
            asOrg: f.as_org,
            ptr: q.ptr,
            ptrConfirmed: q.ptrConfirmed,
            dkimDomains: q.dkimDomains,
            spfDomains: q.spfDomains,
          })
        : [];
      const best = matches[0];
      return {
        ip: f.addr?.text ?? q.ip,
        asn: f.asn,
        as_org: f.as_org,
        country: f.country,
        special: f.special,
        service: best?.service ?? null,
        service_type: best?.service_type ?? null,
        matched_by: best?.matched_by ?? null,
        matches,
      };
    },
  };
}

function addressFacts(data: EnricherData, addr: Address | null): AddressFacts {
  if (!addr) return { addr: null, asn: null, as_org: null, country: null, special: 'not an IP address' };
  const special = specialPurpose(addr);
  // Special-purpose addresses are in no one's network: answers a data file might still have for
  // them (some list 2001::/32 under its relays) would only mislead.
  if (special) return { addr, asn: null, as_org: null, country: null, special };
  const first = (sources: readonly DataSource[]) => {
    for (const s of sources) {
      const v = s.lookup(addr);
      if (v) return v;
    }
    return null;
  };
  const asn = first(data.asn);
  const country = first(data.country);
  return {
    addr,
    asn: asn && asn.num > 0 ? asn.num : null,
    as_org: asn?.text || null,
    country: country?.text || null,
    special: null,
  };
}
