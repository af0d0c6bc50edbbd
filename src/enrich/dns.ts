import dns from 'node:dns';
import { canonicalIp } from '../parse/normalise.js';

/** The addresses (A and AAAA) a name resolves to; [] when it has none. Throws when the resolver fails. */
export type ForwardLookup = (name: string) => Promise<string[]>;

/** Forward lookups through the system's resolvers, one try with a 2 s timeout, like the PTR lookups. */
export function systemForwardLookup(): ForwardLookup {
  const resolver = new dns.promises.Resolver({ timeout: 2000, tries: 1 });
  const ask = async (query: Promise<string[]>): Promise<string[]> => {
    try {
      return await query;
    } catch (err) {
      const code = (err as { code?: string }).code;
      if (code === dns.NOTFOUND || code === dns.NODATA) return [];
      throw err;
    }
  };
  return async (name) => {
    const [v4, v6] = await Promise.all([ask(resolver.resolve4(name)), ask(resolver.resolve6(name))]);
    return [...v4, ...v6];
  };
}

/**
 * Forward-confirmed reverse DNS (FCrDNS, RFC 8601 section 3 calls the check "iprev"): a reverse
 * name counts only when it resolves back to the address. Anyone who controls the reverse zone of
 * an address can make it say "mail.google.com"; only Google can make mail.google.com resolve to it.
 * True when confirmed, false when the name does not lead back, null when the lookup failed (no
 * answer either way: the name is then shown but not trusted).
 */
export async function confirmReverseName(ip: string, name: string, lookup: ForwardLookup): Promise<boolean | null> {
  const want = canonicalIp(ip);
  if (want === null) return false;
  let addresses: string[];
  try {
    addresses = await lookup(name);
  } catch {
    return null;
  }
  return addresses.some((a) => canonicalIp(a) === want);
}
