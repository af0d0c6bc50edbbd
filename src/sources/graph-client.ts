import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import { type NetworkError, delay, httpRequest, jsonObject, type HttpAnswer } from '../auth/http.js';
import type { Token, TokenProvider } from '../auth/tokens.js';
import { RuawatchError } from '../errors.js';
import { MailboxError } from '../pipeline/mailbox.js';

/*
 * Requests to Microsoft Graph for one mailbox (https://learn.microsoft.com/graph/): the bearer
 * token, throttling, the answer's size, and errors as the mailbox loop wants them.
 *
 * Throttling (https://learn.microsoft.com/graph/throttling): 429 Too Many Requests comes with
 * Retry-After, which is waited for as asked; 503 and 504 are transient too, waited for as their
 * Retry-After says or with doubling delays. Exchange Online allows 4 requests at once per app and
 * mailbox: no more are ever in flight.
 */

/** Exchange Online's limit of concurrent requests per app and mailbox. */
export const MAX_CONCURRENT = 4;
/** Tries of a throttled (429, 503, 504) request before the pass gives up (and the loop reconnects). */
const THROTTLE_TRIES = 6;
/** Tries of a request whose connection failed (reset, refused) before the loop's own reconnect takes over. */
const NETWORK_TRIES = 3;
/** A Retry-After longer than this is not waited out within the pass: the pass gives up and the next poll tries. */
const MAX_RETRY_AFTER_MS = 5 * 60_000;
/** A JSON answer (a page of 250 messages' ids is ~100 KiB) is never larger. */
const MAX_JSON_BYTES = 16 * 1024 * 1024;

export interface GraphClientOptions {
  /** The Graph endpoint with its version, no trailing slash: https://graph.microsoft.com/v1.0. */
  baseUrl: string;
  /** The mailbox: a user principal name or object id. */
  user: string;
  tokens: TokenProvider;
  timeoutMs: number;
  log: Logger;
  /** The mailbox's configured name, for messages. */
  name: string;
  /** Aborts every request and wait at once (the session is destroyed). */
  signal: AbortSignal;
  /** The first delay when a throttled answer gives no Retry-After (doubles each time); tests shorten it. */
  backoffMs?: number;
}

export interface GraphRequest {
  query?: Record<string, string>;
  /** A JSON body (POST, PATCH). */
  body?: unknown;
  /** Largest answer read (default 16 MiB); past it, `over` is set on the answer. */
  maxBytes?: number;
}

/** Graph's error answer: {"error": {"code": "...", "message": "..."}}. */
export function graphErrorOf(answer: HttpAnswer): { code: string; message: string } {
  const body = answer.over ? null : jsonObject(answer.body);
  const err = body?.error as { code?: unknown; message?: unknown } | undefined;
  return {
    code: typeof err?.code === 'string' ? err.code : '',
    message: typeof err?.message === 'string' ? err.message.slice(0, 500) : '',
  };
}

export class GraphClient {
  private readonly base: URL;
  private inFlight = 0;
  private readonly waiting: (() => void)[] = [];

  constructor(private readonly opts: GraphClientOptions) {
    this.base = new URL(opts.baseUrl.replace(/\/+$/, ''));
  }

  /** The URL of a path under the mailbox: /users/{user}{path}. */
  url(path: string, query?: Record<string, string>): string {
    const u = new URL(`${this.base.href}/users/${encodeURIComponent(this.opts.user)}${path}`);
    // URLSearchParams would write spaces as "+", which OData does not read as a space: %20 it is.
    if (query)
      u.search = Object.entries(query)
        .map(([k, v]) => `${k}=${encodeURIComponent(v)}`)
        .join('&');
    return u.href;
  }

  /**
   * A link Graph gave (@odata.nextLink): followed only when it points back into the same Graph
   * endpoint, so the token is never sent anywhere else.
   */
  checkLink(link: unknown): string {
    if (typeof link !== 'string') throw this.error('Graph answered a next-page link that is not a string', false);
    let u: URL;
    try {
      u = new URL(link);
    } catch {
      throw this.error('Graph answered a next-page link that is not a URL', false);
    }
    if (u.origin !== this.base.origin || !u.pathname.startsWith(`${this.base.pathname}/`)) {
      throw this.error(`Graph answered a next-page link outside ${this.base.href}; not followed`, false);
    }
    return u.href;
  }

  /** A request answered with JSON (2xx); any other answer is an error. */
  async json(method: string, target: string, what: string, req: GraphRequest = {}): Promise<Record<string, unknown>> {
    const answer = await this.request(method, target, req);
    if (answer.status < 200 || answer.status > 299) throw this.failure(answer, what);
    if (answer.status === 204) return {};
    const body = answer.over ? null : jsonObject(answer.body);
    if (!body) throw this.error(`${what}: Graph answered HTTP ${answer.status} without a JSON object`, true);
    return body;
  }

  /**
   * One request, with the token, throttling and retries taken care of; the answer whatever its
   * status. `target` is a path under the mailbox, or a full URL from checkLink.
   */
  async request(method: string, target: string, req: GraphRequest = {}): Promise<HttpAnswer> {
    const url = target.startsWith('https://') || target.startsWith('http://') ? target : this.url(target, req.query);
    let throttled = 0;
    let networkFailures = 0;
    let renewed = false;
    for (;;) {
      this.checkAborted();
      let token: Token;
      try {
        token = await this.opts.tokens.token(this.opts.signal);
      } catch (err) {
        if (err instanceof RuawatchError) {
          throw new MailboxError(err.code, `mailbox ${this.opts.name} (graph): ${err.message}`, { cause: err, retryable: err.retryable });
        }
        throw err;
      }
      let answer: HttpAnswer;
      await this.slot();
      try {
        answer = await httpRequest(
          url,
          {
            method,
            headers: {
              authorization: `Bearer ${token.value}`,
              accept: 'application/json',
              'client-request-id': randomUUID(),
              ...(req.body === undefined ? {} : { 'content-type': 'application/json' }),
            },
            ...(req.body === undefined ? {} : { body: JSON.stringify(req.body) }),
          },
          req.maxBytes ?? MAX_JSON_BYTES,
          { timeoutMs: this.opts.timeoutMs, signal: this.opts.signal },
        );
      } catch (err) {
        this.release();
        this.checkAborted();
        const e = err as NetworkError;
        if (++networkFailures < NETWORK_TRIES) {
          this.opts.log.warn({ mailbox: this.opts.name, err: e.message, code: e.errno }, 'Graph request failed; trying again');
          await delay((this.opts.backoffMs ?? 1000) * networkFailures, this.opts.signal);
          continue;
        }
        throw new MailboxError(
          'E_GRAPH',
          `mailbox ${this.opts.name} (graph): ${method} ${new URL(url).pathname}: ${e.message} (${e.errno})`,
          {
            cause: err,
            retryable: true,
            hint: networkHint(e.errno, this.base),
          },
        );
      }
      this.release();
      if (answer.status === 401) {
        // An expired or revoked token: a new one, once. A new one refused too is the answer (and is
        // dropped as well, so the next pass asks again).
        this.opts.tokens.refused(token);
        if (!token.fresh && !renewed) {
          renewed = true;
          continue;
        }
        return answer;
      }
      if ((answer.status === 429 || answer.status === 503 || answer.status === 504) && ++throttled < THROTTLE_TRIES) {
        const asked = retryAfter(answer.headers.get('retry-after'));
        const wait = asked ?? (this.opts.backoffMs ?? 1000) * 2 ** (throttled - 1);
        if (wait > MAX_RETRY_AFTER_MS) {
          // Asking again before then only prolongs the throttling: this pass ends for the mailbox.
          const e = this.failure(answer, `${method} ${new URL(url).pathname}`);
          throw new MailboxError(
            'E_GRAPH',
            `${e.message}; Graph asks to wait ${Math.round(wait / 1000)} s (Retry-After), longer than a pass waits: the rest is read on a later pass`,
            { retryable: false },
          );
        }
        this.opts.log.warn(
          { mailbox: this.opts.name, status: answer.status, waitMs: wait, retryAfter: asked !== null },
          answer.status === 429 ? 'Graph throttled the request; waiting as Retry-After asks' : 'Graph is unavailable for now; waiting',
        );
        await delay(wait, this.opts.signal);
        continue;
      }
      return answer;
    }
  }

  /** An answer that is not the one wanted, as a MailboxError with Graph's code and message. */
  failure(answer: HttpAnswer, what: string): MailboxError {
    const { code, message } = graphErrorOf(answer);
    const requestId = answer.headers.get('request-id');
    const text = `${what}: HTTP ${answer.status}${code ? ` ${code}` : ''}${message ? `: ${message}` : ''}${requestId ? ` [request-id ${requestId}]` : ''}`;
    const retryable = answer.status >= 500 || answer.status === 429;
    return new MailboxError('E_GRAPH', `mailbox ${this.opts.name} (graph): ${text}`, {
      retryable,
      hint: failureHint(answer.status, code, this.opts.user),
    });
  }

  error(text: string, retryable: boolean): MailboxError {
    return new MailboxError('E_GRAPH', `mailbox ${this.opts.name} (graph): ${text}`, { retryable });
  }

  private checkAborted(): void {
    if (this.opts.signal.aborted) throw this.error('the session was closed', true);
  }

  private async slot(): Promise<void> {
    while (this.inFlight >= MAX_CONCURRENT) await new Promise<void>((resolve) => this.waiting.push(resolve));
    this.inFlight++;
  }

  private release(): void {
    this.inFlight--;
    this.waiting.shift()?.();
  }
}

/** Retry-After in milliseconds: delta-seconds or an HTTP date (RFC 9110 section 10.2.3); null if absent or unreadable. */
export function retryAfter(value: string | null, now = Date.now()): number | null {
  if (value === null) return null;
  const v = value.trim();
  if (/^\d+$/.test(v)) return Number(v) * 1000;
  const at = Date.parse(v);
  return Number.isFinite(at) ? Math.max(0, at - now) : null;
}

function networkHint(code: string, base: URL): string | null {
  switch (code) {
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return `the host name ${base.hostname} does not resolve: no DNS, or graph_url is wrong`;
    case 'ECONNREFUSED':
      return `nothing accepts connections at ${base.origin}: a proxy or firewall? (graph_url)`;
    case 'ETIMEDOUT':
      return `${base.origin} does not answer: a firewall that drops outgoing HTTPS?`;
    default:
      return code.startsWith('ERR_TLS') || code.includes('CERT')
        ? 'the TLS certificate is not trusted: behind an intercepting proxy, give its CA in NODE_EXTRA_CA_CERTS'
        : null;
  }
}

/** What to check for the answers that mean a missing permission or a wrong mailbox. */
function failureHint(status: number, code: string, user: string): string | null {
  if (status === 401)
    return 'Graph refused a token it had just been given: is Mail.ReadWrite granted to the app (admin consent, or RBAC for Applications)? (docs/mailboxes.md)';
  if (status === 403 || code === 'ErrorAccessDenied') {
    return `the app may not read ${user}: grant it Mail.ReadWrite for this mailbox (RBAC for Applications, or the Entra permission with an application access policy); changes take up to 2 hours to apply (docs/mailboxes.md)`;
  }
  if (status === 404 && /ErrorInvalidUser|MailboxNotEnabledForRESTAPI|ResourceNotFound|ErrorNonExistentMailbox/.test(code)) {
    return `${user} is not a mailbox of this tenant (user: its address or object id)`;
  }
  return null;
}
