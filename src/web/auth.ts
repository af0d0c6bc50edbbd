import { createHash, timingSafeEqual } from 'node:crypto';
import type { Config } from '../config/schema.js';

/**
 * Credentials for the dashboard, /metrics and /api: basic auth (RFC 7617) and/or a bearer token
 * (RFC 6750), whichever [web] configures; nothing configured means open.
 */
export type Verdict = 'open' | 'ok' | 'missing' | 'wrong';

const digest = (s: string) => createHash('sha256').update(s, 'utf8').digest();

/**
 * Both sides are hashed first, so the comparison takes the same time whatever the length or
 * content of what was sent, and says nothing about the length of the secret.
 */
function same(sent: string, expected: Buffer): boolean {
  return timingSafeEqual(digest(sent), expected);
}

// RFC 9110 section 11.1: scheme = token, matched case-insensitively; then one or more spaces.
const CREDENTIALS = /^([!#$%&'*+.^_`|~0-9A-Za-z-]+) +(.*)$/;

export class Credentials {
  private readonly token: Buffer | null;
  private readonly user: Buffer | null;
  private readonly password: Buffer | null;

  constructor(web: Config['web']) {
    this.token = web.token ? digest(web.token) : null;
    this.user = web.user ? digest(web.user) : null;
    this.password = web.user ? digest(web.password ?? '') : null;
  }

  get required(): boolean {
    return this.token !== null || this.user !== null;
  }

  /** What a 401 offers, as WWW-Authenticate values. */
  get challenges(): string[] {
    const out: string[] = [];
    if (this.user) out.push('Basic realm="ruawatch", charset="UTF-8"');
    if (this.token) out.push('Bearer');
    return out;
  }

  check(header: string | undefined): Verdict {
    if (!this.required) return 'open';
    if (header === undefined || header.trim() === '') return 'missing';
    const m = CREDENTIALS.exec(header.trim());
    if (!m) return 'wrong';
    const scheme = m[1]!.toLowerCase();
    const value = m[2]!.trim();
    if (scheme === 'bearer' && this.token) return same(value, this.token) ? 'ok' : 'wrong';
    if (scheme === 'basic' && this.user && this.password) {
      const decoded = Buffer.from(value, 'base64').toString('utf8');
      // RFC 7617 section 2: the user-id cannot contain a colon; the password can.
      const colon = decoded.indexOf(':');
      const user = colon < 0 ? decoded : decoded.slice(0, colon);
      const password = colon < 0 ? '' : decoded.slice(colon + 1);
      // Both compared every time: a wrong user name costs as long as a wrong password.
      const userOk = same(user, this.user);
      const passwordOk = same(password, this.password);
      return userOk && passwordOk && colon >= 0 ? 'ok' : 'wrong';
    }
    return 'wrong';
  }
}

export interface ThrottleOptions {
  /** Failed logins from one client allowed per window; the next ones get 429. */
  maxFailures: number;
  windowSeconds: number;
  /** Clients remembered at most; the oldest are forgotten first. */
  maxClients: number;
}

export const DEFAULT_THROTTLE: ThrottleOptions = { maxFailures: 10, windowSeconds: 600, maxClients: 10_000 };

/**
 * Failed logins per client in fixed windows. Memory is bounded: a flood from many addresses
 * pushes the oldest entries out rather than growing the table, which can let a client that was
 * blocked in again early; that costs an attacker maxClients addresses (IPv6 counts per /64).
 */
export class LoginThrottle {
  private readonly clients = new Map<string, { failures: number; resetAt: number }>();

  constructor(private readonly opts: ThrottleOptions = DEFAULT_THROTTLE) {}

  /** Seconds until the client may try again, or 0 when it may now. */
  blockedFor(client: string, now: number): number {
    const e = this.clients.get(client);
    if (!e) return 0;
    if (e.resetAt <= now) {
      this.clients.delete(client);
      return 0;
    }
    return e.failures >= this.opts.maxFailures ? e.resetAt - now : 0;
  }

  /** Records a failure; returns the failures in the current window. */
  fail(client: string, now: number): number {
    let e = this.clients.get(client);
    if (!e || e.resetAt <= now) {
      this.clients.delete(client);
      if (this.clients.size >= this.opts.maxClients) this.evict(now);
      e = { failures: 0, resetAt: now + this.opts.windowSeconds };
      this.clients.set(client, e);
    }
    return ++e.failures;
  }

  succeed(client: string): void {
    this.clients.delete(client);
  }

  get size(): number {
    return this.clients.size;
  }

  /**
   * Windows all have the same length and an entry is re-inserted when its window restarts, so the
   * Map's insertion order is the order of resetAt: the expired, then the oldest, come first.
   */
  private evict(now: number): void {
    for (const [k, e] of this.clients) {
      if (e.resetAt > now && this.clients.size < this.opts.maxClients) break;
      this.clients.delete(k);
    }
  }
}
