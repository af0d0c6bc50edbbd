import { isIPv4, isIPv6 } from 'node:net';

/** Trimmed text, or null when nothing is left. */
export function clean(s: string | null | undefined): string | null {
  if (s === null || s === undefined) return null;
  const t = s.trim();
  return t.length ? t : null;
}

/** Lower-case domain without the trailing root dot. */
export function normaliseDomain(s: string | null | undefined): string | null {
  const t = clean(s);
  if (t === null) return null;
  return t.toLowerCase().replace(/\.+$/, '') || null;
}

/** Lower-case word ("Pass " -> "pass"). */
export function normaliseWord(s: string | null | undefined): string | null {
  const t = clean(s);
  return t === null ? null : t.toLowerCase();
}

/**
 * Authentication results in RFC spelling (RFC 7489 appendix C, RFC 8601 section 2.7).
 * Reporters send "Pass", "hardfail" (an old SPF spelling), "temp_error" and the like.
 */
const RESULT_ALIASES: Record<string, string> = {
  hardfail: 'fail',
  'hard-fail': 'fail',
  'soft-fail': 'softfail',
  temp_error: 'temperror',
  'temp-error': 'temperror',
  tempfail: 'temperror',
  perm_error: 'permerror',
  'perm-error': 'permerror',
  permfail: 'permerror',
};

export function normaliseResult(s: string | null | undefined): string | null {
  const w = normaliseWord(s);
  // Every alias is 8 characters or longer: the usual "pass" or "none" needs no lookup.
  if (w === null || w.length < 8) return w;
  return RESULT_ALIASES[w] ?? w;
}

/**
 * Canonical text form of an IP address: IPv4 dotted quad without leading zeros, IPv6 in RFC 5952
 * form (lower case, longest zero run compressed). IPv4-mapped IPv6 becomes plain IPv4 so the same
 * sender is one source. Returns null when the text is not an IP address.
 */
export function canonicalIp(s: string | null | undefined): string | null {
  // Fast path for the common case, already canonical IPv4 ("192.0.2.1"): one regex, no rebuild.
  if (s && CANONICAL_V4.test(s)) return s;
  let t = clean(s);
  if (t === null) return null;
  if (t.startsWith('[') && t.endsWith(']')) t = t.slice(1, -1);
  const zone = t.indexOf('%');
  if (zone >= 0) t = t.slice(0, zone);
  const v4 = canonicalIpv4(t);
  if (v4) return v4;
  if (!isIPv6(t)) return null;
  const groups = expandIpv6(t);
  if (!groups) return null;
  if (groups.slice(0, 5).every((g) => g === 0) && groups[5] === 0xffff) {
    return `${groups[6]! >> 8}.${groups[6]! & 255}.${groups[7]! >> 8}.${groups[7]! & 255}`;
  }
  return compressIpv6(groups);
}

const CANONICAL_V4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;

function canonicalIpv4(t: string): string | null {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(t);
  if (!m) return null;
  const parts = m.slice(1).map((p) => Number.parseInt(p, 10));
  if (parts.some((p) => p > 255)) return null;
  const out = parts.join('.');
  return isIPv4(out) ? out : null;
}

function expandIpv6(t: string): number[] | null {
  let s = t.toLowerCase();
  // An embedded IPv4 tail ("::ffff:192.0.2.1", "64:ff9b::1.2.3.4") becomes its two hex groups.
  const lastColon = s.lastIndexOf(':');
  const tail = s.slice(lastColon + 1);
  if (tail.includes('.')) {
    const v4 = canonicalIpv4(tail);
    if (!v4) return null;
    const o = v4.split('.').map(Number);
    s = `${s.slice(0, lastColon + 1)}${((o[0]! << 8) | o[1]!).toString(16)}:${((o[2]! << 8) | o[3]!).toString(16)}`;
  }
  const halves = s.split('::');
  if (halves.length > 2) return null;
  const parse = (h: string) => (h === '' ? [] : h.split(':').map((g) => (/^[0-9a-f]{1,4}$/.test(g) ? Number.parseInt(g, 16) : NaN)));
  const head = parse(halves[0]!);
  let groups = head;
  if (halves.length === 2) {
    const rest = parse(halves[1]!);
    const fill = 8 - head.length - rest.length;
    if (fill < 1) return null;
    groups = [...head, ...new Array<number>(fill).fill(0), ...rest];
  }
  if (groups.length !== 8 || groups.some((g) => Number.isNaN(g))) return null;
  return groups;
}

function compressIpv6(groups: number[]): string {
  // RFC 5952 section 4.2: compress the longest run of two or more zero groups, the first on a tie.
  let bestStart = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestStart < 0) return hex.join(':');
  return `${hex.slice(0, bestStart).join(':')}::${hex.slice(bestStart + bestLen).join(':')}`;
}

/** Non-negative integer from text such as " 12 " or "12.0"; null when it is not one. */
export function parseCount(s: string | number | null | undefined): number | null {
  if (typeof s === 'number') return Number.isFinite(s) && s >= 0 ? Math.floor(s) : null;
  const t = clean(s);
  if (t === null || !/^\+?\d+(\.0*)?$/.test(t)) return null;
  const n = Number.parseInt(t, 10);
  return Number.isSafeInteger(n) ? n : null;
}

/** Report ids are sometimes sent wrapped like Message-IDs: "<abc@host>" is stored as "abc@host". */
export function normaliseReportId(s: string | null | undefined): string | null {
  const t = clean(s);
  if (t === null) return null;
  const m = /^<(.+)>$/.exec(t);
  return m ? m[1]!.trim() : t;
}

/** Domain part of an e-mail address ("Name <a@b.example>" -> "b.example"). */
export function emailDomain(s: string | null | undefined): string | null {
  const t = clean(s);
  if (t === null) return null;
  const m = /@([^\s>@]+)>?\s*$/.exec(t.replace(/^mailto:/i, ''));
  return m ? normaliseDomain(m[1]) : null;
}
