/*
 * HTTP requests to the services a mailbox depends on (a token endpoint, Microsoft Graph), with
 * what every answer from outside needs: a time limit on the answer and on each pause within the
 * body, a cap on the body's size, and one kind of error for a service that could not be reached.
 */

import { RuawatchError } from '../errors.js';

/**
 * The request got no (complete) answer: refused, reset, timed out, aborted. `errno` as Node names
 * it (ECONNREFUSED...). Callers wrap it in their own code (E_AUTH, E_GRAPH) with what they were asking.
 */
export class NetworkError extends RuawatchError {
  readonly errno: string;
  constructor(message: string, errno: string, cause?: unknown) {
    super('E_NETWORK', message, { cause, retryable: true });
    this.name = 'NetworkError';
    this.errno = errno;
  }
}

export interface HttpOptions {
  /** The answer's status line and headers within this long, and then no pause in the body longer than this. */
  timeoutMs: number;
  /** Aborts the request at once (the session is destroyed). */
  signal?: AbortSignal | undefined;
}

export interface HttpAnswer {
  status: number;
  headers: Headers;
  /** The body, at most maxBytes of it. */
  body: Buffer;
  /** The body was longer than maxBytes: reading stopped there. */
  over: boolean;
  /** Bytes the body has, as far as known (Content-Length, else what was read). */
  size: number;
}

/**
 * One request: the whole body is read, up to `maxBytes` (past that, reading stops and `over` is
 * set; a Content-Length already past it is not read at all).
 */
export async function httpRequest(url: string, init: RequestInit, maxBytes: number, opts: HttpOptions): Promise<HttpAnswer> {
  const ctl = new AbortController();
  let timedOut = false;
  let timer: NodeJS.Timeout | null = null;
  const arm = () => {
    if (timer) clearTimeout(timer);
    timer = setTimeout(() => {
      timedOut = true;
      ctl.abort();
    }, opts.timeoutMs);
  };
  const onAbort = () => ctl.abort();
  if (opts.signal?.aborted) ctl.abort();
  opts.signal?.addEventListener('abort', onAbort);
  const fail = (err: unknown): NetworkError => {
    if (timedOut) return new NetworkError(`no answer within ${opts.timeoutMs / 1000} s`, 'ETIMEDOUT', err);
    if (opts.signal?.aborted) return new NetworkError('aborted', 'EABORTED', err);
    const cause = (err as { cause?: { code?: string; message?: string } }).cause;
    const code = cause?.code ?? (err as { code?: string }).code ?? 'EFETCH';
    return new NetworkError(cause?.message ?? (err instanceof Error ? err.message : String(err)), code, err);
  };
  arm();
  try {
    let res: Response;
    try {
      res = await fetch(url, { ...init, signal: ctl.signal, redirect: 'manual' });
    } catch (err) {
      throw fail(err);
    }
    const declared = Number(res.headers.get('content-length'));
    if (Number.isFinite(declared) && declared > maxBytes) {
      await res.body?.cancel().catch(() => undefined);
      return { status: res.status, headers: res.headers, body: Buffer.alloc(0), over: true, size: declared };
    }
    const chunks: Buffer[] = [];
    let received = 0;
    let over = false;
    if (res.body) {
      const reader = res.body.getReader();
      try {
        for (;;) {
          arm();
          const { done, value } = await reader.read();
          if (done) break;
          received += value.byteLength;
          if (received > maxBytes) {
            over = true;
            await reader.cancel().catch(() => undefined);
            break;
          }
          chunks.push(Buffer.from(value.buffer, value.byteOffset, value.byteLength));
        }
      } catch (err) {
        throw fail(err);
      }
    }
    return {
      status: res.status,
      headers: res.headers,
      body: over ? Buffer.alloc(0) : Buffer.concat(chunks, received),
      over,
      size: Number.isFinite(declared) && declared > 0 ? declared : received,
    };
  } finally {
    if (timer) clearTimeout(timer);
    opts.signal?.removeEventListener('abort', onAbort);
  }
}

/** A JSON body as an object, or null when it is not one (a proxy's HTML page, nothing at all). */
export function jsonObject(body: Buffer): Record<string, unknown> | null {
  try {
    const v: unknown = JSON.parse(body.toString('utf8'));
    return v && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : null;
  } catch {
    return null;
  }
}

/** Waits `ms`, or less once `signal` aborts. */
export function delay(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener('abort', done);
  });
}
