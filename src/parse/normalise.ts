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

/**
 * A DKIM selector: DNS labels (RFC 6376 section 3.1), which compare without regard to case
 * (RFC 4343), so spelled like a domain. The store, the rollups and the rules trust this spelling.
 */
export function normaliseSelector(s: string | null | undefined): string | null {
  return normaliseDomain(s);
}

/** An MX host as a TLS policy names it ("mx1.example.com", "*.mail.example.com"), spelled like a domain. */
export function normaliseMxHost(s: string | null | undefined): string | null {
  return normaliseDomain(s);
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
  const groups = parseIpv6(t);
  if (!groups) return null;
  if (groups[0] === 0 && groups[1] === 0 && groups[2] === 0 && groups[3] === 0 && groups[4] === 0 && groups[5] === 0xffff) {
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
  return parts.join('.');
}

const COLON = 58;
const DOT = 46;

/** Value of a hexadecimal digit, or -1. */
function hexDigit(c: number): number {
  if (c >= 48 && c <= 57) return c - 48;
  const l = c | 0x20; // a-f and A-F alike
  return l >= 97 && l <= 102 ? l - 87 : -1;
}

/**
 * The eight 16-bit groups of IPv6 text (RFC 4291 section 2.2: 1-4 hex digits a group, one "::"
 * standing for one or more zero groups, an optional dotted IPv4 tail for the last 32 bits, written
 * without leading zeros), or null when the text is not one.
 *
 * Fast path (ARCHITECTURE.md, "Fast paths"): one pass over the characters in place of the WHATWG
 * URL parser's host parsing (or splitting and regular expressions): reports from large receivers
 * are full of IPv6 sources, and those took 4-5 times as long (docs/performance.md, "IPv6").
 * Invariant: canonicalIp gives, for any text with a colon, the address the URL parser reads from
 * "http://[text]/" (IPv4-mapped as dotted IPv4), or null where the URL parser refuses it.
 * Held by: test/unit/normalise.test.ts (20,000 generated texts, valid and not).
 */
function parseIpv6(t: string): number[] | null {
  const n = t.length;
  const groups: number[] = [];
  let gap = -1;
  let i = 0;
  if (n >= 2 && t.charCodeAt(0) === COLON && t.charCodeAt(1) === COLON) {
    gap = 0;
    i = 2;
  }
  while (i < n) {
    if (groups.length === 8) return null;
    const start = i;
    let value = 0;
    for (let d: number; i < n && (d = hexDigit(t.charCodeAt(i))) >= 0; i++) value = value * 16 + d;
    if (i < n && t.charCodeAt(i) === DOT) {
      const v4 = ipv4Tail(t, start);
      if (v4 < 0 || groups.length > 6) return null;
      groups.push(v4 >>> 16, v4 & 0xffff);
      break;
    }
    if (i === start || i - start > 4) return null;
    groups.push(value);
    if (i === n) break;
    if (t.charCodeAt(i) !== COLON || ++i === n) return null;
    if (t.charCodeAt(i) === COLON) {
      if (gap >= 0) return null;
      gap = groups.length;
      i++;
    }
  }
  if (gap < 0) return groups.length === 8 ? groups : null;
  // "::" stands for at least one group.
  if (groups.length > 7) return null;
  const out = groups.slice(0, gap);
  for (let k = 8 - groups.length; k > 0; k--) out.push(0);
  for (let k = gap; k < groups.length; k++) out.push(groups[k]!);
  return out;
}

/** A dotted IPv4 address that runs from `start` to the end of `t`, as a 32-bit number, or -1. */
function ipv4Tail(t: string, start: number): number {
  let value = 0;
  let parts = 0;
  let i = start;
  while (parts < 4) {
    const first = i;
    let part = 0;
    for (let c: number; i < t.length && (c = t.charCodeAt(i)) >= 48 && c <= 57; i++) part = part * 10 + c - 48;
    const digits = i - first;
    if (digits === 0 || digits > 3 || part > 255 || (digits > 1 && t.charCodeAt(first) === 48)) return -1;
    value = value * 256 + part;
    parts++;
    if (parts < 4 && (i === t.length || t.charCodeAt(i++) !== DOT)) return -1;
  }
  return i === t.length ? value : -1;
}

function compressIpv6(groups: number[]): string {
  // RFC 5952 section 4.2: compress the longest run of two or more zero groups, the first on a tie.
  let bestStart = -1;
  let bestLen = 1;
  for (let i = 0; i < 8;) {
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
  let out = '';
  for (let i = 0; i < 8; i++) {
    if (i === bestStart) {
      out += '::';
      i += bestLen - 1;
      continue;
    }
    if (out.length > 0 && i !== bestStart + bestLen) out += ':';
    out += groups[i]!.toString(16);
  }
  return out;
}

/** A canonical dotted quad (as canonicalIp writes it) as a number. */
export function v4Number(text: string): number {
  let value = 0;
  let part = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 46) {
      value = value * 256 + part;
      part = 0;
    } else part = part * 10 + c - 48;
  }
  return value * 256 + part;
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
