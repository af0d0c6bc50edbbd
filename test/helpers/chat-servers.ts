import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { simpleParser, type ParsedMail } from 'mailparser';
import { SMTPServer } from 'smtp-server';
import { configSchema } from '../../src/config/schema.js';
import type { Channel, RetryPolicy } from '../../src/notify/types.js';
import { channelsOf } from '../../src/pipeline/alerts.js';

/**
 * Loopback stand-ins for the services alerts go to. SMTP is a real SMTP server (smtp-server).
 * Matrix and Discord cannot run here, so small HTTP servers check every request against the
 * published APIs (Matrix client-server API v1.x "PUT /rooms/{roomId}/send/{eventType}/{txnId}";
 * Discord API v10 "Execute Webhook" and "Create Message"; and what `config check --connect` reads:
 * Matrix "whoami" and "joined_rooms", Discord "Get Webhook with Token", "Get Current User" and
 * "Get Channel") and can answer 429 or 500 on demand.
 * A request that breaks the API is answered 400 and recorded in `violations`, which tests check
 * is empty.
 */

type Script = ('429' | '500' | '403' | '401' | '400')[];

export interface SmtpSink {
  port: number;
  /** Messages the server took (queued for delivery), in order, repeats included. */
  messages: ParsedMail[];
  /** Reply 451 (temporary) to the next N messages. */
  failNext: number;
  /** A content filter: a reply (5xx) for the messages it refuses, null for the others. */
  refuse: ((m: ParsedMail) => { code: number; text: string } | null) | null;
  /** Messages refused by `refuse`. */
  refused: ParsedMail[];
  /** Take the next N messages, then wait `slowMs` before saying so (a reply lost to the client's timeout). */
  slowNext: number;
  slowMs: number;
  close(): Promise<void>;
}

/** ruawatch's email channel, sending to a loopback SMTP server (startSmtp) in clear. */
export function emailChannels(port: number, retry: RetryPolicy): Channel[] {
  return channelsOf(
    configSchema.parse({
      alerts: { email: { host: '127.0.0.1', port, security: 'none', from: 'ruawatch@example.com', to: ['postmaster@example.com'] } },
    }),
    retry,
  );
}

export async function startSmtp(): Promise<SmtpSink> {
  const sink: SmtpSink = {
    port: 0,
    messages: [],
    failNext: 0,
    refuse: null,
    refused: [],
    slowNext: 0,
    slowMs: 0,
    close: async () => {},
  };
  const reply = (code: number, text: string) => Object.assign(new Error(text), { responseCode: code });
  const server = new SMTPServer({
    authOptional: true,
    disabledCommands: ['STARTTLS'],
    disableReverseLookup: true,
    logger: false,
    onData(stream, _session, callback) {
      const chunks: Buffer[] = [];
      stream.on('data', (c: Buffer) => chunks.push(c));
      stream.on('end', () => {
        if (sink.failNext > 0) {
          sink.failNext--;
          callback(reply(451, 'try again later'));
          return;
        }
        simpleParser(Buffer.concat(chunks)).then((m) => {
          const no = sink.refuse?.(m);
          if (no) {
            sink.refused.push(m);
            callback(reply(no.code, no.text));
            return;
          }
          sink.messages.push(m);
          if (sink.slowNext > 0) {
            sink.slowNext--;
            setTimeout(() => callback(), sink.slowMs);
          } else callback();
        }, callback);
      });
    },
  });
  // A client that gave up waiting has closed its side; answering it then is not an error here.
  server.on('error', () => {});
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  sink.port = (server.server.address() as AddressInfo).port;
  sink.close = () => new Promise((resolve) => server.close(() => resolve()));
  return sink;
}

interface HttpStub {
  port: number;
  url: string;
  /** Requests that reached the stub, in order. */
  requests: number;
  violations: string[];
  /** Answers for the next requests, in order, before normal service resumes. */
  script: Script;
  /** While true every request gets a 500. */
  down: boolean;
  close(): Promise<void>;
}

async function listen(
  handler: (req: http.IncomingMessage, body: string, res: http.ServerResponse) => void,
): Promise<{ port: number; close: () => Promise<void> }> {
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => handler(req, Buffer.concat(chunks).toString('utf8'), res));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as AddressInfo).port,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

function json(res: http.ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  res.writeHead(status, { 'content-type': 'application/json', ...headers });
  res.end(JSON.stringify(body));
}

export interface MatrixEvent {
  txnId: string;
  content: { msgtype: string; body: string; format?: string; formatted_body?: string };
}

export interface MatrixStub extends HttpStub {
  /** Events as the room holds them: one per transaction id, however often it was sent. */
  events: MatrixEvent[];
  /** Post the next N events, then wait `slowMs` before answering. */
  slowNext: number;
  slowMs: number;
}

export async function startMatrix(opts: { token: string; roomId: string }): Promise<MatrixStub> {
  const byTxn = new Map<string, string>();
  const stub: MatrixStub = {
    port: 0,
    url: '',
    requests: 0,
    violations: [],
    script: [],
    down: false,
    events: [],
    slowNext: 0,
    slowMs: 0,
    close: async () => {},
  };
  const { port, close } = await listen((req, body, res) => {
    stub.requests++;
    const bad = (why: string) => {
      stub.violations.push(`${req.method} ${req.url}: ${why}`);
      json(res, 400, { errcode: 'M_BAD_JSON', error: why });
    };
    // GET /account/whoami and GET /joined_rooms (client-server API v1.x), which `config check
    // --connect` asks: who the token is, and whether that user is in the room.
    if (req.method === 'GET' && (req.url === '/_matrix/client/v3/account/whoami' || req.url === '/_matrix/client/v3/joined_rooms')) {
      if (req.headers.authorization !== `Bearer ${opts.token}`)
        return json(res, 401, { errcode: 'M_UNKNOWN_TOKEN', error: 'Invalid access token' });
      if (req.url.endsWith('/whoami')) return json(res, 200, { user_id: '@ruawatch:example.org', is_guest: false });
      return json(res, 200, { joined_rooms: ['!other:example.org', opts.roomId] });
    }
    const m = /^\/_matrix\/client\/v3\/rooms\/([^/]+)\/send\/m\.room\.message\/([^/?]+)$/.exec(req.url ?? '');
    if (req.method !== 'PUT' || !m) return bad('expected PUT /_matrix/client/v3/rooms/{roomId}/send/m.room.message/{txnId}');
    if (decodeURIComponent(m[1]!) !== opts.roomId) return bad(`room id ${decodeURIComponent(m[1]!)} is not ${opts.roomId}`);
    if (req.headers.authorization !== `Bearer ${opts.token}`)
      return json(res, 401, { errcode: 'M_UNKNOWN_TOKEN', error: 'Invalid access token' });
    if (!String(req.headers['content-type']).startsWith('application/json')) return bad('content-type is not application/json');
    let content: MatrixEvent['content'];
    try {
      content = JSON.parse(body) as MatrixEvent['content'];
    } catch {
      return bad('body is not JSON');
    }
    if (!['m.notice', 'm.text'].includes(content.msgtype) || typeof content.body !== 'string' || !content.body)
      return bad('msgtype/body missing');
    if (content.format !== undefined && (content.format !== 'org.matrix.custom.html' || typeof content.formatted_body !== 'string')) {
      return bad('format must be org.matrix.custom.html with a formatted_body');
    }
    const next = stub.down ? '500' : stub.script.shift();
    if (next === '429') return json(res, 429, { errcode: 'M_LIMIT_EXCEEDED', error: 'Too many requests', retry_after_ms: 50 });
    if (next === '500') return json(res, 500, { errcode: 'M_UNKNOWN', error: 'Internal server error' });
    if (next === '403') return json(res, 403, { errcode: 'M_FORBIDDEN', error: 'User not in room' });
    if (next === '401') return json(res, 401, { errcode: 'M_UNKNOWN_TOKEN', error: 'Invalid access token' });
    if (next === '400') return json(res, 400, { errcode: 'M_BAD_JSON', error: 'Content not acceptable' });
    const txnId = decodeURIComponent(m[2]!);
    let eventId = byTxn.get(txnId);
    if (!eventId) {
      // The homeserver's idempotency: the same transaction id gives the same event, posted once.
      eventId = `$event${byTxn.size + 1}`;
      byTxn.set(txnId, eventId);
      stub.events.push({ txnId, content });
    }
    if (stub.slowNext > 0) {
      stub.slowNext--;
      const id = eventId;
      setTimeout(() => json(res, 200, { event_id: id }), stub.slowMs);
      return;
    }
    json(res, 200, { event_id: eventId });
  });
  Object.assign(stub, { port, url: `http://127.0.0.1:${port}`, close });
  return stub;
}

export interface DiscordEmbed {
  title?: string;
  description?: string;
  color?: number;
  timestamp?: string;
  fields?: { name: string; value: string; inline?: boolean }[];
  footer?: { text: string };
  author?: { name: string };
}

export interface DiscordStub extends HttpStub {
  /** Messages the channel holds, in order: one per send, except a bot's repeat with enforce_nonce. */
  messages: { via: 'webhook' | 'bot'; embeds: DiscordEmbed[]; nonce?: string }[];
  webhookUrl: string;
  /** Post the next N messages, then wait `slowMs` before answering. */
  slowNext: number;
  slowMs: number;
  /** How long a bot's nonce is remembered ("the past few minutes"). */
  nonceMemoryMs: number;
}

/** Characters an embed counts against the 6,000 of a message (Embed Limits). */
export function embedChars(e: DiscordEmbed): number {
  return (
    (e.title?.length ?? 0) +
    (e.description?.length ?? 0) +
    (e.footer?.text.length ?? 0) +
    (e.author?.name.length ?? 0) +
    (e.fields ?? []).reduce((n, f) => n + f.name.length + f.value.length, 0)
  );
}

export async function startDiscord(opts: {
  webhookId: string;
  webhookToken: string;
  botToken: string;
  channelId: string;
}): Promise<DiscordStub> {
  const stub: DiscordStub = {
    port: 0,
    url: '',
    requests: 0,
    violations: [],
    script: [],
    down: false,
    messages: [],
    webhookUrl: '',
    slowNext: 0,
    slowMs: 0,
    nonceMemoryMs: 120_000,
    close: async () => {},
  };
  const nonces = new Map<string, { at: number; id: string }>();
  const { port, close } = await listen((req, body, res) => {
    stub.requests++;
    const bad = (why: string) => {
      stub.violations.push(`${req.method} ${req.url}: ${why}`);
      json(res, 400, { code: 50035, message: `Invalid Form Body: ${why}` });
    };
    const url = new URL(req.url ?? '/', 'http://x');
    const hook = /^\/api\/v10\/webhooks\/(\d+)\/([\w-]+)$/.exec(url.pathname);
    const chan = /^\/api\/v10\/channels\/(\d+)\/messages$/.exec(url.pathname);
    // Get Webhook with Token, Get Current User and Get Channel: what `config check --connect` asks.
    if (req.method === 'GET') {
      if (hook) {
        if (hook[1] !== opts.webhookId || hook[2] !== opts.webhookToken)
          return json(res, 401, { code: 50027, message: 'Invalid Webhook Token' });
        if (req.headers.authorization) return bad('a webhook request carries no Authorization header');
        return json(res, 200, { id: opts.webhookId, type: 1, name: 'ruawatch', channel_id: opts.channelId, guild_id: '1' });
      }
      if (req.headers.authorization !== `Bot ${opts.botToken}`) return json(res, 401, { code: 0, message: '401: Unauthorized' });
      if (url.pathname === '/api/v10/users/@me') return json(res, 200, { id: '42', username: 'ruawatch-bot', bot: true });
      const one = /^\/api\/v10\/channels\/(\d+)$/.exec(url.pathname);
      if (one) {
        if (one[1] !== opts.channelId) return json(res, 404, { code: 10003, message: 'Unknown Channel' });
        return json(res, 200, { id: opts.channelId, type: 0, name: 'dmarc-alerts' });
      }
      return bad('expected GET /api/v10/webhooks/{id}/{token}, /users/@me or /channels/{id}');
    }
    if (req.method !== 'POST' || (!hook && !chan))
      return bad('expected POST /api/v10/webhooks/{id}/{token} or /api/v10/channels/{id}/messages');
    if (hook) {
      if (hook[1] !== opts.webhookId || hook[2] !== opts.webhookToken)
        return json(res, 401, { code: 50027, message: 'Invalid Webhook Token' });
      if (req.headers.authorization) return bad('a webhook request carries no Authorization header');
    } else {
      if (req.headers.authorization !== `Bot ${opts.botToken}`) return json(res, 401, { code: 0, message: '401: Unauthorized' });
      if (chan![1] !== opts.channelId) return json(res, 404, { code: 10003, message: 'Unknown Channel' });
    }
    if (!String(req.headers['content-type']).startsWith('application/json')) return bad('content-type is not application/json');
    if (!String(req.headers['user-agent']).startsWith('DiscordBot')) return bad('User-Agent must start with DiscordBot');
    let msg: { embeds?: DiscordEmbed[]; content?: string; nonce?: unknown; enforce_nonce?: unknown; allowed_mentions?: unknown };
    try {
      msg = JSON.parse(body) as typeof msg;
    } catch {
      return bad('body is not JSON');
    }
    const embeds = msg.embeds ?? [];
    if (!msg.content && embeds.length === 0) return bad('content or embeds required');
    if (embeds.length > 10) return bad('at most 10 embeds');
    for (const e of embeds) {
      if ((e.title?.length ?? 0) > 256 || (e.description?.length ?? 0) > 4096 || (e.fields?.length ?? 0) > 25)
        return bad('embed over its limits');
      if (e.color !== undefined && (!Number.isInteger(e.color) || e.color < 0 || e.color > 0xffffff))
        return bad('color must be an integer 0..0xffffff');
      for (const f of e.fields ?? [])
        if (!f.name || !f.value || f.name.length > 256 || f.value.length > 1024) return bad('field name/value empty or too long');
      if ((e.footer?.text.length ?? 0) > 2048 || (e.author?.name.length ?? 0) > 256) return bad('embed footer or author too long');
    }
    if (embeds.reduce((n, e) => n + embedChars(e), 0) > 6000) return bad('embeds over 6000 characters in total');
    if (msg.nonce !== undefined) {
      if (hook) return bad('Execute Webhook takes no nonce');
      const ok = (typeof msg.nonce === 'string' && msg.nonce.length <= 25) || Number.isSafeInteger(msg.nonce);
      if (!ok) return bad('nonce must be an integer or a string of up to 25 characters');
    }
    if (msg.enforce_nonce !== undefined && typeof msg.enforce_nonce !== 'boolean') return bad('enforce_nonce must be a boolean');
    const next = stub.down ? '500' : stub.script.shift();
    if (next === '429') {
      return json(
        res,
        429,
        { message: 'You are being rate limited.', retry_after: 1, global: false },
        { 'retry-after': '1', 'x-ratelimit-scope': 'user' },
      );
    }
    if (next === '500') return json(res, 500, { message: 'Internal Server Error', code: 0 });
    if (next === '403') return json(res, 403, { code: 50013, message: 'Missing Permissions' });
    if (next === '401') return json(res, 401, { code: 0, message: '401: Unauthorized' });
    if (next === '400') return json(res, 400, { code: 50035, message: 'Invalid Form Body' });
    // Create Message: with enforce_nonce, a nonce the author used in the past few minutes returns
    // that message and creates none.
    const nonce = msg.nonce === undefined ? undefined : String(msg.nonce);
    const seen = nonce === undefined ? undefined : nonces.get(nonce);
    let id: string;
    if (seen && msg.enforce_nonce === true && Date.now() - seen.at < stub.nonceMemoryMs) {
      id = seen.id;
    } else {
      stub.messages.push({ via: hook ? 'webhook' : 'bot', embeds, ...(nonce ? { nonce } : {}) });
      id = String(stub.messages.length);
      if (nonce) nonces.set(nonce, { at: Date.now(), id });
    }
    const answer = () => json(res, 200, { id, channel_id: opts.channelId, embeds });
    if (stub.slowNext > 0) {
      stub.slowNext--;
      setTimeout(answer, stub.slowMs);
    } else answer();
  });
  Object.assign(stub, {
    port,
    url: `http://127.0.0.1:${port}`,
    webhookUrl: `http://127.0.0.1:${port}/api/webhooks/${opts.webhookId}/${opts.webhookToken}`,
    close,
  });
  return stub;
}
