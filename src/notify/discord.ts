// Types only: the library itself is imported when the first message is sent.
import type * as DiscordJs from 'discord.js';
import type { Channel, Message } from './types.js';
import { DeliveryError } from './types.js';
import { causeOf } from './matrix.js';

export interface DiscordSettings {
  webhook_url?: string | undefined;
  bot_token?: string | undefined;
  channel_id?: string | undefined;
  api_url?: string | undefined;
}

export const COLOURS = { critical: 0xd32f2f, warning: 0xf9a825, info: 0x1976d2, resolved: 0x2e7d32 } as const;

/** Discord's embed limits (developer docs, "Embed Limits"). */
const LIMIT = { title: 256, description: 4096, fields: 25, fieldName: 256, fieldValue: 1024 };

const clip = (s: string, n: number) => (s.length <= n ? s : `${s.slice(0, n - 1)}…`);

/**
 * Discord through discord.js's REST client: a webhook (POST /webhooks/{id}/{token}) or a bot
 * token (POST /channels/{id}/messages), one embed per message coloured by severity. The client
 * waits out 429s itself (Retry-After); a wait longer than the retry policy allows is refused here
 * and left for the next run. discord.js is loaded only when Discord is configured: it costs ~0.4 s.
 */
export class DiscordChannel implements Channel {
  readonly name = 'discord' as const;
  private rest: DiscordJs.REST | null = null;
  private lib: typeof DiscordJs | null = null;
  private readonly route: { webhook: { id: string; token: string } } | { channelId: string };
  private readonly api: string;

  constructor(
    private readonly s: DiscordSettings,
    private readonly maxWaitMs: number,
  ) {
    if (s.webhook_url) {
      // https://discord.com/api[/v10]/webhooks/{id}/{token}; the API base is taken from it, so a
      // proxy or a test server can stand in.
      const m = /^(https?:\/\/.+?)\/(?:v\d+\/)?webhooks\/(\d+)\/([\w-]+)\/?$/.exec(s.webhook_url);
      if (!m) throw new DeliveryError('discord: webhook_url is not a Discord webhook URL (…/api/webhooks/ID/TOKEN)', false);
      this.route = { webhook: { id: m[2]!, token: m[3]! } };
      this.api = s.api_url ?? m[1]!;
    } else {
      this.route = { channelId: s.channel_id! };
      this.api = s.api_url ?? 'https://discord.com/api';
    }
  }

  private async client(): Promise<{ rest: DiscordJs.REST; lib: typeof DiscordJs }> {
    if (!this.rest || !this.lib) {
      this.lib = await import('discord.js');
      this.rest = new this.lib.REST({
        api: this.api,
        // Retries with backoff are ours (notify/types.ts withRetry); 429s the client handles.
        retries: 0,
        timeout: 15_000,
        hashSweepInterval: 0,
        handlerSweepInterval: 0,
        rejectOnRateLimit: (info) => info.retryAfter > this.maxWaitMs,
      });
      if (this.s.bot_token) this.rest.setToken(this.s.bot_token);
    }
    return { rest: this.rest, lib: this.lib };
  }

  async send(message: Message, txnId: string): Promise<void> {
    const { rest, lib } = await this.client();
    const embed = new lib.EmbedBuilder()
      .setTitle(clip(message.title, LIMIT.title))
      .setDescription(clip(message.text, LIMIT.description))
      .setColor(COLOURS[message.tone])
      .setTimestamp(message.at * 1000)
      .setFooter({ text: `ruawatch · ${message.event}` });
    if (message.fields.length) {
      embed.addFields(
        message.fields
          .slice(0, LIMIT.fields)
          .map((f) => ({ name: clip(f.name, LIMIT.fieldName), value: clip(f.value || '-', LIMIT.fieldValue), inline: true })),
      );
    }
    // No pings from report data, ever; the nonce lets Discord drop a duplicate bot send.
    const body: Record<string, unknown> = { embeds: [embed.toJSON()], allowed_mentions: { parse: [] } };
    try {
      if ('webhook' in this.route) {
        await rest.post(lib.Routes.webhook(this.route.webhook.id, this.route.webhook.token), {
          body,
          auth: false,
          query: new URLSearchParams({ wait: 'true' }),
        });
      } else {
        body.nonce = txnId.replace(/-/g, '').slice(0, 25);
        body.enforce_nonce = true;
        await rest.post(lib.Routes.channelMessages(this.route.channelId), { body });
      }
    } catch (err) {
      if (err instanceof lib.RateLimitError)
        throw new DeliveryError(`discord: rate limited for ${Math.ceil(err.retryAfter / 1000)} s`, true, err.retryAfter);
      if (err instanceof lib.DiscordAPIError) throw new DeliveryError(`discord: ${err.status} ${err.message}`, err.status >= 500);
      if (err instanceof lib.HTTPError) throw new DeliveryError(`discord: ${err.status} ${err.message}`, true);
      throw new DeliveryError(`discord: ${this.api} unreachable: ${causeOf(err)}`, true);
    }
  }

  async close(): Promise<void> {
    this.rest?.clearHashSweeper();
    this.rest?.clearHandlerSweeper();
  }
}
