import type { Channel, Message } from './types.js';
import { DeliveryError, httpScope, mayHaveArrived } from './types.js';
import type { MatrixConfig } from '../config/schema.js';

/** The [alerts.matrix] section, as the config schema gives it. */
export type MatrixSettings = MatrixConfig;

/**
 * Matrix client-server API: PUT /_matrix/client/v3/rooms/{roomId}/send/m.room.message/{txnId}.
 * The homeserver deduplicates on the transaction id, so a send retried after a lost response
 * does not post twice. The spec says nothing of how long a server remembers a transaction id;
 * Synapse keeps them at least 30 minutes (rest/client/transactions.py), the window assumed here.
 * Sent as m.notice (bots' messages, which clients do not answer) with an org.matrix.custom.html
 * formatted body.
 */
export class MatrixChannel implements Channel {
  readonly name = 'matrix' as const;
  readonly dedupWindowMs = 30 * 60_000;
  constructor(
    private readonly s: MatrixSettings,
    private readonly timeoutMs = 15_000,
  ) {}

  async send(message: Message, txnId: string): Promise<void> {
    const base = this.s.homeserver.replace(/\/+$/, '');
    const url = `${base}/_matrix/client/v3/rooms/${encodeURIComponent(this.s.room_id)}/send/m.room.message/${encodeURIComponent(txnId)}`;
    let res: Response;
    try {
      res = await fetch(url, {
        method: 'PUT',
        headers: { authorization: `Bearer ${this.s.access_token}`, 'content-type': 'application/json' },
        body: JSON.stringify({
          msgtype: 'm.notice',
          body: `${message.title}\n\n${message.text}`,
          format: 'org.matrix.custom.html',
          formatted_body: message.html,
        }),
        signal: AbortSignal.timeout(this.timeoutMs),
      });
    } catch (err) {
      const timedOut = err instanceof Error && err.name === 'TimeoutError';
      throw new DeliveryError(
        timedOut ? `${base} did not answer within ${this.timeoutMs / 1000} s` : `${base} unreachable: ${causeOf(err)}`,
        'retry',
        { unanswered: mayHaveArrived(err) },
      );
    }
    if (res.ok) {
      await res.body?.cancel();
      return;
    }
    const body = (await res.json().catch(() => ({}))) as { errcode?: string; error?: string; retry_after_ms?: number };
    const what = `${res.status} ${body.errcode ?? ''} ${body.error ?? ''}`.replace(/\s+/g, ' ').trim();
    const status = `HTTP ${res.status}`;
    if (res.status === 429) {
      // M_LIMIT_EXCEEDED: retry_after_ms in the body; newer servers also send Retry-After (seconds).
      const header = Number(res.headers.get('retry-after'));
      const ms = body.retry_after_ms ?? (Number.isFinite(header) && header > 0 ? header * 1000 : null);
      throw new DeliveryError(what, 'retry', { retryAfterMs: ms, status });
    }
    // 401 M_UNKNOWN_TOKEN, 403 M_FORBIDDEN (not in the room), 404 (no such room) hold the channel;
    // 400 M_BAD_JSON or 413 M_TOO_LARGE are about this event.
    throw new DeliveryError(what, httpScope(res.status), { status });
  }

  /**
   * Who the token belongs to (GET /account/whoami) and whether that user is in the room
   * (GET /joined_rooms): what a send needs, asked without sending.
   */
  async probe(): Promise<string> {
    const base = this.s.homeserver.replace(/\/+$/, '');
    const get = async (path: string): Promise<unknown> => {
      let res: Response;
      try {
        res = await fetch(`${base}/_matrix/client/v3${path}`, {
          headers: { authorization: `Bearer ${this.s.access_token}` },
          signal: AbortSignal.timeout(this.timeoutMs),
        });
      } catch (err) {
        throw new DeliveryError(`${base} unreachable: ${causeOf(err)}`, 'retry', { cause: err });
      }
      const body = (await res.json().catch(() => ({}))) as { errcode?: string; error?: string };
      if (!res.ok) {
        const what = `${path}: ${res.status} ${body.errcode ?? ''} ${body.error ?? ''}`.replace(/\s+/g, ' ').trim();
        throw new DeliveryError(what, httpScope(res.status), { status: `HTTP ${res.status}` });
      }
      return body;
    };
    const { user_id: user } = (await get('/account/whoami')) as { user_id?: string };
    const { joined_rooms: rooms } = (await get('/joined_rooms')) as { joined_rooms?: string[] };
    if (!rooms?.includes(this.s.room_id))
      throw new DeliveryError(`${user ?? "the token's user"} has not joined ${this.s.room_id}: invite it, then join`, 'channel');
    return `${base}: the token is ${user ?? '(unnamed)'}'s, who is in ${this.s.room_id}`;
  }

  async close(): Promise<void> {}
}

export function causeOf(err: unknown): string {
  if (err instanceof Error) {
    const cause = (err as Error & { cause?: unknown }).cause;
    return cause instanceof Error ? `${err.message} (${cause.message})` : err.message;
  }
  return String(err);
}
