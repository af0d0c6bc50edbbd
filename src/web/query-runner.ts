import { Worker } from 'node:worker_threads';
import { RuawatchError, type ErrorCode } from '../errors.js';
import type { Logger } from '../log.js';
import type { Db } from '../store/db.js';
import { runQuery, type Query } from './queries.js';

/**
 * Too many queries waiting, one that took too long, or a query thread that stopped: retryable, so
 * the client is told to come back (503).
 */
function busy(message: string): RuawatchError {
  return new RuawatchError('E_UNAVAILABLE', message, { retryable: true });
}

function closing(): RuawatchError {
  return new RuawatchError('E_UNAVAILABLE', 'the web server is closing');
}

export interface QueryRunnerOptions {
  /** A query not answered by then fails as busy (E_UNAVAILABLE, retryable), and the thread is replaced. */
  timeoutMs: number;
  /** Queries waiting at most; more fail at once as busy. */
  maxPending: number;
  /** Run in the calling thread (an in-memory database, which a thread cannot open). */
  inline: boolean;
}

interface Pending {
  resolve: (body: string | null) => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout;
  thread: Worker;
}

type Reply = { ready: true } | { id: number; body: string | null } | { id: number; error: { code: ErrorCode; message: string } };

/** Threads that die before they are ready before the runner gives up on threads and runs inline. */
const MAX_FAILED_STARTS = 3;
/** Shared results remembered at most (distinct ?days and ?at values). */
const MAX_SHARED = 64;

/**
 * Runs the web server's database reads in one worker thread with its own read-only connection,
 * started on first use. Callers asking for the same thing at the same time share one run, and a
 * result can be kept for a short while: twenty dashboards opened at once cost one query.
 */
export class QueryRunner {
  private thread: Worker | null = null;
  private failedStarts = 0;
  private inline: boolean;
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private readonly shared = new Map<string, { value: Promise<string | null>; expires: number }>();
  private closed = false;
  /** Queries run, answers shared with a caller that did not run its own, and queries refused busy. */
  readonly stats = { run: 0, shared: 0, busy: 0 };

  constructor(
    private readonly db: Db,
    private readonly log: Logger,
    private readonly opts: QueryRunnerOptions,
  ) {
    this.inline = opts.inline || db.memory;
  }

  /**
   * The answer to `q`. Callers passing the same `key` while it runs get the same answer; with
   * `cacheMs`, so do callers in the `cacheMs` after it. Failures are not kept.
   */
  run(key: string, q: Query, cacheMs = 0): Promise<string | null> {
    const now = Date.now();
    const hit = this.shared.get(key);
    if (hit && hit.expires > now) {
      this.stats.shared++;
      return hit.value;
    }
    if (this.shared.size >= MAX_SHARED) this.prune(now);
    this.stats.run++;
    const entry = { value: this.execute(q), expires: Infinity };
    this.shared.set(key, entry);
    entry.value.then(
      () => {
        if (cacheMs > 0) entry.expires = Date.now() + cacheMs;
        else if (this.shared.get(key) === entry) this.shared.delete(key);
      },
      () => {
        if (this.shared.get(key) === entry) this.shared.delete(key);
      },
    );
    return entry.value;
  }

  async close(): Promise<void> {
    this.closed = true;
    this.shared.clear();
    const t = this.thread;
    this.thread = null;
    if (t) await t.terminate();
    this.failAll(null, closing());
  }

  private prune(now: number): void {
    for (const [k, e] of this.shared) if (e.expires <= now) this.shared.delete(k);
    // Still full: forget the oldest finished ones; queries under way stay shared.
    for (const [k, e] of this.shared) {
      if (this.shared.size < MAX_SHARED) break;
      if (e.expires !== Infinity) this.shared.delete(k);
    }
  }

  private execute(q: Query): Promise<string | null> {
    if (this.closed) return Promise.reject(closing());
    if (this.inline) {
      return runQuery(this.db, q).catch((err: unknown) =>
        Promise.reject(err instanceof Error ? err : new RuawatchError('E_INTERNAL', String(err))),
      );
    }
    if (this.pending.size >= this.opts.maxPending) {
      this.stats.busy++;
      return Promise.reject(busy('too many queries waiting'));
    }
    const thread = this.thread ?? this.spawn();
    const id = this.nextId++;
    return new Promise<string | null>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(busy(`a query took longer than ${this.opts.timeoutMs} ms`));
        // Queries run one after another: one that hangs would hold up every later one.
        this.log.error({ kind: q.kind, timeoutMs: this.opts.timeoutMs }, 'web query timed out; replacing the query thread');
        if (this.thread === thread) {
          this.thread = null;
          void thread.terminate();
        }
      }, this.opts.timeoutMs);
      timer.unref();
      this.pending.set(id, { resolve, reject, timer, thread });
      thread.postMessage({ id, query: q });
    });
  }

  private spawn(): Worker {
    const thread = new Worker(new URL('./query-thread.js', import.meta.url), { workerData: { dbFile: this.db.name } });
    thread.unref();
    this.thread = thread;
    let ready = false;
    let failure: string | null = null;
    thread.on('message', (msg: Reply) => {
      if ('ready' in msg) {
        ready = true;
        this.failedStarts = 0;
        return;
      }
      const p = this.pending.get(msg.id);
      if (!p) return;
      this.pending.delete(msg.id);
      clearTimeout(p.timer);
      if ('error' in msg) p.reject(new RuawatchError(msg.error.code, msg.error.message));
      else p.resolve(msg.body);
    });
    thread.on('error', (err) => {
      failure = err.message;
      this.log.error({ err: err.message }, 'web query thread failed');
    });
    thread.on('exit', (code) => {
      if (this.thread === thread) this.thread = null;
      if (this.closed) return;
      this.failAll(thread, busy(`the query thread stopped (${failure ?? `exit code ${code}`})`));
      if (!ready && ++this.failedStarts >= MAX_FAILED_STARTS) {
        this.inline = true;
        this.log.error({ err: failure }, 'the web query thread cannot start; dashboard queries now run in the main thread');
      }
    });
    return thread;
  }

  /** Fails the queries sent to `thread` (all of them with null). */
  private failAll(thread: Worker | null, err: Error): void {
    for (const [id, p] of this.pending) {
      if (thread && p.thread !== thread) continue;
      this.pending.delete(id);
      clearTimeout(p.timer);
      p.reject(err);
    }
  }
}
