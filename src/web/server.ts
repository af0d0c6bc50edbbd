import { timingSafeEqual } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import { createRequire } from 'node:module';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { DAY } from '../analyse/index.js';
import type { Config } from '../config/schema.js';
import { errorMessage } from '../errors.js';
import type { Logger } from '../log.js';
import { AlertStore } from '../store/alerts.js';
import { passRateSeries, recentReports, reportDetail, sourceRows, tlsSeries } from '../store/dashboard.js';
import type { Db } from '../store/db.js';
import type { Worker } from '../worker/worker.js';
import { metricsText } from './metrics.js';
import { dashboardHtml } from './page.js';

export interface WebServer {
  url: string;
  close(): Promise<void>;
}

function same(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

/** Basic auth or a bearer token when configured; /healthz stays open for container health checks. */
function authorised(req: http.IncomingMessage, web: Config['web']): boolean {
  if (!web.token && !web.user) return true;
  const header = req.headers.authorization ?? '';
  if (web.token && header.startsWith('Bearer ') && same(header.slice(7), web.token)) return true;
  if (web.user && header.startsWith('Basic ')) {
    const [user, ...rest] = Buffer.from(header.slice(6), 'base64').toString('utf8').split(':');
    return same(user ?? '', web.user) && same(rest.join(':'), web.password ?? '');
  }
  return false;
}

export async function startWeb(config: Config, db: Db, worker: Worker, log: Logger): Promise<WebServer> {
  const [, host, port] = /^\[?(.*?)\]?:(\d+)$/.exec(config.web.listen)!;
  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://localhost');
    const send = (status: number, type: string, body: string, headers: Record<string, string> = {}) => {
      res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store', ...headers });
      res.end(req.method === 'HEAD' ? undefined : body);
    };
    try {
      if (req.method !== 'GET' && req.method !== 'HEAD') return send(405, 'text/plain', 'method not allowed\n', { allow: 'GET, HEAD' });
      if (url.pathname === '/healthz') {
        const st = worker.state;
        // A poll running past its deadline is hung (a server that stopped answering).
        const stuck = st.polling && st.pollDeadlineAt !== null && Math.floor(Date.now() / 1000) > st.pollDeadlineAt;
        const failing = st.consecutiveFailures > 0 || stuck;
        const body = {
          status: stuck ? 'stuck' : failing ? 'failing' : st.lastSuccessAt === null ? 'starting' : 'ok',
          last_poll: iso(st.lastPollAt),
          last_success: iso(st.lastSuccessAt),
          last_error: st.lastError ? { at: iso(st.lastError.at), message: st.lastError.message } : null,
          consecutive_failures: st.consecutiveFailures,
          polling: st.polling,
          poll_started: iso(st.pollStartedAt),
          poll_deadline: iso(st.pollDeadlineAt),
        };
        return send(failing ? 503 : 200, 'application/json', `${JSON.stringify(body)}\n`);
      }
      if (!authorised(req, config.web)) {
        return send(
          401,
          'text/plain',
          'authentication required\n',
          config.web.user ? { 'www-authenticate': 'Basic realm="ruawatch", charset="UTF-8"' } : { 'www-authenticate': 'Bearer' },
        );
      }
      if (url.pathname === '/metrics') {
        return send(200, 'text/plain; version=0.0.4; charset=utf-8', metricsText(db, worker.state, config, Math.floor(Date.now() / 1000)));
      }
      if (url.pathname === '/') return send(200, 'text/html; charset=utf-8', dashboardHtml, { 'content-security-policy': CSP });
      const asset = ASSETS[url.pathname];
      if (asset) return send(200, asset.type, assetText(asset.file), { 'cache-control': 'max-age=3600' });
      if (url.pathname === '/api/overview') {
        const days = Math.min(400, Math.max(1, Number(url.searchParams.get('days')) || 30));
        // ?at=YYYY-MM-DD shows the dashboard as it was at the end of that day.
        const at = url.searchParams.get('at');
        const day = at && /^\d{4}-\d{2}-\d{2}$/.test(at) ? Date.parse(`${at}T00:00:00Z`) / 1000 : NaN;
        const now = Number.isNaN(day) ? Math.floor(Date.now() / 1000) : day + DAY - 1;
        return sendJson(send, overview(db, days, now));
      }
      const report = /^\/api\/reports\/(\d+)$/.exec(url.pathname);
      if (report) {
        const detail = reportDetail(db, Number(report[1]));
        return detail ? sendJson(send, detail) : send(404, 'application/json', '{"error":"no such report"}\n');
      }
      return send(404, 'text/plain', 'not found\n');
    } catch (err) {
      log.error({ path: url.pathname, err: errorMessage(err) }, 'web request failed');
      if (!res.headersSent) send(500, 'text/plain', 'internal error\n');
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(Number(port), host, () => resolve());
  });
  const addr = server.address() as AddressInfo;
  const url = `http://${addr.family === 'IPv6' ? `[${addr.address}]` : addr.address}:${addr.port}`;
  log.info({ url }, 'web server listening');
  return {
    url,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

const require = createRequire(import.meta.url);
const uplotDir = path.dirname(require.resolve('uplot/package.json'));
const ASSETS: Record<string, { file: string; type: string }> = {
  '/assets/uPlot.iife.min.js': { file: path.join(uplotDir, 'dist/uPlot.iife.min.js'), type: 'text/javascript; charset=utf-8' },
  '/assets/uPlot.min.css': { file: path.join(uplotDir, 'dist/uPlot.min.css'), type: 'text/css; charset=utf-8' },
  '/assets/dashboard.js': {
    file: fileURLToPath(new URL('./client/dashboard.js', import.meta.url)),
    type: 'text/javascript; charset=utf-8',
  },
};
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

// Everything is served from here: no CDN, no inline script, nothing from report data runs.
const CSP = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; connect-src 'self'; img-src 'self' data:";

function sendJson(send: (status: number, type: string, body: string) => void, value: unknown): void {
  send(200, 'application/json; charset=utf-8', `${JSON.stringify(value)}\n`);
}

function overview(db: Db, days: number, now: number) {
  const today = Math.floor(now / DAY) * DAY;
  const from = today - days * DAY;
  const store = new AlertStore(db);
  return {
    generated_at: new Date(now * 1000).toISOString(),
    days,
    domains: passRateSeries(db, from, today + DAY),
    tls: tlsSeries(db, from, today + DAY),
    sources: sourceRows(db, today - 6 * DAY, today + DAY),
    alerts: { open: store.openAlerts(), recent: store.recentAlerts(50) },
    // Per channel: waiting, parked, failing or held; the latest parked messages with their reasons.
    notifications: { channels: store.channelStatus(), parked: store.parked(50) },
    reports: recentReports(db, 100, now),
  };
}

function iso(t: number | null): string | null {
  return t === null ? null : new Date(t * 1000).toISOString();
}
