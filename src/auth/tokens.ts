import type { Logger } from 'pino';

/*
 * OAuth2 access tokens for a mailbox, got and renewed by ruawatch itself: kept until shortly before
 * they expire, dropped when a server refuses one, and never written to a log (the root logger also
 * redacts them, log.ts).
 */

export interface Token {
  /** The bearer token. Never logged. */
  readonly value: string;
  /** Epoch milliseconds; null when the token did not say (it is reused until a server refuses it). */
  readonly expiresAt: number | null;
  /** Got by this call rather than taken from the cache: a refusal is then not cured by asking again. */
  readonly fresh: boolean;
}

export interface TokenProvider {
  /** Where tokens come from, for messages: "the Microsoft identity platform (tenant ..., client ...)". */
  readonly source: string;
  /** A token valid for a while yet: the cached one, else a new one. Rejects with an E_AUTH RuawatchError. */
  token(signal?: AbortSignal): Promise<Token>;
  /** A server refused this token (IMAP AUTHENTICATIONFAILED, HTTP 401): it is not handed out again. */
  refused(token: Token): void;
}

/** What a source of tokens answers: the token, and its lifetime in seconds when it said. */
export interface Issued {
  value: string;
  expiresIn: number | null;
}

/**
 * How long before its expiry a token is replaced: a quarter of its lifetime, at most 5 minutes. A
 * one-hour token is used for 55 minutes; one of 8 seconds (the tests' stand-in) for 6. The margin
 * covers clock skew and a connection that takes its time to log in.
 */
export function renewalMargin(lifetimeMs: number): number {
  return Math.min(5 * 60_000, lifetimeMs / 4);
}

/**
 * A cache in front of a source of tokens: one token at a time, asked for again shortly before it
 * expires or once refused; callers that ask while a request is under way share its answer.
 */
export class CachedTokens implements TokenProvider {
  private current: { value: string; expiresAt: number | null; renewAt: number } | null = null;
  private pending: Promise<Token> | null = null;

  constructor(
    readonly source: string,
    private readonly obtain: (signal?: AbortSignal) => Promise<Issued>,
    private readonly log: Logger,
    private readonly now: () => number = Date.now,
  ) {}

  token(signal?: AbortSignal): Promise<Token> {
    const c = this.current;
    if (c && this.now() < c.renewAt) return Promise.resolve({ value: c.value, expiresAt: c.expiresAt, fresh: false });
    this.pending ??= this.renew(signal).finally(() => (this.pending = null));
    return this.pending;
  }

  refused(token: Token): void {
    if (this.current?.value === token.value) {
      this.current = null;
      this.log.info({ source: this.source }, 'access token refused by the server; a new one is asked for');
    }
  }

  private async renew(signal?: AbortSignal): Promise<Token> {
    const t0 = this.now();
    const issued = await this.obtain(signal);
    const expiresAt = issued.expiresIn === null ? null : t0 + issued.expiresIn * 1000;
    const renewAt = expiresAt === null ? Number.POSITIVE_INFINITY : expiresAt - renewalMargin(issued.expiresIn! * 1000);
    this.current = { value: issued.value, expiresAt, renewAt };
    this.log.info({ source: this.source, expiresInSeconds: issued.expiresIn }, 'access token obtained');
    return { value: issued.value, expiresAt, fresh: true };
  }
}
