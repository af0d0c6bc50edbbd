// Types only: the library itself is imported when the first message is sent.
import type * as DiscordJs from 'discord.js';
import type { Channel, Message } from './types.js';
import { DeliveryError, httpScope, mayHaveArrived } from './types.js';
import { causeOf } from './matrix.js';
import type { DiscordConfig } from '../config/schema.js';

/** The [alerts.discord] section, as the config schema gives it. */
export type DiscordSettings = DiscordConfig;

export const COLOURS = { critical: 0xd32f2f, warning: 0xf9a825, info: 0x1976d2, resolved: 0x2e7d32 } as const;

/**
 * Discord's embed limits (developer docs, Message resource, "Embed Limits"): per part, and 6,000
 * characters over the title, description, field names and values, footer text and author name of
 * all the embeds of a message together.
 */
export const EMBED_LIMITS = { title: 256, description: 4096, fields: 25, fieldName: 256, fieldValue: 1024, footer: 2048, total: 6000 };

/**
 * The first `n` characters of `s`, with an ellipsis when cut. Counted in UTF-16 code units, which
 * are never fewer than the characters Discord counts, and never cutting a surrogate pair in two.
 */
export function clip(s: string, n: number): string {
  if (s.length <= n) return s;
  if (n <= 0) return '';
  let end = n - 1;
  const last = s.charCodeAt(end - 1);
  if (last >= 0xd800 && last <= 0xdbff) end--;
  return `${s.slice(0, end)}…`;
}

export interface EmbedText {
  title: string;
  description: string;
  fields: { name: string; value: string }[];
  footer: string;
}

/** Characters an embed counts against the 6,000 total. */
export function embedLength(e: EmbedText): number {
  return e.title.length + e.description.length + e.footer.length + e.fields.reduce((n, f) => n + f.name.length + f.value.length, 0);
}

/**
 * A message's text cut to Discord's limits, each part to its own and all together to the total.
 * What matters most is kept: the title, then the description (the summary), then the fields in
 * order (they repeat the kind, domain and source); fields that no longer fit are left out, the
 * last one that partly fits is clipped.
 */
export function fitEmbed(message: Pick<Message, 'title' | 'text' | 'fields'>, footer: string): EmbedText {
  const L = EMBED_LIMITS;
  const title = clip(message.title, L.title);
  const foot = clip(footer, L.footer);
  let left = L.total - title.length - foot.length;
  const description = clip(message.text, Math.min(L.description, left));
  left -= description.length;
  const fields: EmbedText['fields'] = [];
  for (const f of message.fields.slice(0, L.fields)) {
    const name = clip(f.name || '-', L.fieldName);
    // A field needs a name and at least a one-character value, else it is not sent.
    if (name.length + 1 > left) break;
    const value = clip(f.value || '-', Math.min(L.fieldValue, left - name.length));
    fields.push({ name, value });
    left -= name.length + value.length;
  }
  return { title, description, fields, footer: foot };
}

/**
 * Discord through discord.js's REST client: a webhook (POST /webhooks/{id}/{token}) or a bot
 * token (POST /channels/{id}/messages), one embed per message coloured by severity. The client
 * waits out 429s itself (Retry-After); a wait longer than the retry policy allows is refused here
 * and left for the next run. discord.js is loaded only when Discord is configured: it costs ~0.4 s.
 *
 * A bot's message carries a `nonce` with `enforce_nonce`, so Discord returns the message already
 * created instead of posting it again when a send is repeated within "the past few minutes" (taken
 * as two); a webhook has no such thing, so a webhook send is never known to be a repeat.
 */
export class DiscordChannel implements Channel {
  readonly name = 'discord' as const;
  readonly dedupWindowMs: number;
  private rest: DiscordJs.REST | null = null;
  private lib: typeof DiscordJs | null = null;
  private readonly route: { webhook: { id: string; token: string } } | { channelId: string };
  private readonly api: string;

  constructor(
    private readonly s: DiscordSettings,
    private readonly maxWaitMs: number,
    private readonly timeoutMs = 15_000,
  ) {
    if (s.webhook_url) {
      // https://discord.com/api[/v10]/webhooks/{id}/{token}; the API base is taken from it, so a
      // proxy or a test server can stand in.
      const m = /^(https?:\/\/.+?)\/(?:v\d+\/)?webhooks\/(\d+)\/([\w-]+)\/?$/.exec(s.webhook_url);
      if (!m) throw new DeliveryError('webhook_url is not a Discord webhook URL (…/api/webhooks/ID/TOKEN)', 'channel');
      this.route = { webhook: { id: m[2]!, token: m[3]! } };
      this.api = s.api_url ?? m[1]!;
      this.dedupWindowMs = 0;
    } else {
      this.route = { channelId: s.channel_id! };
      this.api = s.api_url ?? 'https://discord.com/api';
      this.dedupWindowMs = 2 * 60_000;
    }
  }

  private async client(): Promise<{ rest: DiscordJs.REST; lib: typeof DiscordJs }> {
    if (!this.rest || !this.lib) {
      this.lib = await import('discord.js');
      this.rest = new this.lib.REST({
        api: this.api,
        // Retries with backoff are ours (deliver.ts); 429s the client handles.
        retries: 0,
        timeout: this.timeoutMs,
        hashSweepInterval: 0,
        handlerSweepInterval: 0,
        rejectOnRateLimit: (info) => info.retryAfter > this.maxWaitMs,
      });
    }
    // The client forgets the token after a 401; the next run must send it again.
    if (this.s.bot_token) this.rest.setToken(this.s.bot_token);
    return { rest: this.rest, lib: this.lib };
  }

  async send(message: Message, txnId: string): Promise<void> {
    const { rest, lib } = await this.client();
    const fit = fitEmbed(message, `ruawatch · ${message.event}`);
    const embed = new lib.EmbedBuilder()
      .setTitle(fit.title)
      .setDescription(fit.description || null)
      .setColor(COLOURS[message.tone])
      .setTimestamp(message.at * 1000)
      .setFooter({ text: fit.footer });
    if (fit.fields.length) embed.addFields(fit.fields.map((f) => ({ ...f, inline: true })));
    // No pings from report data, ever.
    const body: Record<string, unknown> = { embeds: [embed.toJSON()], allowed_mentions: { parse: [] } };
    try {
      if ('webhook' in this.route) {
        await rest.post(lib.Routes.webhook(this.route.webhook.id, this.route.webhook.token), {
          body,
          auth: false,
          query: new URLSearchParams({ wait: 'true' }),
        });
      } else {
        // Create Message: nonce is "an integer or string, up to 25 characters"; enforce_nonce
        // makes Discord check it against the author's messages of the past few minutes.
        body.nonce = nonceOf(txnId);
        body.enforce_nonce = true;
        await rest.post(lib.Routes.channelMessages(this.route.channelId), { body });
      }
    } catch (err) {
      if (err instanceof lib.RateLimitError)
        throw new DeliveryError(`rate limited for ${Math.ceil(err.retryAfter / 1000)} s`, 'retry', {
          retryAfterMs: err.retryAfter,
          status: 'HTTP 429',
        });
      if (err instanceof lib.DiscordAPIError)
        throw new DeliveryError(`${err.status} ${err.message}`, httpScope(err.status), { status: `HTTP ${err.status}` });
      if (err instanceof lib.HTTPError) throw new DeliveryError(`${err.status} ${err.message}`, 'retry', { status: `HTTP ${err.status}` });
      const timedOut = err instanceof Error && err.name === 'AbortError';
      throw new DeliveryError(
        timedOut ? `${this.api} did not answer within ${this.timeoutMs / 1000} s` : `${this.api} unreachable: ${causeOf(err)}`,
        'retry',
        { unanswered: mayHaveArrived(err) },
      );
    }
  }

  /**
   * Reads the webhook (GET /webhooks/{id}/{token}), or the bot's user and the channel
   * (GET /users/@me, GET /channels/{id}): what a send needs, asked without sending.
   */
  async probe(): Promise<string> {
    const { rest, lib } = await this.client();
    try {
      if ('webhook' in this.route) {
        const hook = (await rest.get(lib.Routes.webhook(this.route.webhook.id, this.route.webhook.token), { auth: false })) as {
          name?: string;
          channel_id?: string;
        };
        return `webhook "${hook.name ?? ''}" posting to channel ${hook.channel_id ?? '?'}`;
      }
      const me = (await rest.get(lib.Routes.user())) as { username?: string };
      const channel = (await rest.get(lib.Routes.channel(this.route.channelId))) as { name?: string };
      return `bot ${me.username ?? '?'}, which can see channel #${channel.name ?? this.route.channelId} (whether it may post there shows only when it posts)`;
    } catch (err) {
      if (err instanceof lib.DiscordAPIError || err instanceof lib.HTTPError)
        throw new DeliveryError(`${err.status} ${err.message}`, httpScope(err.status), { status: `HTTP ${err.status}` });
      throw new DeliveryError(`${this.api} unreachable: ${causeOf(err)}`, 'retry', { cause: err });
    }
  }

  async close(): Promise<void> {
    this.rest?.clearHashSweeper();
    this.rest?.clearHandlerSweeper();
  }
}

/** The txn id ("rw-" and a UUID) as a nonce: letters and digits, at most 25 of them (92 random bits). */
export function nonceOf(txnId: string): string {
  return txnId.replace(/[^\w]/g, '').slice(0, 25);
}
