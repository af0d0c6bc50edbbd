import fs from 'node:fs';
import http from 'node:http';
import { createRequire } from 'node:module';
import type { AddressInfo, Socket } from 'node:net';
import path from 'node:path';
import type { Duplex } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { DAY } from '../analyse/index.js';
import type { Config } from '../config/schema.js';
import { errorMessage, isRetryable } from '../errors.js';
import type { Logger } from '../log.js';
import type { Db } from '../store/db.js';
import type { Worker } from '../worker/worker.js';
import { Credentials, DEFAULT_THROTTLE, LoginThrottle, type ThrottleOptions } from './auth.js';
import { healthOf } from './health.js';
import { dashboardHtml } from './page.js';
import { QueryRunner } from './query-runner.js';
import { clientKey, hostAllowed, PAGE_CSP, parseTarget, PLAIN_CSP, rawResponse, SECURITY_HEADERS, type Target } from './request.js';

export interface WebServer {
  url: string;
  /** What /healthz lists under `warnings` (an open dashboard on a public address). */
  warnings: readonly string[];
  close(): Promise<void>;
}

export interface WebOptions {
  throttle?: ThrottleOptions;
  /** How long one /api/overview answer is shared with later callers. */
  overviewCacheMs?: number;
  queryTimeoutMs?: number;
  /** Run the database reads in the main thread rather than the query thread. */
  inlineQueries?: boolean;
}

const OVERVIEW_CACHE_MS = 5_000;
const QUERY_TIMEOUT_MS = 30_000;
/** Distinct queries waiting for the query thread at most; more get 503 at once. */
const MAX_PENDING_QUERIES = 16;

type Send = (status: number, type: string, body: string, headers?: Record<string, string | string[]>) => void;

const nowSeconds = () => Math.floor(Date.now() / 1000);

/**
 * The dashboard, /metrics, the JSON API and /healthz. Every request handler is total: a request
 * the server cannot read gets a 4xx and the process goes on, whatever the bytes. Database reads
 * run in a query thread (query-runner.ts), so /healthz never waits behind them.
 */
export async function startWeb(config: Config, db: Db, worker: Worker, log: Logger, opts: WebOptions = {}): Promise<WebServer> {
  const [, host, port] = /^\[?(.*?)\]?:(\d+)$/.exec(config.web.listen)!;
  const credentials = new Credentials(config.web);
  const throttleOptions = opts.throttle ?? DEFAULT_THROTTLE;
  const throttle = new LoginThrottle(throttleOptions);
  const queries = new QueryRunner(db, log, {
    timeoutMs: opts.queryTimeoutMs ?? QUERY_TIMEOUT_MS,
    maxPending: MAX_PENDING_QUERIES,
    inline: opts.inlineQueries ?? false,
  });
  const warnings: string[] = [];
  const health = () => healthOf(worker.state, { now: nowSeconds(), warnings });

  async function handle(req: http.IncomingMessage, send: Send): Promise<void> {
    // RFC 9112 section 3.2: an HTTP/1.1 request without Host is answered 400 (here rather than by
    // Node, so the answer has the headers every answer has).
    if (req.httpVersion === '1.1' && req.headers.host === undefined) return send(400, 'text/plain', 'bad request: no Host header\n');
    if (req.method !== 'GET' && req.method !== 'HEAD') return send(405, 'text/plain', 'method not allowed\n', { allow: 'GET, HEAD' });
    const target = parseTarget(req.url);
    if (!target) return send(400, 'text/plain', 'bad request\n');
    if (target.path === '/healthz') {
      const h = health();
      return send(h.code, 'application/json', `${JSON.stringify(h.body)}\n`);
    }
    if (!credentials.required && !hostAllowed(req.headers.host, config.web.allowed_hosts)) {
      noteForeignHost(req.headers.host ?? '');
      return send(403, 'text/plain', 'forbidden: this Host is not served without credentials ([web] allowed_hosts)\n');
    }
    if (!admit(req, target, send)) return;
    switch (target.path) {
      case '/':
        return send(200, 'text/html; charset=utf-8', dashboardHtml, { 'content-security-policy': PAGE_CSP });
      case '/metrics': {
        const q = { kind: 'metrics', state: worker.state, config, now: nowSeconds() } as const;
        return send(200, 'text/plain; version=0.0.4; charset=utf-8', (await queries.run('metrics', q))!);
      }
      case '/api/status':
        return send(
          200,
          'application/json; charset=utf-8',
          status({ health: health().body, worker: worker.state, web: { warnings, queries: queries.stats } }),
        );
      case '/api/overview':
        return send(200, 'application/json; charset=utf-8', (await overview(target))!);
    }
    const asset = ASSETS.get(target.path);
    if (asset) return send(200, asset.type, assetText(asset.file), { 'cache-control': 'max-age=3600' });
    const report = /^\/api\/reports\/(\d{1,15})$/.exec(target.path);
    if (report) {
      const id = Number(report[1]);
      const body = await queries.run(`report:${id}`, { kind: 'report', id, enrich: config.enrich });
      return body === null
        ? send(404, 'application/json', '{"error":"no such report"}\n')
        : send(200, 'application/json; charset=utf-8', body);
    }
    return send(404, 'text/plain', 'not found\n');
  }

  /** Each refused Host name logged once (at most 100 of them), so a scan cannot flood the log. */
  const foreignHosts = new Set<string>();
  function noteForeignHost(host: string): void {
    const name = host.slice(0, 100);
    if (foreignHosts.has(name) || foreignHosts.size >= 100) return;
    foreignHosts.add(name);
    log.warn(
      { host: name },
      'refused a request for a Host name this dashboard does not serve without credentials (DNS rebinding?); a name of your own goes in [web] allowed_hosts',
    );
  }

  /** Concurrent callers with the same question share one answer, kept for a few seconds. */
  function overview(target: Target): Promise<string | null> {
    const days = Math.min(400, Math.max(1, Math.floor(Number(target.query.get('days'))) || 30));
    // ?at=YYYY-MM-DD shows the dashboard as it was at the end of that day (as `alerts --at`);
    // ?domain=D one policy domain.
    const at = target.query.get('at');
    const day = at && /^\d{4}-\d{2}-\d{2}$/.test(at) ? Date.parse(`${at}T00:00:00Z`) / 1000 : NaN;
    const fixed = !Number.isNaN(day);
    const domain = target.query.get('domain')?.toLowerCase().slice(0, 253) || null;
    const key = `overview:${days}:${fixed ? at : 'now'}:${domain ?? ''}`;
    const now = fixed ? day + DAY : nowSeconds();
    const q = { kind: 'overview', days, now, recentDays: config.analysis.recent_days, domain, enrich: config.enrich } as const;
    return queries.run(key, q, opts.overviewCacheMs ?? OVERVIEW_CACHE_MS);
  }

  /**
   * Authentication, throttled per client: after maxFailures wrong credentials in a window, a
   * client gets 429 until the window ends, right credentials or not. Asking without credentials
   * (a browser's first request) is not a failure.
   */
  function admit(req: http.IncomingMessage, target: Target, send: Send): boolean {
    if (!credentials.required) return true;
    const client = clientKey(req.socket.remoteAddress);
    const now = nowSeconds();
    const wait = throttle.blockedFor(client, now);
    if (wait > 0) {
      send(429, 'text/plain', 'too many failed logins; try again later\n', { 'retry-after': String(wait) });
      return false;
    }
    const verdict = credentials.check(req.headers.authorization);
    if (verdict === 'ok' || verdict === 'open') {
      throttle.succeed(client);
      return true;
    }
    if (verdict === 'wrong') {
      const failures = throttle.fail(client, now);
      log.warn({ client: req.socket.remoteAddress, path: target.path, failures }, 'web login failed');
      if (failures === throttleOptions.maxFailures) {
        log.warn(
          { client: req.socket.remoteAddress, failures, seconds: throttle.blockedFor(client, now) },
          'too many failed web logins; the client is refused until its window ends',
        );
      }
    }
    send(401, 'text/plain', 'authentication required\n', { 'www-authenticate': credentials.challenges });
    return false;
  }

  const server = http.createServer(
    // No request here has a body: a client gets 20 s to send its headers and 30 s in all.
    { headersTimeout: 20_000, requestTimeout: 30_000, requireHostHeader: false },
    (req, res) => {
      const send: Send = (status, type, body, headers = {}) => {
        if (res.headersSent || res.destroyed) return;
        res.writeHead(status, {
          'content-type': type,
          'content-length': String(Buffer.byteLength(body)),
          'cache-control': 'no-store',
          'content-security-policy': PLAIN_CSP,
          ...SECURITY_HEADERS,
          ...headers,
        });
        res.end(req.method === 'HEAD' ? undefined : body);
      };
      res.on('error', (err) => log.debug({ err: err.message }, 'web response failed'));
      handle(req, send).catch((err: unknown) => {
        if (isRetryable(err)) {
          log.warn({ err: errorMessage(err) }, 'web request refused: the query thread is busy');
          return send(503, 'text/plain', 'busy; try again shortly\n', { 'retry-after': '5' });
        }
        log.error({ path: parseTarget(req.url)?.path ?? null, err: errorMessage(err) }, 'web request failed');
        if (res.headersSent) res.destroy();
        else send(500, 'text/plain', 'internal error\n');
      });
    },
  );
  // A request too malformed to parse (bad request line, NUL bytes, headers over 16 KiB) never
  // reaches the handler: answer it here, unless a response is already under way on the socket.
  server.on('clientError', (err: NodeJS.ErrnoException, duplex: Duplex) => {
    const socket = duplex as Socket;
    log.debug({ client: socket.remoteAddress, code: err.code }, 'malformed web request refused');
    if (err.code === 'ECONNRESET' || !socket.writable || socket.bytesWritten > 0) {
      socket.destroy();
      return;
    }
    const [status, reason] =
      err.code === 'HPE_HEADER_OVERFLOW'
        ? [431, 'Request Header Fields Too Large']
        : err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
          ? [408, 'Request Timeout']
          : [400, 'Bad Request'];
    socket.end(rawResponse(status, reason));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(Number(port), host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  // After listen, an error (out of file descriptors on accept) must not end the process.
  server.on('error', (err) => log.error({ err: err.message }, 'web server error'));
  const addr = server.address() as AddressInfo;
  const url = `http://${addr.family === 'IPv6' ? `[${addr.address}]` : addr.address}:${addr.port}`;
  log.info({ url }, 'web server listening');
  if (!credentials.required && !isLoopback(addr.address)) {
    log.warn(
      { url },
      `the dashboard, /metrics and /api on ${url} are open to anyone who can reach this address: no [web] token or user and ` +
        `password is set. Set [web] token (or RUAWATCH_WEB_TOKEN_FILE), or [web] user and password, or listen on 127.0.0.1`,
    );
    warnings.push('the web port is not limited to loopback and asks for no credentials');
  }
  return {
    url,
    warnings,
    close: async () => {
      await queries.close();
      await new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      });
    },
  };
}

/** 127.0.0.0/8 and ::1 (a bound address comes in canonical form), also as IPv4-mapped IPv6. */
function isLoopback(address: string): boolean {
  const v4 = /^(?:::ffff:)?(\d+)\.\d+\.\d+\.\d+$/i.exec(address);
  return v4 ? v4[1] === '127' : address === '::1';
}

/**
 * The authenticated detail behind /healthz: everything the worker tracks, with its error texts,
 * whatever fields it has.
 */
function status(value: unknown): string {
  return `${JSON.stringify(value, (_k, v: unknown) =>
    v instanceof Map ? Object.fromEntries(v) : v instanceof Set ? [...v] : typeof v === 'bigint' ? String(v) : v,
  )}\n`;
}

const require = createRequire(import.meta.url);
const uplotDir = path.dirname(require.resolve('uplot/package.json'));
const ASSETS = new Map<string, { file: string; type: string }>([
  ['/assets/uPlot.iife.min.js', { file: path.join(uplotDir, 'dist/uPlot.iife.min.js'), type: 'text/javascript; charset=utf-8' }],
  ['/assets/uPlot.min.css', { file: path.join(uplotDir, 'dist/uPlot.min.css'), type: 'text/css; charset=utf-8' }],
  [
    '/assets/dashboard.js',
    { file: fileURLToPath(new URL('./client/dashboard.js', import.meta.url)), type: 'text/javascript; charset=utf-8' },
  ],
]);
const assetCache = new Map<string, string>();

/** Assets are read from disk once, on first request. */
function assetText(file: string): string {
  let text = assetCache.get(file);
  if (text === undefined) {
    text = fs.readFileSync(file, 'utf8');
    assetCache.set(file, text);
  }
  return text;
}
