import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { clip, EMBED_LIMITS, embedLength, fitEmbed, nonceOf } from '../../src/notify/discord.js';
import { deliverOne, mayResend, type Outcome, type QueuedMessage } from '../../src/notify/deliver.js';
import { smtpScope } from '../../src/notify/email.js';
import { renderFallback } from '../../src/notify/render.js';
import { DeliveryError, httpScope, mayHaveArrived, type Channel, type Message, type RetryPolicy } from '../../src/notify/types.js';

const message = (over: Partial<Message> = {}): Message => ({
  event: 'opened',
  tone: 'warning',
  title: '[WARNING] New failing source: example.com 203.0.113.66',
  text: 'new source 203.0.113.66 sent 400 messages',
  html: '<p>x</p>',
  fields: [
    { name: 'Kind', value: 'new_failing_source' },
    { name: 'Domain', value: 'example.com' },
  ],
  at: 1_790_000_000,
  ...over,
});

describe('Discord embed limits', () => {
  it('leaves a message within the limits as it is', () => {
    const m = message();
    assert.deepEqual(fitEmbed(m, 'ruawatch · opened'), {
      title: m.title,
      description: m.text,
      fields: m.fields,
      footer: 'ruawatch · opened',
    });
  });

  it('keeps the total to 6,000 characters: title, then description, then the fields that fit', () => {
    const m = message({
      title: 'T'.repeat(400),
      text: 'D'.repeat(5000),
      fields: Array.from({ length: 30 }, (_, i) => ({ name: `field ${i} ${'n'.repeat(300)}`, value: 'v'.repeat(2000) })),
    });
    const e = fitEmbed(m, 'ruawatch · digest');
    assert.equal(embedLength(e), EMBED_LIMITS.total);
    assert.equal(e.title.length, 256);
    assert.equal(e.description.length, 4096);
    assert.ok(e.description.startsWith('DDDD') && e.description.endsWith('…'));
    assert.ok(e.fields.length >= 1 && e.fields.length < 25);
    for (const f of e.fields) assert.ok(f.name.length <= 256 && f.value.length >= 1 && f.value.length <= 1024);
    // Many short fields: the 25-field limit, and still within the total.
    const many = fitEmbed(
      message({ text: 'x'.repeat(4096), fields: Array.from({ length: 40 }, () => ({ name: 'n', value: 'v'.repeat(90) })) }),
      'f',
    );
    // 6000 - 54 (title) - 1 (footer) - 4096 leaves 1849: twenty whole fields of 91 and a clipped one.
    assert.equal(many.title.length, 54);
    assert.equal(many.fields.length, 21);
    assert.equal(many.fields[20]!.value.length, 1849 - 20 * 91 - 1);
    assert.equal(embedLength(many), 6000);
  });

  it('gives the fields what a long description leaves, clipping the last one that partly fits', () => {
    const e = fitEmbed(
      message({
        title: 't',
        text: 'd'.repeat(4096),
        fields: [
          { name: 'a', value: 'v'.repeat(1024) },
          { name: 'b', value: 'w'.repeat(1024) },
          { name: 'c', value: 'x'.repeat(1024) },
        ],
      }),
      'f',
    );
    assert.deepEqual(
      e.fields.map((f) => [f.name, f.value.length]),
      [
        ['a', 1024],
        ['b', 6000 - 1 - 1 - 4096 - 1 - 1024 - 1],
      ],
    );
    assert.equal(embedLength(e), 6000);
  });

  it('clips without cutting a surrogate pair, and empty values become "-"', () => {
    assert.equal(clip('ab😀cd', 4), 'ab…');
    assert.equal(clip('abc😀', 5), 'abc😀');
    assert.equal(fitEmbed(message({ fields: [{ name: '', value: '' }] }), 'f').fields[0]!.value, '-');
  });

  it("a bot's nonce is the txn id's letters and digits, at most 25", () => {
    assert.equal(nonceOf('rw-0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0'), 'rw0f1e2d3c4b5a69788796a5b');
  });
});

describe('who is at fault for a failure', () => {
  it('HTTP: 429, 408, 5xx retry; 401, 403, 404, 410 hold the channel; other 4xx are the message', () => {
    const table: [number, string][] = [
      [429, 'retry'],
      [408, 'retry'],
      [500, 'retry'],
      [503, 'retry'],
      [401, 'channel'],
      [403, 'channel'],
      [404, 'channel'],
      [410, 'channel'],
      [400, 'message'],
      [413, 'message'],
      [422, 'message'],
    ];
    for (const [status, scope] of table) assert.equal(httpScope(status), scope, String(status));
  });

  it('SMTP: 4xx and no reply retry; 5xx to the content is the message; 5xx elsewhere holds the channel', () => {
    const table: [Parameters<typeof smtpScope>, string][] = [
      [['EMESSAGE', 'DATA', 554, '554 5.7.1 Message content rejected'], 'message'],
      [['EMESSAGE', 'DATA', 550, '550 5.7.1 spam'], 'message'],
      [['EMESSAGE', 'DATA', 451, '451 4.7.1 try later'], 'retry'],
      [['EMESSAGE', 'MAIL FROM', null, ''], 'message'], // larger than the server's SIZE
      [['EENVELOPE', 'MAIL FROM', 552, '552 5.3.4 Message size exceeds fixed limit'], 'message'],
      [['EENVELOPE', 'MAIL FROM', 553, '553 5.7.1 Sender address rejected'], 'channel'],
      [['EENVELOPE', 'RCPT TO', 550, '550 5.1.1 User unknown'], 'channel'],
      [['EENVELOPE', 'RCPT TO', 450, '450 4.2.0 greylisted'], 'retry'],
      [['EENVELOPE', 'DATA', 554, '554 5.5.1 No valid recipients'], 'channel'],
      [['EAUTH', 'AUTH PLAIN', 535, '535 5.7.8 Authentication failed'], 'channel'],
      [['EAUTH', 'AUTH PLAIN', 454, '454 4.7.0 Temporary authentication failure'], 'retry'],
      [['EAUTH', 'API', null, ''], 'channel'],
      [['EPROTOCOL', 'CONN', 554, '554 5.7.1 No SMTP service here'], 'channel'],
      [['ETIMEDOUT', 'CONN', null, ''], 'retry'],
      [['ECONNECTION', 'CONN', null, ''], 'retry'],
    ];
    for (const [args, scope] of table) assert.equal(smtpScope(...args), scope, args.join(' '));
  });

  it('a request that never left cannot have arrived; a timeout or a reset may have', () => {
    const refused = Object.assign(new TypeError('fetch failed'), { cause: Object.assign(new Error('connect'), { code: 'ECONNREFUSED' }) });
    assert.equal(mayHaveArrived(refused), false);
    assert.equal(mayHaveArrived(Object.assign(new Error('x'), { code: 'ENOTFOUND' })), false);
    assert.equal(mayHaveArrived(new DOMException('timed out', 'TimeoutError')), true);
    assert.equal(
      mayHaveArrived(Object.assign(new TypeError('fetch failed'), { cause: Object.assign(new Error('reset'), { code: 'ECONNRESET' }) })),
      true,
    );
  });
});

describe('the delivery rules for one message', () => {
  const policy: RetryPolicy = { attempts: 4, baseMs: 10, maxWaitMs: 1000 };
  /** A channel that fails with the given errors in turn, then accepts. */
  const scripted = (dedupWindowMs: number, errors: (DeliveryError | null)[]) => {
    const sends: string[] = [];
    const channel: Channel = {
      name: 'discord',
      dedupWindowMs,
      send: async (_m, txn) => {
        sends.push(txn);
        const e = errors.shift();
        if (e) throw e;
      },
      close: async () => {},
    };
    return { channel, sends };
  };
  const queued = (over: Partial<QueuedMessage> = {}): QueuedMessage => ({
    message: message(),
    txn_id: 'rw-1',
    unanswered: 0,
    first_unanswered_at: null,
    ...over,
  });
  const run = async (channel: Channel, n: QueuedMessage, nowMs = 1_790_000_000_000) => {
    const noted: number[] = [];
    const waits: number[] = [];
    const o: Outcome = await deliverOne(channel, n, policy, {
      now: () => nowMs,
      sleep: async (ms) => void waits.push(ms),
      onUnanswered: (at) => noted.push(at),
    });
    return { o, noted, waits };
  };
  const timeout = () => new DeliveryError('discord: no answer', 'retry', { unanswered: true });

  it('retries a failure worth it with backoff, and delivers', async () => {
    const { channel, sends } = scripted(0, [new DeliveryError('500', 'retry'), new DeliveryError('500', 'retry')]);
    const { o, waits } = await run(channel, queued());
    assert.deepEqual(o, { result: 'delivered', attempts: 3 });
    assert.deepEqual(waits, [10, 20]);
    assert.deepEqual(sends, ['rw-1', 'rw-1', 'rw-1']);
  });

  it('parks a refused message at once, with the bare status for the notice', async () => {
    const { channel, sends } = scripted(0, [
      new DeliveryError('email: Message failed: 554 5.7.1 rejected', 'message', { status: 'SMTP 554' }),
    ]);
    const { o } = await run(channel, queued());
    assert.deepEqual(o, {
      result: 'parked',
      attempts: 1,
      refused: true,
      reason: 'refused: email: Message failed: 554 5.7.1 rejected',
      status: 'SMTP 554',
    });
    assert.equal(sends.length, 1);
  });

  it('holds the channel on a refusal of every message: not retried, not parked', async () => {
    const { channel, sends } = scripted(0, [new DeliveryError('matrix: 401 M_UNKNOWN_TOKEN', 'channel')]);
    const { o } = await run(channel, queued());
    assert.deepEqual(o, { result: 'kept', attempts: 1, held: true, error: 'matrix: 401 M_UNKNOWN_TOKEN', status: null });
    assert.equal(sends.length, 1);
  });

  it('without deduplication, sends a timed-out message once more at most, then parks it as unconfirmed', async () => {
    const { channel, sends } = scripted(0, [timeout(), timeout(), timeout()]);
    const { o, noted } = await run(channel, queued());
    assert.equal(sends.length, 2);
    assert.equal(noted.length, 2);
    assert.equal(o.result, 'parked');
    assert.equal(o.attempts, 2);
    assert.match((o as { reason: string }).reason, /^unconfirmed: discord: no answer; sent 2 times without an answer/);
    // A timeout, then an answer: delivered, two sends.
    const second = scripted(0, [timeout()]);
    assert.deepEqual((await run(second.channel, queued())).o, { result: 'delivered', attempts: 2 });
  });

  it('counts unanswered sends of earlier runs', async () => {
    const one = scripted(0, [timeout()]);
    const r = await run(one.channel, queued({ unanswered: 1, first_unanswered_at: 1_789_999_000 }));
    assert.equal(one.sends.length, 1);
    assert.equal(r.o.result, 'parked');
    const spent = scripted(0, []);
    const r2 = await run(spent.channel, queued({ unanswered: 2, first_unanswered_at: 1_789_999_000 }));
    assert.equal(spent.sends.length, 0);
    assert.deepEqual([r2.o.result, r2.o.attempts], ['parked', 0]);
  });

  it('with deduplication, retries timeouts within the window like any failure, and only then limits them', async () => {
    const { channel, sends } = scripted(120_000, [timeout(), timeout(), timeout(), timeout()]);
    const { o } = await run(channel, queued());
    assert.equal(sends.length, 4);
    assert.deepEqual(o, { result: 'kept', attempts: 4, held: false, error: 'discord: no answer', status: null });
    // The next run, two minutes later: the receiver no longer recognises the txn id.
    const later = scripted(120_000, []);
    const r = await run(later.channel, queued({ unanswered: 4, first_unanswered_at: 1_790_000_000 }), 1_790_000_000_000 + 120_000);
    assert.deepEqual([r.o.result, later.sends.length], ['parked', 0]);
    // Within it, the message is sent again.
    const soon = scripted(120_000, []);
    const r3 = await run(soon.channel, queued({ unanswered: 4, first_unanswered_at: 1_790_000_000 }), 1_790_000_000_000 + 60_000);
    assert.deepEqual([r3.o.result, soon.sends.length], ['delivered', 1]);
  });

  it('mayResend: at most one resend without an answer, more only inside the window', () => {
    const t = 1_790_000_000;
    assert.equal(mayResend(0, 0, null, t * 1000), true);
    assert.equal(mayResend(0, 1, t, t * 1000 + 3_600_000), true);
    assert.equal(mayResend(0, 2, t, t * 1000), false);
    assert.equal(mayResend(60_000, 5, t, t * 1000 + 59_000), true);
    assert.equal(mayResend(60_000, 2, t, t * 1000 + 60_000), false);
  });
});

describe('the fallback notice', () => {
  it('says what could not be delivered with the kind and the domain only', () => {
    const m = renderFallback({ kind: 'new_failing_source', domain: 'Example.COM' }, 'opened', 'SMTP 554', 100);
    assert.equal(m.title, 'ruawatch: an alert could not be delivered');
    assert.equal(
      m.text,
      'An alert of kind new_failing_source for example.com could not be delivered in full: this channel refused it (SMTP 554). It is kept as parked; the dashboard and "ruawatch notify status" show it.',
    );
    assert.deepEqual(m.fields, [
      { name: 'Kind', value: 'new_failing_source' },
      { name: 'Domain', value: 'example.com' },
    ]);
  });

  it('leaves out a domain that is not one, and speaks of a digest as a digest', () => {
    const m = renderFallback({ kind: 'reporter_silent', domain: 'buy <b>pills</b> now.example' }, 'resolved', null, 100);
    assert.doesNotMatch(m.text + m.html, /pills/);
    assert.match(m.text, /^An alert \(resolved\) of kind reporter_silent could not be delivered in full: this channel refused it\./);
    assert.match(
      renderFallback(null, 'digest', 'HTTP 400', 100).text,
      /^The digest could not be delivered in full: this channel refused it \(HTTP 400\)/,
    );
  });
});
