import type { Finding, FindingKind, Severity } from '../analyse/types.js';
import { RuawatchError } from '../errors.js';

export type ChannelName = 'email' | 'matrix' | 'discord';
export const CHANNEL_NAMES: ChannelName[] = ['email', 'matrix', 'discord'];

export type NotificationEvent = 'opened' | 'reminder' | 'resolved' | 'digest' | 'test';

/** A message rendered once, when queued, and sent as is by every channel (render.ts). */
/** What an alert's message is written from (render.ts): the finding's fields and when it opened. */
export type AlertView = Pick<Finding, 'key' | 'kind' | 'severity' | 'domain' | 'source_ip' | 'source_name' | 'reporter' | 'summary'> & {
  first_seen: number;
  /** For a reminder: what got worse since the last message (store/alerts.ts changeOf). */
  change?: string;
};

/**
 * How alert messages are written (render.ts renderAlert, renderFallback), given to the store that
 * queues them: the store keeps the queue, the notify layer decides what a message says.
 */
export interface AlertRenderer {
  alert(view: AlertView, event: 'opened' | 'reminder' | 'resolved', now: number): Message;
  /**
   * The short notice standing for a parked message: kind and domain only. `how`: the channel
   * refused it, or kept deferring it while it took other messages.
   */
  fallback(
    alert: { kind: FindingKind; domain: string } | null,
    event: NotificationEvent,
    status: string | null,
    now: number,
    how?: 'refused' | 'deferred',
  ): Message;
}

export interface Message {
  event: NotificationEvent;
  /** What colours it: the finding's severity, or "resolved". */
  tone: Severity | 'resolved';
  /** One line: the email subject, the Discord embed title, the first line in Matrix. */
  title: string;
  text: string;
  html: string;
  fields: { name: string; value: string }[];
  /** Epoch seconds the message speaks for. */
  at: number;
}

export interface Channel {
  readonly name: ChannelName;
  /**
   * How long the receiver recognises a send repeated with the same `txnId` as the message it
   * already posted, in ms; 0 when it does not (delivery rules in deliver.ts).
   */
  readonly dedupWindowMs: number;
  /** Sends one message; `txnId` is unique per queued message and the same on every retry. */
  send(message: Message, txnId: string): Promise<void>;
  /**
   * Checks, without sending anything, that a message could be sent (the login, the token, the
   * room or channel) and says what it found; throws what would fail. `config check --connect`.
   */
  probe?(): Promise<string>;
  close(): Promise<void>;
}

/**
 * Who a failed send is the fault of, which decides what happens next (deliver.ts):
 * - `retry`: nothing says it will fail again (network, timeout, 5xx, 429, SMTP 4xx): tried again
 *   with backoff, then left queued for the next run;
 * - `message`: this message was refused for good (SMTP 5xx to its content, HTTP 4xx about its
 *   body): it is parked and the channel moves on;
 * - `channel`: the refusal would hit every message (bad credentials, no permission, unknown room,
 *   channel or webhook, recipients refused): the channel is held, its messages stay queued in order.
 */
export type FailureScope = 'retry' | 'message' | 'channel';

/**
 * A failed send. Its message does not name the channel: every log line, summary and status that
 * shows it names the channel already. `unanswered` says the request may have reached the receiver and been accepted
 * (a timeout or a connection lost after the message went out): sending it again may post it twice.
 * `status` is the bare protocol status ("SMTP 554", "HTTP 400") without the receiver's text.
 */
export class DeliveryError extends RuawatchError {
  readonly scope: FailureScope;
  readonly retryAfterMs: number | null;
  readonly unanswered: boolean;
  readonly status: string | null;
  constructor(
    message: string,
    scope: FailureScope,
    opts: { retryAfterMs?: number | null; unanswered?: boolean; status?: string | null; cause?: unknown } = {},
  ) {
    // Retryable is the scope's `retry`: the only failure tried again.
    super('E_DELIVERY', message, { cause: opts.cause, retryable: scope === 'retry' });
    this.name = 'DeliveryError';
    this.scope = scope;
    this.retryAfterMs = opts.retryAfterMs ?? null;
    this.unanswered = opts.unanswered ?? false;
    this.status = opts.status ?? null;
  }
}

/** Any error as a DeliveryError: one thrown by something else counts as a network failure. */
export function asDeliveryError(err: unknown): DeliveryError {
  return err instanceof DeliveryError ? err : new DeliveryError(err instanceof Error ? err.message : String(err), 'retry');
}

/**
 * Who is at fault for an HTTP error status: 408, 429 and 5xx are worth another try; 401, 403, 404
 * and 410 say the token, the permission or the room/channel/webhook is wrong, for every message
 * alike; any other 4xx is about this request's body, so about this message.
 */
export function httpScope(status: number): FailureScope {
  if (status === 408 || status === 429 || status >= 500) return 'retry';
  if (status === 401 || status === 403 || status === 404 || status === 410) return 'channel';
  return status >= 400 ? 'message' : 'retry';
}

export interface RetryPolicy {
  attempts: number;
  /** First backoff; doubled per attempt. */
  baseMs: number;
  /** Longest wait a rate limit may ask for within a run; longer ones wait for the next run. */
  maxWaitMs: number;
  /** How long a send may wait for its answer; unset: each channel's own (15 s HTTP, 60 s SMTP). */
  timeoutMs?: number;
}

export const defaultRetry: RetryPolicy = { attempts: 4, baseMs: 1000, maxWaitMs: 60_000 };

export async function withRetry(policy: RetryPolicy, send: () => Promise<void>, sleep = defaultSleep): Promise<number> {
  for (let attempt = 1; ; attempt++) {
    try {
      await send();
      return attempt;
    } catch (err) {
      const e = asDeliveryError(err);
      if (!e.retryable || attempt >= policy.attempts) throw e;
      const wait = e.retryAfterMs ?? policy.baseMs * 2 ** (attempt - 1);
      if (wait > policy.maxWaitMs)
        throw new DeliveryError(`${e.message} (asked to wait ${Math.ceil(wait / 1000)} s; trying next run)`, 'retry');
      await sleep(wait);
    }
  }
}

export function defaultSleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Network error codes that mean the request never left: nothing can have been posted. */
const NOT_SENT = new Set([
  'ECONNREFUSED',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EADDRNOTAVAIL',
  'UND_ERR_CONNECT_TIMEOUT',
  'CERT_HAS_EXPIRED',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'ERR_TLS_CERT_ALTNAME_INVALID',
]);

/**
 * Whether a failed HTTP request may still have been received and acted on: anything but an error
 * that says the connection was never made (a timeout, a reset, a closed socket all may come after
 * the body went out).
 */
export function mayHaveArrived(err: unknown): boolean {
  for (let e: unknown = err, depth = 0; e && depth < 4; depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string' && NOT_SENT.has(code)) return false;
    e = (e as { cause?: unknown }).cause;
  }
  return true;
}
