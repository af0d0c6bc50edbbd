import type { Severity } from '../analyse/types.js';

export type ChannelName = 'email' | 'matrix' | 'discord';
export const CHANNEL_NAMES: ChannelName[] = ['email', 'matrix', 'discord'];

export type NotificationEvent = 'opened' | 'reminder' | 'resolved' | 'digest' | 'test';

/** A message rendered once, when queued, and sent as is by every channel (render.ts). */
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
  /** Sends one message; `txnId` is unique per queued message and the same on every retry. */
  send(message: Message, txnId: string): Promise<void>;
  close(): Promise<void>;
}

/**
 * A failed send. `retryable` errors (network, 5xx, 429, SMTP 4xx) are tried again after
 * `retryAfterMs` or the backoff; the others (bad token, unknown room) wait for the next run.
 */
export class DeliveryError extends Error {
  constructor(
    message: string,
    readonly retryable: boolean,
    readonly retryAfterMs: number | null = null,
  ) {
    super(message);
    this.name = 'DeliveryError';
  }
}

export interface RetryPolicy {
  attempts: number;
  /** First backoff; doubled per attempt. */
  baseMs: number;
  /** Longest wait a rate limit may ask for within a run; longer ones wait for the next run. */
  maxWaitMs: number;
}

export const defaultRetry: RetryPolicy = { attempts: 4, baseMs: 1000, maxWaitMs: 60_000 };

export async function withRetry(policy: RetryPolicy, send: () => Promise<void>, sleep = defaultSleep): Promise<number> {
  for (let attempt = 1; ; attempt++) {
    try {
      await send();
      return attempt;
    } catch (err) {
      const e = err instanceof DeliveryError ? err : new DeliveryError(err instanceof Error ? err.message : String(err), true);
      if (!e.retryable || attempt >= policy.attempts) throw e;
      const wait = e.retryAfterMs ?? policy.baseMs * 2 ** (attempt - 1);
      if (wait > policy.maxWaitMs)
        throw new DeliveryError(`${e.message} (asked to wait ${Math.ceil(wait / 1000)} s; trying next run)`, true);
      await sleep(wait);
    }
  }
}

export function defaultSleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
