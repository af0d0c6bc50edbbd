import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { Writable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { pino } from 'pino';
import { openApp } from '../src/app.js';
import { DAY } from '../src/analyse/index.js';
import { configSchema } from '../src/config/schema.js';
import type { Logger } from '../src/log.js';
import { startWeb, type WebOptions, type WebServer } from '../src/web/server.js';
import { Worker } from '../src/worker/worker.js';
import { bufferInput, CLI, freshStore, tempDir } from './helpers/common.js';
import { dmarcXml, record } from './helpers/synth.js';

/**
 * The web server as an attacker and an unlucky operator meet it: malformed requests over raw TCP,
 * the headers of every answer, what /healthz tells a stranger, logins and their throttle, and
 * /api/overview under load.
 */

/** Sends raw bytes, returns everything the server answered before it closed (or `timeoutMs`). */
function raw(port: number, bytes: string | Buffer, timeoutMs = 5_000): Promise<string> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    let out = '';
    const done = () => {
      clearTimeout(timer);
      s.destroy();
      resolve(out);
    };
    const timer = setTimeout(done, timeoutMs);
    s.on('data', (d: Buffer) => (out += d.toString('latin1')));
    s.on('end', done);
    s.on('error', done);
    s.on('close', done);
    s.write(bytes);
  });
}

/** Like raw(), telling also when the request has been handed to the kernel. */
function rawCall(port: number, bytes: string): { written: Promise<void>; answer: Promise<string> } {
  let written!: () => void;
  const w = new Promise<void>((r) => (written = r));
  const answer = new Promise<string>((resolve) => {
    const s = net.connect(port, '127.0.0.1', () => s.write(bytes, () => written()));
    let out = '';
    s.on('data', (d: Buffer) => (out += d.toString('latin1')));
    s.on('error', () => resolve(out));
    s.on('close', () => resolve(out));
  });
  return { written: w, answer };
}

const statusOf = (answer: string) => Number(/^HTTP\/1\.1 (\d{3})/.exec(answer)?.[1] ?? 0);

/** A logger whose JSON lines the test can read. */
function capturedLogger(): { log: Logger; lines: () => Record<string, unknown>[] } {
  const chunks: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      chunks.push(chunk.toString());
      cb();
    },
  });
  const log = pino({ level: 'debug', base: undefined }, sink);
  return {
    log,
    lines: () =>
      chunks
        .join('')
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as Record<string, unknown>),
  };
}

const store = freshStore();
const today = Math.floor(Date.now() / 1000 / DAY);

before(async () => {
  // 105 reports from the last week (the whole days before today, as the dashboard counts them), one
  // of them with 300 source IPs: more than /api/overview lists.
  for (let i = 0; i < 105; i++) {
    const begin = (today - 1 - (i % 6)) * DAY + i;
    const records =
      i === 0 ? Array.from({ length: 300 }, (_, k) => record({ ip: `198.51.${100 + (k >> 8)}.${k & 255}`, count: 1 + k })) : [record({})];
    const xml = dmarcXml({ reportId: `web-${i}`, begin, end: begin + 3600, records });
    assert.equal((await store.ingestor.ingest(bufferInput(`r${i}.xml`, xml))).leaves[0]!.status, 'stored');
  }
});
after(() => store.db.close());

async function serve(web: Record<string, unknown>, log: Logger = pino({ level: 'silent' }), opts: WebOptions = {}) {
  const config = configSchema.parse({ web: { listen: '127.0.0.1:0', ...web }, analysis: { reverse_dns: false } });
  const worker = new Worker(openApp(config, { db: store.db, log, lookup: null, channels: [] }));
  const server = await startWeb(config, store.db, worker, log, opts);
  return { server, worker, port: Number(new URL(server.url).port) };
}

const TOKEN = { authorization: 'Bearer s3cret-token' };

describe('a request the server cannot read', () => {
  let proc: ChildProcess;
  let url: string;
  let port: number;
  let stderr = '';
  let exited: { code: number | null; signal: string | null } | null = null;

  before(async () => {
    const dir = tempDir();
    const config = path.join(dir, 'c.toml');
    fs.writeFileSync(
      config,
      `[database]\npath = "${store.file}"\n[analysis]\nreverse_dns = false\n[schedule]\npoll = "0 0 1 1 *"\n` +
        `[web]\nlisten = "127.0.0.1:0"\ntoken = "s3cret-token"\n[log]\nlevel = "warn"\n`,
    );
    proc = spawn(process.execPath, [CLI, 'run', '--config', config], { env: { PATH: process.env.PATH ?? '' } });
    proc.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    proc.on('exit', (code, signal) => (exited = { code, signal }));
    url = await new Promise<string>((resolve, reject) => {
      let out = '';
      proc.stdout!.on('data', (d: Buffer) => {
        out += d.toString();
        const m = /on (http:\/\/\S+)/.exec(out);
        if (m) resolve(m[1]!);
      });
      proc.once('exit', () => reject(new Error(`ruawatch run exited: ${stderr}`)));
    });
    port = Number(new URL(url).port);
  });
  after(() => {
    proc?.kill('SIGKILL');
  });

  const cases: [string, string | Buffer, number][] = [
    ['a scheme-relative target with a bad host', 'GET //[ HTTP/1.1\r\nHost: x\r\n\r\n', 400],
    ['a percent sign for a host', 'GET http://%/ HTTP/1.1\r\nHost: x\r\n\r\n', 400],
    ['a port out of range', 'GET http://a:99999/ HTTP/1.1\r\nHost: x\r\n\r\n', 400],
    ['a bad percent-encoding', 'GET //%zz/ HTTP/1.1\r\nHost: x\r\n\r\n', 400],
    ['an unclosed IPv6 literal', 'GET http://[::1/ HTTP/1.1\r\nHost: x\r\n\r\n', 400],
    ['asterisk-form with GET', 'GET * HTTP/1.1\r\nHost: x\r\n\r\n', 400],
    ['OPTIONS *', 'OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n', 405],
    ['a target that is no URI at all', 'GET healthz HTTP/1.1\r\nHost: x\r\n\r\n', 400],
    ['another scheme in absolute-form', 'GET file:///etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n', 400],
    ['a NUL byte in the target', 'GET /heal\0thz HTTP/1.1\r\nHost: x\r\n\r\n', 400],
    ['a NUL byte in a header', 'GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\0b\r\n\r\n', 400],
    ['headers of 64 KiB', `GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(64 * 1024)}\r\n\r\n`, 431],
    ['a TLS handshake on the plain port', Buffer.from('16030100f5010000f10303', 'hex'), 400],
    ['an HTTP version that does not exist', 'GET /healthz HTTP/7.1\r\nHost: x\r\n\r\n', 400],
    ['no Host header in HTTP/1.1', 'GET /healthz HTTP/1.1\r\n\r\n', 400],
    ['a negative Content-Length', 'GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n', 400],
    ['a path past 4 KiB', `GET /${'a'.repeat(5000)} HTTP/1.1\r\nHost: x\r\n\r\n`, 400],
  ];
  for (const [what, bytes, expected] of cases) {
    it(`${what}: ${expected}, and the server goes on`, async () => {
      const answer = await raw(port, bytes);
      assert.equal(statusOf(answer), expected, answer.slice(0, 300));
      assert.match(answer, /\r\nx-content-type-options: nosniff\r\n/i);
      assert.match(answer, /\r\ncontent-security-policy: [^\r]*frame-ancestors 'none'/i);
      const h = await fetch(`${url}/healthz`);
      assert.equal(h.status, 200);
      assert.equal(exited, null, stderr);
    });
  }

  it('absolute-form targets are read as their path (RFC 9112 section 3.2.2)', async () => {
    const answer = await raw(port, 'GET http://example.com/healthz HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n');
    assert.equal(statusOf(answer), 200, answer);
    assert.match(answer, /"status":"(ok|starting)"/);
    const denied = await raw(port, 'GET http://example.com/api/overview?days=3 HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n');
    assert.equal(statusOf(denied), 401);
  });

  it('a client that hangs up in the middle, a thousand times, changes nothing', async () => {
    await Promise.all(
      Array.from(
        { length: 1000 },
        (_, i) =>
          new Promise<void>((resolve) => {
            const s = net.connect(port, '127.0.0.1', () => {
              s.write(i % 2 ? 'GET /api/overview HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cret-token\r\n\r\n' : 'GET /hea');
              setTimeout(() => s.resetAndDestroy(), i % 7);
            });
            s.on('error', () => undefined);
            s.on('close', () => resolve());
          }),
      ),
    );
    assert.equal((await fetch(`${url}/healthz`)).status, 200);
    assert.equal((await fetch(`${url}/api/overview`, { headers: TOKEN })).status, 200);
    assert.equal(exited, null, stderr);
  });
});

describe('headers', () => {
  let web: { server: WebServer; port: number };
  before(async () => {
    web = await serve({ user: 'admin', password: 'pw' });
  });
  after(() => web.server.close());

  const basic = { authorization: `Basic ${Buffer.from('admin:pw').toString('base64')}` };
  const paths: [string, RequestInit, number][] = [
    ['/', { headers: basic }, 200],
    ['/healthz', {}, 200],
    ['/api/overview', { headers: basic }, 200],
    ['/api/status', { headers: basic }, 200],
    ['/metrics', { headers: basic }, 200],
    ['/assets/dashboard.js', { headers: basic }, 200],
    ['/api/reports/99999', { headers: basic }, 404],
    ['/nothing', { headers: basic }, 404],
    ['/', {}, 401],
    ['/api/overview', { method: 'POST' }, 405],
  ];
  for (const [p, init, expected] of paths) {
    it(`${init.method ?? 'GET'} ${p} (${expected}) carries nosniff, DENY, no-referrer and frame-ancestors 'none'`, async () => {
      const res = await fetch(`${web.server.url}${p}`, init);
      assert.equal(res.status, expected);
      assert.equal(res.headers.get('x-content-type-options'), 'nosniff');
      assert.equal(res.headers.get('x-frame-options'), 'DENY');
      assert.equal(res.headers.get('referrer-policy'), 'no-referrer');
      assert.match(res.headers.get('content-security-policy') ?? '', /frame-ancestors 'none'/);
      await res.arrayBuffer();
    });
  }

  it('the page keeps its strict policy: scripts from itself only, nothing inline', async () => {
    const csp = (await fetch(`${web.server.url}/`, { headers: basic })).headers.get('content-security-policy')!;
    assert.match(csp, /default-src 'none'/);
    assert.match(csp, /script-src 'self'(;|$)/);
    assert.doesNotMatch(csp, /script-src[^;]*unsafe/);
  });
});

describe('/healthz and /api/status', () => {
  const SECRET_ERROR = 'mailbox dmarc (mail.example.com): authentication failed for dmarc@example.com';

  it('a failed poll: 503 failing, with a reason in general terms and no mailbox, host, user or error text', async () => {
    const { server, worker } = await serve({ token: 's3cret-token' });
    try {
      const now = Math.floor(Date.now() / 1000);
      Object.assign(worker.state, { lastPollAt: now - 5, lastError: { at: now - 4, message: SECRET_ERROR }, consecutiveFailures: 2 });
      const res = await fetch(`${server.url}/healthz`);
      assert.equal(res.status, 503);
      const text = await res.text();
      const body = JSON.parse(text) as { status: string; reasons: string[]; consecutive_failures: number };
      assert.equal(body.status, 'failing');
      assert.equal(body.consecutive_failures, 2);
      assert.deepEqual(body.reasons, ['the last 2 polls failed']);
      assert.doesNotMatch(text, /example\.com|dmarc|authentication/);

      assert.equal((await fetch(`${server.url}/api/status`)).status, 401);
      const detail = (await (await fetch(`${server.url}/api/status`, { headers: TOKEN })).json()) as {
        health: { status: string };
        worker: { lastError: { message: string } };
      };
      assert.equal(detail.health.status, 'failing');
      assert.equal(detail.worker.lastError.message, SECRET_ERROR);
    } finally {
      await server.close();
    }
  });

  it('a poll running past its deadline turns /healthz to 503 "stuck" while it runs, and says so in general terms', async () => {
    const { server, worker } = await serve({ token: 's3cret-token' });
    try {
      const now = Math.floor(Date.now() / 1000);
      Object.assign(worker.state, { lastSuccessAt: now - 3600, lastPollAt: now - 30, pollStartedAt: now - 30, pollDeadlineAt: now + 30 });
      Object.assign(worker.state, { polling: true });
      let res = await fetch(`${server.url}/healthz`);
      assert.equal(res.status, 200);
      const running = (await res.json()) as { status: string; poll_running_seconds: number; poll_deadline: string };
      assert.equal(running.status, 'ok');
      assert.ok(running.poll_running_seconds >= 30);
      assert.equal(running.poll_deadline, new Date((now + 30) * 1000).toISOString());

      Object.assign(worker.state, { pollStartedAt: now - 90, pollDeadlineAt: now - 30 });
      res = await fetch(`${server.url}/healthz`);
      assert.equal(res.status, 503);
      const body = (await res.json()) as { status: string; reasons: string[]; poll_running_seconds: number };
      assert.equal(body.status, 'stuck');
      assert.ok(body.poll_running_seconds >= 90);
      assert.match(body.reasons[0]!, /^a poll has been running for \d+ s, past its deadline$/);

      // No deadline set ([schedule] poll_timeout_seconds = 0): never stuck.
      Object.assign(worker.state, { pollDeadlineAt: null });
      assert.equal((await fetch(`${server.url}/healthz`)).status, 200);
      Object.assign(worker.state, { polling: false, pollStartedAt: null });
      assert.equal((await fetch(`${server.url}/healthz`)).status, 200);
    } finally {
      await server.close();
    }
  });

  it('before the first poll: 200 starting', async () => {
    const { server } = await serve({});
    try {
      const res = await fetch(`${server.url}/healthz`);
      assert.equal(res.status, 200);
      const body = (await res.json()) as { status: string; reasons: string[]; warnings: string[] };
      assert.deepEqual([body.status, body.reasons, body.warnings], ['starting', [], []]);
    } finally {
      await server.close();
    }
  });
});

describe('authentication', () => {
  const basic = (u: string, p: string, scheme = 'Basic') => ({ authorization: `${scheme} ${Buffer.from(`${u}:${p}`).toString('base64')}` });

  it('scheme names in any case (RFC 9110 section 11.1); user name and password both checked', async () => {
    const { server } = await serve({ user: 'admin', password: 'pa:ss', token: 's3cret-token' });
    try {
      const get = async (headers: Record<string, string>) => (await fetch(`${server.url}/api/status`, { headers })).status;
      assert.equal(await get({ authorization: 'bearer s3cret-token' }), 200);
      assert.equal(await get({ authorization: 'BEARER s3cret-token' }), 200);
      assert.equal(await get(basic('admin', 'pa:ss', 'basic')), 200);
      assert.equal(await get(basic('admin', 'pa:ss', 'BaSiC')), 200);
      assert.equal(await get(basic('admin', 'wrong')), 401);
      assert.equal(await get(basic('nobody', 'pa:ss')), 401);
      assert.equal(await get(basic('admin', 'pa:s')), 401);
      assert.equal(await get({ authorization: 'Bearer s3cret-token-and-more' }), 401);
      assert.equal(await get({ authorization: 'Bearer' }), 401);
      assert.equal(await get({ authorization: 'Digest s3cret-token' }), 401);
      const res = await fetch(`${server.url}/api/status`);
      assert.equal(res.status, 401);
      assert.equal(res.headers.get('www-authenticate'), 'Basic realm="ruawatch", charset="UTF-8", Bearer');
    } finally {
      await server.close();
    }
  });

  /** A GET from a chosen loopback source address (all of 127.0.0.0/8 is loopback on Linux). */
  function getFrom(
    localAddress: string,
    url: string,
    headers: Record<string, string>,
  ): Promise<{ status: number; retryAfter: string | null }> {
    return new Promise((resolve, reject) => {
      http
        .get(url, { localAddress, headers }, (res) => {
          res.resume();
          res.on('end', () => resolve({ status: res.statusCode!, retryAfter: (res.headers['retry-after'] as string | undefined) ?? null }));
        })
        .on('error', reject);
    });
  }

  it('failed logins are logged with the client address and no secret, and throttled per client with 429 and Retry-After', async () => {
    const { log, lines } = capturedLogger();
    const { server } = await serve({ token: 's3cret-token' }, log, { throttle: { maxFailures: 3, windowSeconds: 120, maxClients: 100 } });
    try {
      const url = `${server.url}/api/overview`;
      // Asking without credentials is what a browser does first: not a failure.
      for (let i = 0; i < 5; i++) assert.equal((await getFrom('127.0.0.2', url, {})).status, 401);
      for (let i = 0; i < 3; i++) assert.equal((await getFrom('127.0.0.2', url, { authorization: 'Bearer guess-number-one' })).status, 401);
      const blocked = await getFrom('127.0.0.2', url, { authorization: 'Bearer s3cret-token' });
      assert.equal(blocked.status, 429, 'the right token is refused too while the client is blocked');
      assert.ok(Number(blocked.retryAfter) > 100 && Number(blocked.retryAfter) <= 120, `Retry-After: ${blocked.retryAfter}`);
      // Another client is not affected, and /healthz stays open to the blocked one.
      assert.equal((await getFrom('127.0.0.3', url, { authorization: 'Bearer s3cret-token' })).status, 200);
      assert.equal((await getFrom('127.0.0.2', `${server.url}/healthz`, {})).status, 200);

      const failed = lines().filter((l) => l.msg === 'web login failed');
      assert.equal(failed.length, 3);
      assert.deepEqual(
        failed.map((l) => [l.client, l.failures]),
        [
          ['127.0.0.2', 1],
          ['127.0.0.2', 2],
          ['127.0.0.2', 3],
        ],
      );
      assert.ok(lines().some((l) => /too many failed web logins/.test(String(l.msg))));
      const all = JSON.stringify(lines());
      assert.doesNotMatch(all, /guess-number-one|s3cret/);
    } finally {
      await server.close();
    }
  });
});

describe('/api/overview', () => {
  it('bounded: at most 200 sources and 100 reports, with the limits and what was cut stated', async () => {
    const { server } = await serve({ token: 's3cret-token' });
    try {
      const o = (await (await fetch(`${server.url}/api/overview`, { headers: TOKEN })).json()) as {
        limits: { sources: number; reports: number };
        truncated: { sources: boolean; reports: boolean; domains: boolean };
        sources: { ip: string; messages: number }[];
        reports: unknown[];
      };
      assert.equal(o.limits.sources, 200);
      assert.equal(o.limits.reports, 100);
      assert.equal(o.sources.length, 200);
      assert.equal(o.reports.length, 100);
      assert.deepEqual(o.truncated, { domains: false, tls: false, sources: true, open_alerts: false, reports: true });
      // The 200 with the most messages: 192.0.2.10 of the small reports (104 x 3), then counts 300..102 of the big one.
      assert.equal(o.sources.find((s) => s.ip === '192.0.2.10')?.messages, 312);
      assert.equal(Math.min(...o.sources.map((s) => s.messages)), 102);
    } finally {
      await server.close();
    }
  });

  it('twenty callers at once share one computation, and later ones a short cache', async () => {
    const { server } = await serve({ token: 's3cret-token' }, undefined, { overviewCacheMs: 60_000 });
    try {
      const bodies = await Promise.all(
        Array.from({ length: 20 }, async () => (await fetch(`${server.url}/api/overview?days=7`, { headers: TOKEN })).text()),
      );
      assert.equal(new Set(bodies).size, 1);
      const status = async () =>
        (
          (await (await fetch(`${server.url}/api/status`, { headers: TOKEN })).json()) as {
            web: { queries: { run: number; shared: number } };
          }
        ).web.queries;
      assert.deepEqual(await status(), { run: 1, shared: 19, busy: 0 });
      await fetch(`${server.url}/api/overview?days=7`, { headers: TOKEN });
      await fetch(`${server.url}/api/overview?days=8`, { headers: TOKEN });
      assert.deepEqual(await status(), { run: 2, shared: 20, busy: 0 });
    } finally {
      await server.close();
    }
  });

  it('/healthz does not wait for dashboard queries', async () => {
    // A database where one overview costs real time: 30 reports x 2,000 records from the last week.
    const big = freshStore();
    for (let i = 0; i < 30; i++) {
      const begin = (today - (i % 7)) * DAY + i;
      const records = Array.from({ length: 2000 }, (_, k) => record({ ip: `10.${i}.${k >> 8}.${k & 255}`, count: 1 + (k % 9) }));
      await big.ingestor.ingest(bufferInput(`b${i}.xml`, dmarcXml({ reportId: `big-${i}`, begin, end: begin + 3600, records })));
    }
    const config = configSchema.parse({ web: { listen: '127.0.0.1:0', token: 's3cret-token' }, analysis: { reverse_dns: false } });
    const log = pino({ level: 'silent' });
    const server = await startWeb(config, big.db, new Worker(openApp(config, { db: big.db, log, lookup: null, channels: [] })), log);
    try {
      const order: string[] = [];
      // Twelve different questions (none can share another's answer), each on its own connection,
      // all written to the server before /healthz is asked.
      const port = Number(new URL(server.url).port);
      const calls = Array.from({ length: 12 }, (_, i) => {
        const req = `GET /api/overview?days=${i + 1} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cret-token\r\nConnection: close\r\n\r\n`;
        const call = rawCall(port, req);
        return { written: call.written, answered: call.answer.then((a) => void order.push(`overview ${statusOf(a)}`)) };
      });
      await Promise.all(calls.map((c) => c.written));
      await new Promise((r) => setTimeout(r, 20));
      const h = await raw(port, 'GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n', 60_000);
      order.push(`healthz ${statusOf(h)}`);
      await Promise.all(calls.map((c) => c.answered));
      assert.equal(order.length, 13);
      assert.equal(order.filter((o) => o === 'overview 200').length, 12, order.join(', '));
      // Answered before all but at most two of the queries asked before it.
      const at = order.indexOf('healthz 200');
      assert.ok(at >= 0 && at < 3, order.join(', '));
    } finally {
      await server.close();
      big.db.close();
    }
  });

  it('a query that fails gets 500, and the server goes on', async () => {
    const broken = freshStore();
    broken.db.exec(`ALTER TABLE reports RENAME TO reports_gone`);
    const config = configSchema.parse({ web: { listen: '127.0.0.1:0' }, analysis: { reverse_dns: false } });
    const { log, lines } = capturedLogger();
    const server = await startWeb(config, broken.db, new Worker(openApp(config, { db: broken.db, log, lookup: null, channels: [] })), log);
    try {
      const res = await fetch(`${server.url}/api/overview`);
      assert.equal(res.status, 500);
      assert.equal(await res.text(), 'internal error\n');
      assert.equal((await fetch(`${server.url}/api/reports/1`)).status, 500);
      assert.equal((await fetch(`${server.url}/healthz`)).status, 200);
      assert.ok(lines().some((l) => l.msg === 'web request failed' && /no such table/.test(String(l.err))));
    } finally {
      await server.close();
      broken.db.close();
    }
  });
});

describe('a listener beyond loopback without credentials', () => {
  it('warns at start and lists a warning on /healthz', async () => {
    const { log, lines } = capturedLogger();
    const { server, port } = await serve({ listen: '0.0.0.0:0' }, log);
    try {
      assert.equal(server.warnings.length, 1);
      const warn = lines().find((l) => l.level === 40 && /open to anyone/.test(String(l.msg)));
      assert.ok(warn, JSON.stringify(lines()));
      assert.match(String(warn.msg), /\[web\] token/);
      const body = (await (await fetch(`http://127.0.0.1:${port}/healthz`)).json()) as { status: string; warnings: string[] };
      assert.deepEqual(body.warnings, ['the web port is not limited to loopback and asks for no credentials']);
      assert.equal(body.status, 'starting');
    } finally {
      await server.close();
    }
  });

  it('no warning with a token, nor on loopback', async () => {
    for (const web of [{ listen: '0.0.0.0:0', token: 's3cret-token' }, { listen: '127.0.0.1:0' }, { listen: '[::1]:0' }]) {
      const { log, lines } = capturedLogger();
      const { server } = await serve(web, log);
      try {
        assert.deepEqual(server.warnings, [], JSON.stringify(web));
        assert.ok(!lines().some((l) => l.level === 40), JSON.stringify(lines()));
      } finally {
        await server.close();
      }
    }
  });
});

describe('the Host a request names (DNS rebinding)', () => {
  const get = (port: number, target: string, host: string, extra = '') =>
    raw(port, `GET ${target} HTTP/1.1\r\nHost: ${host}\r\n${extra}Connection: close\r\n\r\n`);

  it('without credentials: addresses and localhost are served, other names get 403 (logged once), /healthz answers all', async () => {
    const { log, lines } = capturedLogger();
    const { server, port } = await serve({}, log);
    try {
      for (const host of [
        `127.0.0.1:${port}`,
        '127.0.0.1',
        `[::1]:${port}`,
        `localhost:${port}`,
        'LOCALHOST',
        'app.localhost',
        '192.0.2.7:8080',
      ]) {
        assert.equal(statusOf(await get(port, '/api/overview', host)), 200, host);
      }
      for (const host of [
        'attacker.example',
        `attacker.example:${port}`,
        'ATTACKER.example.',
        'localhost.attacker.example',
        '[::1',
        '127.0.0.1:x',
        '',
      ]) {
        const answer = await get(port, '/api/overview', host);
        assert.equal(statusOf(answer), 403, host);
        assert.doesNotMatch(answer, /"sources"/, host);
      }
      assert.equal(statusOf(await get(port, '/', 'attacker.example')), 403);
      assert.equal(statusOf(await get(port, '/metrics', 'attacker.example')), 403);
      assert.equal(statusOf(await get(port, '/healthz', 'attacker.example')), 200);
      await get(port, '/api/overview', 'attacker.example');
      const refused = lines().filter((l) => /DNS rebinding/.test(String(l.msg)));
      assert.deepEqual(
        refused.map((l) => l.host),
        ['attacker.example', `attacker.example:${port}`, 'ATTACKER.example.', 'localhost.attacker.example', '[::1', '127.0.0.1:x', ''],
      );
    } finally {
      await server.close();
    }
  });

  it('a name listed in [web] allowed_hosts is served; with credentials the name does not matter', async () => {
    const listed = await serve({ allowed_hosts: ['dmarc.example.net'] });
    try {
      assert.equal(statusOf(await get(listed.port, '/api/overview', 'dmarc.example.net')), 200);
      assert.equal(statusOf(await get(listed.port, '/api/overview', 'Dmarc.Example.Net:443')), 200);
      assert.equal(statusOf(await get(listed.port, '/api/overview', 'other.example.net')), 403);
    } finally {
      await listed.server.close();
    }
    const guarded = await serve({ token: 's3cret-token' });
    try {
      assert.equal(statusOf(await get(guarded.port, '/api/overview', 'attacker.example')), 401);
      assert.equal(statusOf(await get(guarded.port, '/api/overview', 'dmarc.example.net', 'Authorization: Bearer s3cret-token\r\n')), 200);
    } finally {
      await guarded.server.close();
    }
  });

  it('allowed_hosts takes host names only', () => {
    assert.throws(() => configSchema.parse({ web: { allowed_hosts: ['https://dmarc.example.net/'] } }), /host name/);
    assert.throws(() => configSchema.parse({ web: { allowed_hosts: ['dmarc.example.net:443'] } }), /host name/);
  });
});

describe('/api/reports/N', () => {
  it('a TLS report with 150 policies of 150 failure details each: 100 of each listed, largest first, and the cut stated', async () => {
    const policies = Array.from({ length: 150 }, (_, p) => ({
      policy: { 'policy-type': 'sts', 'policy-domain': `d${p}.example.com`, 'mx-host': [`mx.d${p}.example.com`] },
      summary: { 'total-successful-session-count': 10, 'total-failure-session-count': 150 * 151 },
      'failure-details': Array.from({ length: 150 }, (_, f) => ({
        'result-type': 'certificate-expired',
        'sending-mta-ip': '192.0.2.1',
        'receiving-mx-hostname': `mx.d${p}.example.com`,
        'failed-session-count': f + 1,
      })),
    }));
    const begin = (today - 2) * DAY;
    const json = JSON.stringify({
      'organization-name': 'Long Reports Inc.',
      'date-range': {
        'start-datetime': new Date(begin * 1000).toISOString(),
        'end-datetime': new Date((begin + DAY - 1) * 1000).toISOString(),
      },
      'contact-info': 'tlsrpt@example.net',
      'report-id': 'long-tls-1',
      policies,
    });
    const leaf = (await store.ingestor.ingest(bufferInput('long.json', json))).leaves[0]!;
    assert.equal(leaf.status, 'stored');
    const id = store.db.prepare(`SELECT id FROM reports WHERE report_id = 'long-tls-1'`).pluck().get() as number;
    const { server, port } = await serve({});
    try {
      const res = await fetch(`http://127.0.0.1:${port}/api/reports/${id}`);
      assert.equal(res.status, 200);
      const body = (await res.json()) as {
        policies: { policy_domain: string; failures: { failed_sessions: number }[] }[];
        limits: { policies: number; failures: number };
        truncated: { policies: boolean; failures: boolean };
      };
      assert.equal(body.policies.length, 100);
      assert.equal(body.policies[0]!.policy_domain, 'd0.example.com');
      assert.ok(body.policies.every((p) => p.failures.length === 100));
      assert.deepEqual(
        body.policies[0]!.failures.slice(0, 3).map((f) => f.failed_sessions),
        [150, 149, 148],
      );
      assert.deepEqual(body.truncated, { policies: true, failures: true });
      assert.deepEqual(body.limits, { records: 1000, policies: 100, failures: 100 });
    } finally {
      await server.close();
    }
  });
});
