import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { describe, it } from 'node:test';
import { readRsaKey, signJwt, unverifiedExpiry } from '../../src/auth/jwt.js';
import { microsoftScope, parseTokenText } from '../../src/auth/providers.js';
import { CachedTokens, renewalMargin, type Issued } from '../../src/auth/tokens.js';
import { createLogger } from '../../src/log.js';
import { retryAfter } from '../../src/sources/graph-client.js';
import { epochOf } from '../../src/sources/graph.js';
import { mailboxConfig } from '../helpers/config.js';

const log = createLogger('silent');

const box = mailboxConfig;

describe('JWT (auth/jwt.ts)', () => {
  const { privateKey, publicKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });

  it('signs RS256 and PS256 (RFC 7518 3.3, 3.5) in compact form, base64url without padding, verifiable with the public key', () => {
    for (const alg of ['RS256', 'PS256'] as const) {
      const jwt = signJwt({ typ: 'JWT', kid: 'k' }, { iss: 'a', n: 'ü' }, privateKey, alg);
      const [h, c, s] = jwt.split('.') as [string, string, string];
      assert.match(jwt, /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/);
      assert.deepEqual(JSON.parse(Buffer.from(h, 'base64url').toString()), { typ: 'JWT', kid: 'k', alg });
      assert.deepEqual(JSON.parse(Buffer.from(c, 'base64url').toString()), { iss: 'a', n: 'ü' });
      const data = Buffer.from(`${h}.${c}`);
      const sig = Buffer.from(s, 'base64url');
      const ok =
        alg === 'PS256'
          ? crypto.verify('sha256', data, { key: publicKey, padding: crypto.constants.RSA_PKCS1_PSS_PADDING, saltLength: 32 }, sig)
          : crypto.verify('sha256', data, publicKey, sig);
      assert.ok(ok, alg);
    }
  });

  it('reads an RSA key from PEM among certificates; refuses an EC key, an encrypted one, and none', () => {
    const pem = privateKey.export({ type: 'pkcs8', format: 'pem' }) as string;
    assert.equal(readRsaKey(`-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n${pem}`, 'k').asymmetricKeyType, 'rsa');
    const ec = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ type: 'pkcs8', format: 'pem' }) as string;
    assert.throws(() => readRsaKey(ec, 'k'), /k: an ec key; an RSA key is needed/);
    const enc = privateKey.export({ type: 'pkcs8', format: 'pem', cipher: 'aes-256-cbc', passphrase: 'x' }) as string;
    assert.throws(() => readRsaKey(enc, 'k'), /encrypted; give it without a passphrase/);
    assert.throws(() => readRsaKey('hello', 'k'), /no PEM private key/);
  });

  it('reads the exp of a JWT without trusting it, and nothing of an opaque token', () => {
    const jwt = signJwt({}, { exp: 2_000_000_000 }, privateKey, 'RS256');
    assert.equal(unverifiedExpiry(jwt), 2_000_000_000);
    assert.equal(unverifiedExpiry('opaque-token'), null);
    assert.equal(unverifiedExpiry('a.b.c'), null);
  });
});

describe('token cache (auth/tokens.ts)', () => {
  it('keeps a token until a quarter of its life (at most 5 minutes) before it expires', () => {
    assert.equal(renewalMargin(3600_000), 300_000);
    assert.equal(renewalMargin(8_000), 2_000);
  });

  it('asks once for callers at the same time, reuses, renews before expiry, after a refusal, and never for a token without expiry', async () => {
    let now = 1_000_000;
    let asked = 0;
    let lifetime: number | null = 3600;
    let release: (() => void) | null = null;
    const cache = new CachedTokens(
      'test',
      async (): Promise<Issued> => {
        asked++;
        if (asked === 1) await new Promise<void>((r) => (release = r));
        return { value: `t${asked}`, expiresIn: lifetime };
      },
      log,
      () => now,
    );
    const a = cache.token();
    const b = cache.token();
    await new Promise((r) => setImmediate(r));
    release!();
    const [ta, tb] = await Promise.all([a, b]);
    assert.equal(asked, 1);
    assert.deepEqual([ta.value, ta.fresh, tb.value], ['t1', true, 't1']);
    assert.equal(ta.expiresAt, 1_000_000 + 3600_000);
    now += 3600_000 - 300_001;
    assert.deepEqual(await cache.token(), { value: 't1', expiresAt: 1_000_000 + 3600_000, fresh: false });
    now += 2;
    assert.equal((await cache.token()).value, 't2');
    cache.refused({ value: 'not-the-current-one', expiresAt: null, fresh: false });
    assert.equal((await cache.token()).value, 't2');
    cache.refused(await cache.token());
    lifetime = null;
    assert.equal((await cache.token()).value, 't3');
    now += 365 * 86400_000;
    assert.deepEqual(await cache.token(), { value: 't3', expiresAt: null, fresh: false });
    assert.equal(asked, 3);
  });
});

describe('token providers (auth/providers.ts)', () => {
  it('asks Microsoft for Exchange Online over IMAP and for Graph (of its cloud) otherwise', () => {
    assert.equal(microsoftScope(box({})), 'https://outlook.office365.com/.default');
    assert.equal(microsoftScope(box({ kind: 'graph' })), 'https://graph.microsoft.com/.default');
    assert.equal(
      microsoftScope(box({ kind: 'graph', graph_url: 'https://graph.microsoft.us/v1.0' })),
      'https://graph.microsoft.us/.default',
    );
    assert.equal(microsoftScope(box({ scope: 'https://outlook.office365.us/.default' })), 'https://outlook.office365.us/.default');
  });

  it("reads a token as a command prints it or a file holds it: alone, or a token endpoint's JSON; its life from expires_in or the JWT", () => {
    assert.deepEqual(parseTokenText('abc\n', 'cmd'), { value: 'abc', expiresIn: null });
    assert.deepEqual(parseTokenText('{"access_token":"abc","expires_in":60}', 'cmd'), { value: 'abc', expiresIn: 60 });
    const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
    const jwt = signJwt({}, { exp: Math.floor(Date.now() / 1000) + 600 }, privateKey, 'RS256');
    const fromJwt = parseTokenText(jwt, 'cmd').expiresIn!;
    assert.ok(fromJwt > 590 && fromJwt <= 600, String(fromJwt));
    assert.throws(() => parseTokenText('', 'cmd'), /cmd: no token \(empty\)/);
    assert.throws(() => parseTokenText('Bearer abc', 'cmd'), /one token on one line/);
    assert.throws(() => parseTokenText('{"error":"x"}', 'cmd'), /the JSON has no access_token/);
  });
});

describe('Graph helpers', () => {
  it('reads Retry-After as seconds or an HTTP date (RFC 9110 section 10.2.3)', () => {
    assert.equal(retryAfter('7'), 7000);
    assert.equal(retryAfter('Wed, 21 Oct 2026 07:28:10 GMT', Date.parse('Wed, 21 Oct 2026 07:28:00 GMT')), 10_000);
    assert.equal(retryAfter('soon'), null);
    assert.equal(retryAfter(null), null);
  });

  it('derives a stable 31-bit epoch from a folder id, another for another id', () => {
    const a = epochOf('AAMkAGI2THVSAAA=');
    assert.equal(a, epochOf('AAMkAGI2THVSAAA='));
    assert.notEqual(a, epochOf('AAMkAGI2THVSAAB='));
    assert.ok(Number.isInteger(a) && a >= 0 && a < 2 ** 31);
  });
});
