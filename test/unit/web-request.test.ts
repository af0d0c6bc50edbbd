import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { configSchema } from '../../src/config/schema.js';
import { Credentials, LoginThrottle } from '../../src/web/auth.js';
import { clientKey, parseTarget } from '../../src/web/request.js';

describe('parseTarget', () => {
  const ok: [string, string, Record<string, string>][] = [
    ['/', '/', {}],
    ['/healthz', '/healthz', {}],
    ['/api/overview?days=35&at=2026-11-08', '/api/overview', { days: '35', at: '2026-11-08' }],
    ['/api/overview?days=%33%35', '/api/overview', { days: '35' }],
    ['/api/overview?x=%zz|{}', '/api/overview', { x: '%zz|{}' }],
    ['//double//slash', '//double//slash', {}],
    ['/a%20b', '/a%20b', {}],
    ['http://example.com/healthz', '/healthz', {}],
    ['HTTP://EXAMPLE.COM:8080/metrics?x=1', '/metrics', { x: '1' }],
    ['https://[::1]:443/', '/', {}],
  ];
  for (const [raw, path, query] of ok) {
    it(`reads ${raw}`, () => {
      const t = parseTarget(raw);
      assert.ok(t);
      assert.equal(t.path, path);
      assert.deepEqual(Object.fromEntries(t.query), query);
    });
  }
  const bad = [
    undefined,
    '',
    '*',
    'healthz',
    '//[',
    '//%zz/',
    '/%4',
    'http://%/',
    'http://a:99999/',
    'http://[::1/',
    'file:///etc/passwd',
    'javascript:alert(1)',
    '/a b',
    '/a\0b',
    '/a\\b',
    '/a<b>',
    '/"x"',
    '/?a#b',
    '/é',
    `/${'a'.repeat(5000)}`,
  ];
  for (const raw of bad) {
    it(`refuses ${JSON.stringify(raw)?.slice(0, 40)}`, () => assert.equal(parseTarget(raw), null));
  }
});

describe('clientKey', () => {
  it('an IPv4 address is itself, IPv4-mapped IPv6 is IPv4, IPv6 is its /64', () => {
    assert.equal(clientKey('192.0.2.7'), '192.0.2.7');
    assert.equal(clientKey('::ffff:192.0.2.7'), '192.0.2.7');
    assert.equal(clientKey('2001:db8:1:2:aaaa:bbbb:cccc:dddd'), '2001:db8:1:2::/64');
    assert.equal(clientKey('2001:db8:1:2::1'), '2001:db8:1:2::/64');
    assert.equal(clientKey('2001:db8::1'), '2001:db8:0:0::/64');
    assert.equal(clientKey('2001:0db8:0001:0002::ffff'), '2001:db8:1:2::/64');
    assert.equal(clientKey('::1'), '0:0:0:0::/64');
    assert.equal(clientKey(undefined), 'unknown');
  });
});

describe('LoginThrottle', () => {
  it('blocks a client after maxFailures in a window, until the window ends; a success clears it', () => {
    const t = new LoginThrottle({ maxFailures: 3, windowSeconds: 100, maxClients: 10 });
    assert.equal(t.fail('a', 1000), 1);
    assert.equal(t.fail('a', 1010), 2);
    assert.equal(t.blockedFor('a', 1010), 0);
    assert.equal(t.fail('a', 1020), 3);
    assert.equal(t.blockedFor('a', 1020), 80);
    assert.equal(t.blockedFor('b', 1020), 0);
    assert.equal(t.blockedFor('a', 1100), 0);
    assert.equal(t.fail('a', 1100), 1, 'a new window');
    t.succeed('a');
    assert.equal(t.fail('a', 1101), 1);
  });

  it('remembers at most maxClients clients, however many addresses fail', () => {
    const t = new LoginThrottle({ maxFailures: 3, windowSeconds: 600, maxClients: 100 });
    for (let i = 0; i < 100_000; i++) t.fail(`10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`, 1000 + Math.floor(i / 1000));
    assert.ok(t.size <= 100, `size ${t.size}`);
    // The latest are the ones kept.
    for (let k = 0; k < 3; k++) t.fail('10.1.134.159', 1100);
    assert.ok(t.blockedFor('10.1.134.159', 1100) > 0);
  });
});

describe('Credentials', () => {
  const creds = (web: Record<string, string>) => new Credentials(configSchema.parse({ web }).web);
  const basic = (s: string, scheme = 'Basic') => `${scheme} ${Buffer.from(s).toString('base64')}`;

  it('open when nothing is configured', () => {
    assert.equal(creds({}).check(undefined), 'open');
    assert.equal(creds({}).check('Bearer x'), 'open');
  });

  it('a token: the scheme in any case, the exact token only', () => {
    const c = creds({ token: 'tok' });
    assert.equal(c.check(undefined), 'missing');
    assert.equal(c.check(''), 'missing');
    assert.equal(c.check('Bearer tok'), 'ok');
    assert.equal(c.check('bearer tok'), 'ok');
    assert.equal(c.check('BEARER   tok'), 'ok');
    assert.equal(c.check('Bearer tok2'), 'wrong');
    assert.equal(c.check('Bearer to'), 'wrong');
    assert.equal(c.check('Bearer'), 'wrong');
    assert.equal(c.check('Bearertok'), 'wrong');
    assert.equal(c.check(basic('tok:tok')), 'wrong');
    assert.deepEqual(c.challenges, ['Bearer']);
  });

  it('basic auth: user and password both right, a colon allowed in the password (RFC 7617)', () => {
    const c = creds({ user: 'admin', password: 'p:w' });
    assert.equal(c.check(basic('admin:p:w')), 'ok');
    assert.equal(c.check(basic('admin:p:w', 'basic')), 'ok');
    assert.equal(c.check(basic('admin:p:w', 'BASIC')), 'ok');
    assert.equal(c.check(basic('admin:p')), 'wrong');
    assert.equal(c.check(basic('admi:p:w')), 'wrong');
    assert.equal(c.check(basic('admin')), 'wrong');
    assert.equal(c.check(basic(':p:w')), 'wrong');
    assert.equal(c.check('Basic !!!not-base64!!!'), 'wrong');
    assert.equal(c.check('Bearer p:w'), 'wrong');
    assert.deepEqual(c.challenges, ['Basic realm="ruawatch", charset="UTF-8"']);
  });
});
