import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { timingSafeEqual } from 'node:crypto';
import type { Config } from '../config/schema.js';
import { errorMessage } from '../errors.js';
import type { Logger } from '../log.js';
import type { Db } from '../store/db.js';
import type { Worker } from '../worker/worker.js';
import { metricsText } from './metrics.js';

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
        const failing = st.consecutiveFailures > 0;
        const body = {
          status: failing ? 'failing' : st.lastSuccessAt === null ? 'starting' : 'ok',
          last_poll: iso(st.lastPollAt),
          last_success: iso(st.lastSuccessAt),
          last_error: st.lastError ? { at: iso(st.lastError.at), message: st.lastError.message } : null,
          consecutive_failures: st.consecutiveFailures,
          polling: st.polling,
        };
        return send(failing ? 503 : 200, 'application/json', `${JSON.stringify(body)}\n`);
      }
      if (!authorised(req, config.web)) {
        return send(401, 'text/plain', 'authentication required\n', config.web.user ? { 'www-authenticate': 'Basic realm="ruawatch", charset="UTF-8"' } : { 'www-authenticate': 'Bearer' });
      }
      if (url.pathname === '/metrics') {
        return send(200, 'text/plain; version=0.0.4; charset=utf-8', metricsText(db, worker.state, config, Math.floor(Date.now() / 1000)));
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

function iso(t: number | null): string | null {
  return t === null ? null : new Date(t * 1000).toISOString();
}
