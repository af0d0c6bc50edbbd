import { asDeliveryError, type DeliveryError, type Channel, type Message, type RetryPolicy } from './types.js';

/**
 * The delivery rules for one queued message on one channel (docs: "Delivery rules"):
 *
 * - a failure worth another try (network, timeout, 5xx, 429, SMTP 4xx) is retried with backoff up
 *   to the policy's attempts, then the message stays queued and the channel stops for this run;
 * - a refusal of this message for good is parked: the channel moves on;
 * - a refusal that would meet every message (bad credentials, no permission, unknown room) holds
 *   the channel: nothing is parked, everything stays queued, in order, for the next run;
 * - a send that went unanswered may have been posted. Sent again within the receiver's
 *   deduplication window (Matrix transaction ids, a Discord bot's nonce), it cannot post twice;
 *   otherwise (a Discord webhook, SMTP once the data went out) a message goes out at most twice
 *   without an answer, then it is parked as unconfirmed.
 */
export interface QueuedMessage {
  message: Message;
  txn_id: string;
  /** Unanswered sends so far, counting earlier runs, and when the first was (epoch seconds). */
  unanswered: number;
  first_unanswered_at: number | null;
}

export type Outcome =
  | { result: 'delivered'; attempts: number }
  /** Refused for good (`refused`), or unanswered as often as is safe (`!refused`). */
  | { result: 'parked'; attempts: number; refused: boolean; reason: string; status: string | null }
  /** Still queued; `held` when the failure would meet every message alike. */
  | { result: 'kept'; attempts: number; held: boolean; error: string; status: string | null };

export interface DeliverDeps {
  /** Epoch milliseconds. */
  now: () => number;
  sleep: (ms: number) => Promise<void>;
  /** Told at once about each unanswered send (epoch seconds), so a crash cannot forget it. */
  onUnanswered: (at: number) => void;
}

/**
 * Whether a message may be sent (again) after `unanswered` sends without an answer: always while
 * that is at most one, so a timed-out send is repeated once; beyond that only while the receiver
 * still recognises a repeat, counted from the first unanswered send. At most two copies can show.
 */
export function mayResend(dedupWindowMs: number, unanswered: number, firstUnansweredAt: number | null, nowMs: number): boolean {
  if (unanswered < 2) return true;
  return firstUnansweredAt !== null && nowMs - firstUnansweredAt * 1000 < dedupWindowMs;
}

export async function deliverOne(channel: Channel, n: QueuedMessage, policy: RetryPolicy, deps: DeliverDeps): Promise<Outcome> {
  let unanswered = n.unanswered;
  let first = n.first_unanswered_at;
  let last: DeliveryError | null = null;
  for (let attempt = 1; ; attempt++) {
    if (!mayResend(channel.dedupWindowMs, unanswered, first, deps.now())) {
      const why = last ? `${last.message}; ` : '';
      return {
        result: 'parked',
        attempts: attempt - 1,
        refused: false,
        reason: `unconfirmed: ${why}sent ${unanswered} times without an answer, it may have arrived; not sent again so as not to post it twice`,
        status: null,
      };
    }
    try {
      await channel.send(n.message, n.txn_id);
      return { result: 'delivered', attempts: attempt };
    } catch (err) {
      const e = asDeliveryError(err);
      last = e;
      if (e.unanswered) {
        const at = Math.floor(deps.now() / 1000);
        unanswered++;
        first ??= at;
        deps.onUnanswered(at);
      }
      if (e.scope === 'message')
        return { result: 'parked', attempts: attempt, refused: true, reason: `refused: ${e.message}`, status: e.status };
      if (e.scope === 'channel') return { result: 'kept', attempts: attempt, held: true, error: e.message, status: e.status };
      if (!mayResend(channel.dedupWindowMs, unanswered, first, deps.now())) continue; // parked above, without waiting
      if (attempt >= policy.attempts) return { result: 'kept', attempts: attempt, held: false, error: e.message, status: e.status };
      const wait = e.retryAfterMs ?? policy.baseMs * 2 ** (attempt - 1);
      if (wait > policy.maxWaitMs) {
        return {
          result: 'kept',
          attempts: attempt,
          held: false,
          error: `${e.message} (asked to wait ${Math.ceil(wait / 1000)} s; trying next run)`,
          status: e.status,
        };
      }
      await deps.sleep(wait);
    }
  }
}
