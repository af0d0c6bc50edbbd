import { canonicalIp, v4Number } from '../parse/normalise.js';

/**
 * Addresses as numbers, for range tables. IPv4 is one unsigned 32-bit number; IPv6 is four 32-bit
 * words, most significant first, compared in that order. IPv4-mapped IPv6 (::ffff:a.b.c.d) is IPv4:
 * canonicalIp() already turns it into the dotted form, so one sender is one address everywhere.
 */
export type Address = { family: 4; text: string; v4: number } | { family: 6; text: string; v6: V6 };

/** Four 32-bit words, most significant first. */
export type V6 = [number, number, number, number];

/** Parses any spelling of an IP address; null when the text is not one. */
export function parseAddress(input: string): Address | null {
  const text = canonicalIp(input);
  if (text === null) return null;
  if (text.includes('.')) return { family: 4, text, v4: v4Number(text) };
  return { family: 6, text, v6: v6Words(text) };
}

/** Canonical IPv6 text (lower case, at most one "::", no IPv4 tail) as four words. */
function v6Words(text: string): V6 {
  const gap = text.indexOf('::');
  const head = gap < 0 ? text.split(':') : text.slice(0, gap) ? text.slice(0, gap).split(':') : [];
  const tail = gap < 0 ? [] : text.slice(gap + 2) ? text.slice(gap + 2).split(':') : [];
  const groups = [...head.map(hex), ...new Array<number>(8 - head.length - tail.length).fill(0), ...tail.map(hex)];
  const w = (i: number) => (groups[i]! * 65536 + groups[i + 1]!) >>> 0;
  return [w(0), w(2), w(4), w(6)];
}

function hex(s: string): number {
  return Number.parseInt(s, 16);
}

/** -1, 0 or 1, as a is below, equal to or above b. */
export function compareV6(a: ArrayLike<number>, b: ArrayLike<number>): number {
  for (let i = 0; i < 4; i++) {
    if (a[i]! !== b[i]!) return a[i]! < b[i]! ? -1 : 1;
  }
  return 0;
}

/** An inclusive range of addresses of one family. */
export type Range = { family: 4; start: number; end: number } | { family: 6; start: V6; end: V6 };

/**
 * A range written as CIDR ("192.0.2.0/24", "2001:db8::/32"), as "first-last", or as a single
 * address; null when it is none of these or the prefix length is out of bounds. The address of a
 * CIDR block need not be its first: "192.0.2.7/24" is 192.0.2.0/24.
 */
export function parseRange(input: string): Range | null {
  const t = input.trim();
  const dash = t.indexOf('-');
  if (dash > 0) {
    const a = parseAddress(t.slice(0, dash));
    const b = parseAddress(t.slice(dash + 1));
    if (!a || !b || a.family !== b.family) return null;
    if (a.family === 4 && b.family === 4) return a.v4 <= b.v4 ? { family: 4, start: a.v4, end: b.v4 } : null;
    if (a.family === 6 && b.family === 6) return compareV6(a.v6, b.v6) <= 0 ? { family: 6, start: a.v6, end: b.v6 } : null;
    return null;
  }
  const slash = t.indexOf('/');
  const addr = parseAddress(slash < 0 ? t : t.slice(0, slash));
  if (!addr) return null;
  // An IPv4-mapped block (::ffff:192.0.2.0/120) is read as the IPv4 block it maps.
  const mapped = addr.family === 4 && slash >= 0 && t.slice(0, slash).includes(':');
  const bits = addr.family === 4 ? 32 : 128;
  let prefix = bits;
  if (slash >= 0) {
    const p = t.slice(slash + 1);
    if (!/^\d{1,3}$/.test(p)) return null;
    prefix = Number(p) - (mapped ? 96 : 0);
    if (prefix < 0 || prefix > bits) return null;
  }
  if (addr.family === 4) {
    const size = 2 ** (32 - prefix);
    const start = Math.floor(addr.v4 / size) * size;
    return { family: 4, start, end: start + size - 1 };
  }
  const start = [0, 0, 0, 0] as V6;
  const end = [0, 0, 0, 0] as V6;
  for (let i = 0; i < 4; i++) {
    const keep = Math.max(0, Math.min(32, prefix - i * 32));
    const mask = keep === 0 ? 0 : keep === 32 ? 0xffffffff : (0xffffffff << (32 - keep)) >>> 0;
    start[i] = (addr.v6[i]! & mask) >>> 0;
    end[i] = (start[i]! | (~mask >>> 0)) >>> 0;
  }
  return { family: 6, start, end };
}

/** Whether an address lies in a range of its family. */
export function inRange(addr: Address, r: Range): boolean {
  if (addr.family === 4) return r.family === 4 && addr.v4 >= r.start && addr.v4 <= r.end;
  return r.family === 6 && compareV6(addr.v6, r.start) >= 0 && compareV6(addr.v6, r.end) <= 0;
}

/** Number of addresses in a range, as a float (exact enough to order ranges by size). */
export function rangeSize(r: Range): number {
  if (r.family === 4) return r.end - r.start + 1;
  let size = 0;
  for (let i = 0; i < 4; i++) size = size * 2 ** 32 + (r.end[i]! - r.start[i]!);
  return size + 1;
}

/**
 * Special-purpose blocks (IANA's IPv4 and IPv6 Special-Purpose Address Registries, RFC 6890 and
 * the RFCs each entry cites). An address in one is not on the public Internet: no AS announces it,
 * so no network, country or service can be named for it. A reporter that lists one has seen mail
 * handed over inside some network (a relay, a NAT), and the address says nothing about who sent it.
 */
const SPECIAL: { range: string; label: string }[] = [
  { range: '0.0.0.0/8', label: 'this network (RFC 791)' },
  { range: '10.0.0.0/8', label: 'private (RFC 1918)' },
  { range: '100.64.0.0/10', label: 'shared address space, carrier-grade NAT (RFC 6598)' },
  { range: '127.0.0.0/8', label: 'loopback (RFC 1122)' },
  { range: '169.254.0.0/16', label: 'link-local (RFC 3927)' },
  { range: '172.16.0.0/12', label: 'private (RFC 1918)' },
  { range: '192.0.0.0/24', label: 'IETF protocol assignments (RFC 6890)' },
  { range: '192.0.2.0/24', label: 'documentation (RFC 5737)' },
  { range: '192.88.99.0/24', label: 'deprecated 6to4 relay anycast (RFC 7526)' },
  { range: '192.168.0.0/16', label: 'private (RFC 1918)' },
  { range: '198.18.0.0/15', label: 'benchmarking (RFC 2544)' },
  { range: '198.51.100.0/24', label: 'documentation (RFC 5737)' },
  { range: '203.0.113.0/24', label: 'documentation (RFC 5737)' },
  { range: '224.0.0.0/4', label: 'multicast (RFC 5771)' },
  { range: '240.0.0.0/4', label: 'reserved (RFC 1112)' },
  { range: '::/127', label: 'unspecified or loopback (RFC 4291)' },
  { range: '64:ff9b:1::/48', label: 'local-use IPv4/IPv6 translation (RFC 8215)' },
  { range: '100::/64', label: 'discard-only (RFC 6666)' },
  { range: '2001::/23', label: 'IETF protocol assignments (RFC 2928)' },
  { range: '2001:db8::/32', label: 'documentation (RFC 3849)' },
  { range: '3fff::/20', label: 'documentation (RFC 9637)' },
  { range: 'fc00::/7', label: 'unique local, private (RFC 4193)' },
  { range: 'fe80::/10', label: 'link-local (RFC 4291)' },
  { range: 'ff00::/8', label: 'multicast (RFC 4291)' },
];

let special: { range: Range; label: string }[] | null = null;

/**
 * The special-purpose block an address is in, as words for a person ("private (RFC 1918)"), or
 * null for an ordinary public address. 2001::/23 holds Teredo (2001::/32), which is announced
 * and does carry traffic, but never mail a receiver could trace to a sender: it counts as special.
 */
export function specialPurpose(addr: Address): string | null {
  special ??= SPECIAL.map((s) => ({ range: parseRange(s.range)!, label: s.label }));
  for (const s of special) if (inRange(addr, s.range)) return s.label;
  return null;
}
