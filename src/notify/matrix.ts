import type { Channel, Message } from './types.js';
import { DeliveryError } from './types.js';

export interface MatrixSettings {
  homeserver: string;
  access_token: string;
  room_id: string;
}

/**
 * Matrix client-server API: PUT /_matrix/client/v3/rooms/{roomId}/send/m.room.message/{txnId}.
 * The homeserver deduplicates on the transaction id, so a send retried after a lost response
 * never posts twice. Sent as m.notice (bots' messages, which clients do not answer) with an
 * org.matrix.custom.html formatted body.
 */
export class MatrixChannel implements Channel {
  readonly name = 'matrix' as const;
  constructor(private readonly s: MatrixSettings) {}

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
        signal: AbortSignal.timeout(15_000),
      });
    } catch (err) {
      throw new DeliveryError(`matrix: ${base} unreachable: ${causeOf(err)}`, true);
    }
    if (res.ok) {
      await res.body?.cancel();
      return;
    }
    const body = (await res.json().catch(() => ({}))) as { errcode?: string; error?: string; retry_after_ms?: number };
    const what = `matrix: ${res.status} ${body.errcode ?? ''} ${body.error ?? ''}`.replace(/\s+/g, ' ').trim();
    if (res.status === 429) {
      // M_LIMIT_EXCEEDED: retry_after_ms in the body; newer servers also send Retry-After (seconds).
      const header = Number(res.headers.get('retry-after'));
      const ms = body.retry_after_ms ?? (Number.isFinite(header) && header > 0 ? header * 1000 : null);
      throw new DeliveryError(what, true, ms);
    }
    throw new DeliveryError(what, res.status >= 500);
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
