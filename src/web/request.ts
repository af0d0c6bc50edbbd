import { isIPv4, isIPv6 } from 'node:net';

/**
 * The parts of HTTP handling that must never throw on what a client sends: reading the request
 * target, and the headers every answer carries. Everything here is total.
 */

/** Sent with every response, errors and 401s included. */
export const SECURITY_HEADERS: Readonly<Record<string, string>> = {
  'x-content-type-options': 'nosniff',
  // frame-ancestors in the CSP is the modern form; X-Frame-Options covers browsers without it.
  'x-frame-options': 'DENY',
  'referrer-policy': 'no-referrer',
};

/** The dashboard page: everything from ruawatch itself, no inline script, never framed. */
export const PAGE_CSP =
  "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; " +
  "base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/** Anything else (JSON, text, errors): a browser opening it directly loads and runs nothing. */
export const PLAIN_CSP = "default-src 'none'; frame-ancestors 'none'";

export interface Target {
  /** The path as sent (still percent-encoded), without the query. */
  path: string;
  query: URLSearchParams;
}

// RFC 3986 section 3.3: a path is segments of pchar (unreserved, pct-encoded, sub-delims, ":", "@").
const PATH = /^(?:\/(?:[A-Za-z0-9\-._~!$&'()*+,;=:@]|%[0-9A-Fa-f]{2})*)+$/;
// Section 3.4, a little wider: visible ASCII but "#", since browsers leave some characters such as
// "|" or "{" unencoded in a query. URLSearchParams reads a stray "%" as itself.
const QUERY = /^[\x21\x22\x24-\x7e]*$/;
const MAX_TARGET = 4096;

/**
 * Reads a request target (RFC 9112 section 3.2): origin-form (`/path?query`) or absolute-form
 * (`http://host/path`, which a server must accept; the host is ignored). Returns null for anything
 * else, asterisk-form included, and for a target that is not a well-formed URI path.
 */
export function parseTarget(raw: string | undefined): Target | null {
  if (!raw || raw.length > MAX_TARGET) return null;
  let target = raw;
  if (!target.startsWith('/')) {
    if (!/^https?:\/\//i.test(target)) return null;
    let url: URL;
    try {
      url = new URL(target);
    } catch {
      return null;
    }
    target = url.pathname + url.search;
  }
  const q = target.indexOf('?');
  const path = q < 0 ? target : target.slice(0, q);
  const query = q < 0 ? '' : target.slice(q + 1);
  if (!PATH.test(path) || !QUERY.test(query)) return null;
  return { path, query: new URLSearchParams(query) };
}

/**
 * Whether a request's Host header may reach a dashboard that asks for no credentials. DNS
 * rebinding: a page on attacker.example whose name is then pointed at 127.0.0.1 reaches this
 * server from the user's own browser, same-origin as far as the browser knows, and reads the
 * answers; its requests carry `Host: attacker.example`. A name cannot be trusted, an address can
 * (nobody can rebind an address), and so can `localhost` and names under it (RFC 6761 section
 * 6.3; browsers answer them with loopback themselves). Other names only when the user lists them
 * ([web] allowed_hosts: the name a reverse proxy passes on). No Host at all (HTTP/1.0) is not
 * something a browser sends: allowed. Total: any bytes in, a boolean out.
 */
export function hostAllowed(host: string | undefined, allowed: readonly string[]): boolean {
  if (host === undefined) return true;
  const h = host.trim().toLowerCase();
  if (h.startsWith('[')) {
    const end = h.indexOf(']');
    return end > 0 && isIPv6(h.slice(1, end)) && /^(?::\d{1,5})?$/.test(h.slice(end + 1));
  }
  const m = /^([^:]*)(?::\d{1,5})?$/.exec(h);
  if (!m) return false;
  const name = m[1]!.replace(/\.$/, '');
  if (name === '') return false;
  if (isIPv4(name) || name === 'localhost' || name.endsWith('.localhost')) return true;
  return allowed.some((a) => a.toLowerCase().replace(/\.$/, '') === name);
}

/** An answer written straight to a socket, for a request too malformed to have a response object. */
export function rawResponse(status: number, reason: string): string {
  const body = `${reason.toLowerCase()}\n`;
  const headers = {
    'content-type': 'text/plain; charset=utf-8',
    'content-length': String(Buffer.byteLength(body)),
    'cache-control': 'no-store',
    'content-security-policy': PLAIN_CSP,
    ...SECURITY_HEADERS,
    connection: 'close',
  };
  return `HTTP/1.1 ${status} ${reason}\r\n${Object.entries(headers)
    .map(([k, v]) => `${k}: ${v}\r\n`)
    .join('')}\r\n${body}`;
}

/**
 * The key a client is throttled by: its address, or for IPv6 its /64 (one customer usually gets
 * a whole /64, so single addresses would cost an attacker nothing). IPv4-mapped IPv6 is IPv4.
 */
export function clientKey(address: string | undefined): string {
  if (!address) return 'unknown';
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped) return mapped[1]!;
  if (!address.includes(':')) return address;
  const [head = '', tail = ''] = address.toLowerCase().split('::');
  const left = head ? head.split(':') : [];
  const right = tail ? tail.split(':') : [];
  const groups = address.includes('::')
    ? [...left, ...Array<string>(Math.max(0, 8 - left.length - right.length)).fill('0'), ...right]
    : left;
  return `${groups
    .slice(0, 4)
    .map((g) => g.replace(/^0+(?=.)/, ''))
    .join(':')}::/64`;
}
