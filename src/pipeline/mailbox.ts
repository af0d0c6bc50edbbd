import type { Logger } from 'pino';
import {
  RuawatchError,
  databaseError,
  errorCode,
  errorMessage,
  hintOf,
  isDatabaseError,
  isInfrastructure,
  isRetryable,
  messageWithHint,
  ownCode,
  type ErrorCode,
} from '../errors.js';
import type { MailboxStore } from '../store/mailboxes.js';
import { fromBuffer } from '../unpack/bytes.js';
import { formatBytes, overLimit, type Limits } from '../unpack/limits.js';
import type { InputResult, Leaf } from './ingest.js';
import { inOrder, type IngestPool, type IngestRunner } from './pool.js';

/*
 * A mailbox, whatever its kind (IMAP today; others plug in through the same interface), as the
 * acknowledge-after-commit loop below sees it. The adapters in src/sources/ implement it; this
 * folder imports none of them.
 */

/** A message waiting in the folder, as listed (not yet downloaded). */
export interface WaitingMessage {
  /** Names the message for good within its folder and epoch (IMAP: the UID, as text). Inputs are named `mailbox:id`. */
  id: string;
  /**
   * Where the message stands: grows with arrival (IMAP: the UID). The position kept between passes
   * is an `order`: every message up to it has been acknowledged.
   */
  order: number;
  /**
   * Size in bytes as the server states it: a message larger than max_message_bytes is not downloaded.
   * An adapter whose stated sizes are estimates (Graph) stops a download at max_message_bytes, leaves
   * the message out of the answer and raises this to what it found: the message then counts as too large.
   */
  size: number;
}

export type Destination = 'processed' | 'invalid';

/**
 * An open connection to a mailbox's folder. Every method rejects with a MailboxError: `retryable`
 * when the connection was lost (opening again may succeed), not when the server refused for good.
 */
export interface MailboxSession {
  /**
   * Changes when the server renumbers the folder (IMAP: UIDVALIDITY, RFC 3501 section 2.3.1.1):
   * positions and handled messages are kept per epoch, and a new epoch reads the folder again.
   */
  readonly epoch: number;
  /**
   * Messages that may be new: at least every message whose order is above `after`, sorted by
   * order. The loop skips those it has already handled.
   */
  list(after: number): Promise<WaitingMessage[]>;
  /** Downloads whole messages (raw RFC 5322 bytes). A message missing from the answer is gone from the folder. */
  download(ids: string[]): Promise<Map<string, Buffer>>;
  /** Moves the messages to the processed or invalid folder (or flags them, as configured). */
  acknowledge(ids: string[], to: Destination): Promise<void>;
  /** Ends the session politely (logout). */
  close(): Promise<void>;
  /** Ends it at once: what is pending rejects. For a server that no longer answers. */
  destroy(): void;
}

export interface Watcher {
  stop(): Promise<void>;
}

export interface Mailbox {
  /** The configured name: positions, handled messages and the lease are kept under it. */
  readonly name: string;
  /** The folder read; a position saved for another folder is not used. */
  readonly folder: string;
  /**
   * Connects, logs in and opens the folder (creating the destination folders if needed). Once
   * `signal` aborts, a connection still being opened is closed and the call rejects.
   */
  open(signal?: AbortSignal): Promise<MailboxSession>;
  /**
   * Optional push notification of new mail (IMAP IDLE): calls `onNew` when mail arrives, so the
   * worker polls at once. Reading stays with the poll.
   */
  watch?(onNew: () => void): Watcher;
}

/**
 * An error of a mailbox adapter (connection, login, server). An adapter must say whether another
 * attempt may succeed (`retryable`: the connection was lost) and may give a `hint` for a
 * connection that never succeeded (a wrong port, TLS against a plain port...). The loop reads
 * both as properties (isRetryable, messageWithHint), whatever the class of the error.
 */
export class MailboxError extends RuawatchError {
  constructor(code: ErrorCode, message: string, opts: { cause?: unknown; retryable: boolean; hint?: string | null }) {
    super(code, message, opts);
  }
}

export interface MailboxPassOptions {
  /** Ingests on the calling thread (one message, or no pool). */
  ingestor: IngestRunner;
  /** Worker threads for mailboxes with more than one new message (see pipeline/pool.ts). */
  pool?: IngestPool | null;
  positions: MailboxStore;
  limits: Limits;
  log: Logger;
  /** Called once per message, after it was acknowledged (or left for a retry). */
  onResult(result: InputResult): void;
  /** Called with the number of messages to read, before reading them. */
  onPlan?(count: number): void;
  /** Messages per download; a batch also never exceeds half of maxMessageBytes in total. */
  batchMessages?: number;
  /** Reconnects after a dropped connection before giving up; delays double from baseDelayMs up to maxDelayMs. */
  reconnects?: number;
  baseDelayMs?: number;
  maxDelayMs?: number;
  /**
   * Stop (shutdown, the pass's deadline): once aborted, the message being ingested is finished,
   * what is committed is acknowledged, and the pass ends; the rest waits for the next pass.
   */
  signal?: AbortSignal;
  /** Stop now (a server that does not answer past the deadline): the session is destroyed, nothing more is acknowledged. */
  kill?: AbortSignal;
  /**
   * Asked before each acknowledgement: true while this process holds the mailbox's lease (and
   * renews it). False: another process has taken the mailbox over, and nothing more is acknowledged.
   */
  holdsLease?(): boolean;
}

/** Where a message goes once its reports are committed. */
type Verdict =
  { to: 'processed' } | { to: 'invalid'; reason: string } | { to: 'retry'; reason: string } | { to: 'stop'; code: string; reason: string };

/** Messages acknowledged, their outcome not yet reported (the acknowledgement may be cut off). */
type Unacked = Map<string, InputResult>;

/**
 * One pass over a mailbox: every message not yet acknowledged is downloaded, ingested through the
 * same pipeline as files, and only then moved to the processed folder (reports committed) or the
 * invalid folder (nothing in it could be stored, reason recorded). A message that failed for an
 * infrastructure reason (a worker thread) stays where it is and is tried on the next pass; a
 * database error (full, locked, read-only) stops the pass at once, acknowledging nothing more.
 *
 * A connection that never succeeded fails at once, with the adapter's hint (a wrong port, TLS
 * against a plain port...). A connection that was established and then dropped is opened again
 * with capped exponential backoff; de-duplication and the record of handled messages make the
 * retry count nothing twice.
 */
export async function readMailbox(mailbox: Mailbox, opts: MailboxPassOptions): Promise<void> {
  const log = opts.log.child({ stage: 'fetch', mailbox: mailbox.name });
  const reconnects = opts.reconnects ?? 5;
  // Results of messages whose reports were committed but whose acknowledgement was cut off:
  // after reconnecting they come back as duplicates, and are reported with their first result.
  const unacked: Unacked = new Map();
  let established = false;
  for (let attempt = 0; ; attempt++) {
    if (opts.kill?.aborted) throw stoppedError(mailbox);
    let session: MailboxSession | null = null;
    const onKill = () => session?.destroy();
    opts.kill?.addEventListener('abort', onKill);
    try {
      session = await mailbox.open(opts.kill);
      established = true;
      await pass(mailbox, session, opts, log, unacked);
      await session.close();
      return;
    } catch (err) {
      session?.destroy();
      if (opts.kill?.aborted) throw stoppedError(mailbox, err);
      if (!established) {
        // Never connected in this pass: a wrong port or security setting, not a dropped line.
        if (hintOf(err)) throw new RuawatchError(ownCode(err), messageWithHint(err), { cause: err });
        throw err;
      }
      if (!isRetryable(err)) throw err;
      if (attempt >= reconnects || opts.signal?.aborted) {
        throw new RuawatchError(ownCode(err), `${errorMessage(err)}; gave up after ${attempt} reconnects`, { cause: err });
      }
      const delay = Math.min(opts.maxDelayMs ?? 30_000, (opts.baseDelayMs ?? 1_000) * 2 ** attempt);
      log.warn({ err: errorMessage(err), attempt: attempt + 1, delayMs: delay }, 'mailbox connection lost; reconnecting');
      await sleep(delay, opts.kill);
    } finally {
      opts.kill?.removeEventListener('abort', onKill);
    }
  }
}

async function pass(mailbox: Mailbox, session: MailboxSession, opts: MailboxPassOptions, log: Logger, unacked: Unacked): Promise<void> {
  const { positions, limits } = opts;
  const name = mailbox.name;
  const epoch = session.epoch;
  const db = <T>(fn: () => T): T => {
    try {
      return fn();
    } catch (err) {
      throw databaseError(positions.file, err);
    }
  };
  const pos = db(() => positions.position(name, mailbox.folder, epoch));
  const listed = await session.list(pos.lastUid);
  const todo = db(() => listed.filter((m) => !positions.handled(name, epoch, m.id))).sort((a, b) => a.order - b.order);
  opts.onPlan?.(todo.length);
  log.info({ uidvalidity: epoch, lastUid: pos.lastUid, messages: todo.length }, 'reading mailbox');
  if (todo.length === 0) return;

  const runner: IngestRunner = opts.pool && todo.length > 1 ? opts.pool : opts.ingestor;
  // Two batches in flight: the next one downloads while this one is parsed. A batch holds at
  // most half of max_message_bytes (or one message, itself at most max_message_bytes).
  const all = [...batches(todo, limits.maxMessageBytes / 2, opts.batchMessages ?? 50)];
  const download = (batch: WaitingMessage[]) => {
    const ids = batch.filter((m) => m.size <= limits.maxMessageBytes).map((m) => m.id);
    return ids.length ? session.download(ids) : Promise.resolve(new Map<string, Buffer>());
  };
  // The order of the first message left in place: the position never moves past it.
  let blocked: number | null = null;
  // A prefetch that fails is reported when it is awaited, not as an unhandled rejection; one left
  // behind when the pass fails ends with the session, which the caller destroys.
  let next: Promise<Map<string, Buffer>> | null = download(all[0]!);
  next.catch(() => undefined);
  for (const [i, batch] of all.entries()) {
    const sources: Map<string, Buffer> = await next!;
    next = i + 1 < all.length ? download(all[i + 1]!) : null;
    next?.catch(() => undefined);
    const acks: { m: WaitingMessage; verdict: Extract<Verdict, { to: Destination }> }[] = [];
    let stop: Extract<Verdict, { to: 'stop' }> | null = null;
    const ingest = (m: WaitingMessage): Promise<InputResult | null> => {
      const input = `${name}:${m.id}`;
      const source = sources.get(m.id);
      sources.delete(m.id);
      if (source) return runner.ingest({ name: input, open: () => fromBuffer(source), portable: { name: input, bytes: source } });
      // Listed, not too large, yet not downloaded: moved or deleted meanwhile by someone else.
      return Promise.resolve(m.size > limits.maxMessageBytes ? tooLarge(input, m.size) : null);
    };
    await inOrder(
      batch,
      ingest,
      runner.inFlight,
      (m, result) => {
        if (stop) return; // finished after the pass was stopped: neither acknowledged nor counted
        if (result === null) {
          log.info({ uid: m.id }, 'message no longer in the folder; skipped');
          blocked ??= m.order;
          return;
        }
        const verdict = decide(result.leaves);
        if (verdict.to === 'stop' || verdict.to === 'retry') {
          if (verdict.to === 'stop') stop = verdict;
          // Info: the result says so (a failed input with an infrastructure code), and the caller
          // reports it (fetch in its summary, run in a warning).
          else log.info({ uid: m.id, reason: verdict.reason }, 'message left in place, to be tried again');
          blocked ??= m.order;
          opts.onResult(result);
          return;
        }
        unacked.set(m.id, unacked.get(m.id) ?? result);
        acks.push({ m, verdict });
      },
      () => opts.signal?.aborted === true || stop !== null,
    );
    if (stop) {
      const s = stop as Extract<Verdict, { to: 'stop' }>;
      // The database cannot take more: nothing of this batch is acknowledged; what was committed
      // comes back next time as a duplicate.
      throw new RuawatchError(
        'E_DB',
        `database ${positions.file}: ${s.reason} [${s.code}]; the pass stopped, the messages wait in the folder`,
      );
    }
    if (acks.length) await acknowledge(mailbox, session, opts, acks, epoch, blocked, unacked, db);
    if (opts.signal?.aborted) {
      log.info('stopping: the rest of the mailbox is read on the next pass');
      await next?.catch(() => undefined);
      break;
    }
  }
}

/**
 * Every report of these messages is committed (and, by makeDurable, synced to disk): now, and
 * only now, the messages are acknowledged, one command per destination. A crash before this
 * re-reads them next time as duplicates.
 */
async function acknowledge(
  mailbox: Mailbox,
  session: MailboxSession,
  opts: MailboxPassOptions,
  acks: { m: WaitingMessage; verdict: Extract<Verdict, { to: Destination }> }[],
  epoch: number,
  blocked: number | null,
  unacked: Unacked,
  db: <T>(fn: () => T) => T,
): Promise<void> {
  const { positions } = opts;
  if (opts.holdsLease && !db(() => opts.holdsLease!())) {
    throw new RuawatchError(
      'E_BUSY',
      `mailbox ${mailbox.name}: another ruawatch process took the mailbox over (this one held it too long without renewing); nothing more is acknowledged`,
    );
  }
  db(() => positions.makeDurable(mailbox.name, mailbox.folder, epoch));
  // What has been moved (or flagged) is acknowledged for good, whatever fails after it: a move to
  // the other destination cut off, or the record of the moves refused (the database locked or
  // full meanwhile). Those messages are recorded if the database lets us, and reported in any
  // case: they left the folder, and no later pass would count them.
  const moved = new Set<string>();
  try {
    for (const to of ['processed', 'invalid'] as const) {
      const ids = acks.filter((x) => x.verdict.to === to).map((x) => x.m.id);
      if (ids.length) {
        await session.acknowledge(ids, to);
        for (const id of ids) moved.add(id);
      }
    }
  } finally {
    try {
      if (moved.size) record(mailbox, positions, acks, moved, epoch, blocked, db);
    } finally {
      for (const { m } of acks) {
        if (!moved.has(m.id)) continue;
        opts.onResult(unacked.get(m.id)!);
        unacked.delete(m.id);
      }
    }
  }
}

/** Records moved messages as handled, and moves the position past a contiguous run of them. */
function record(
  mailbox: Mailbox,
  positions: MailboxStore,
  acks: { m: WaitingMessage; verdict: Extract<Verdict, { to: Destination }> }[],
  moved: Set<string>,
  epoch: number,
  blocked: number | null,
  db: <T>(fn: () => T) => T,
): void {
  // A message of this batch that was not moved blocks the position like one left in place.
  let limit = blocked;
  for (const { m } of acks) if (!moved.has(m.id) && (limit === null || m.order < limit)) limit = m.order;
  db(() =>
    positions.transaction(() => {
      for (const { m, verdict } of acks) {
        if (!moved.has(m.id)) continue;
        positions.markHandled(mailbox.name, epoch, m.id, verdict.to, verdict.to === 'invalid' ? verdict.reason : null);
      }
      const done = acks.map((x) => x.m.order).filter((order) => limit === null || order < limit);
      if (done.length) positions.savePosition(mailbox.name, mailbox.folder, { uidvalidity: epoch, lastUid: Math.max(...done) });
    }),
  );
}

/** Groups messages so one download holds at most `maxBytes` of message bodies and `maxCount` messages. */
export function* batches(messages: WaitingMessage[], maxBytes: number, maxCount: number): Generator<WaitingMessage[]> {
  let batch: WaitingMessage[] = [];
  let bytes = 0;
  for (const m of messages) {
    const size = Math.min(m.size, maxBytes);
    if (batch.length && (bytes + size > maxBytes || batch.length >= maxCount)) {
      yield batch;
      batch = [];
      bytes = 0;
    }
    batch.push(m);
    bytes += size;
  }
  if (batch.length) yield batch;
}

export function decide(leaves: Leaf[]): Verdict {
  const db = leaves.find((l) => l.status === 'failed' && isDatabaseError(l.code));
  if (db && db.status === 'failed') return { to: 'stop', code: db.code, reason: db.error };
  const infra = leaves.find((l) => l.status === 'failed' && isInfrastructure(l.code));
  if (infra && infra.status === 'failed') return { to: 'retry', reason: infra.error };
  // A mail refused whole (past a budget of its input: ingest.ts) is invalid, whatever was read before that.
  const refused = leaves.find((l) => l.status === 'failed' && l.scope === 'input');
  if (refused && refused.status === 'failed') return { to: 'invalid', reason: `${refused.error} [${refused.code}]` };
  // A report that lost to an earlier one with the same key was read all the same.
  if (leaves.some((l) => l.status === 'stored' || l.status === 'duplicate' || l.status === 'conflict')) return { to: 'processed' };
  const reasons = leaves.map((l) => (l.status === 'failed' ? `${l.error} [${l.code}]` : l.status === 'none' ? l.reason : ''));
  return { to: 'invalid', reason: reasons.filter(Boolean).join('; ') || 'no report' };
}

function tooLarge(name: string, size: number): InputResult {
  return {
    input: name,
    leaves: [
      {
        input: name,
        status: 'failed',
        code: 'E_LIMIT',
        error: overLimit('maxMessageBytes', `the mail is ${formatBytes(size)}; not downloaded`).message,
      },
    ],
  };
}

function stoppedError(mailbox: Mailbox, cause?: unknown): RuawatchError {
  const why = cause === undefined ? '' : ` (${errorMessage(cause)})`;
  return new RuawatchError('E_TIMEOUT', `mailbox ${mailbox.name}: stopped, the server did not answer in time${why}`, { cause });
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener('abort', done);
  });
}

/** For the summary: a mailbox-level error, named after its mailbox. */
export function mailboxFailure(name: string, err: unknown): { error: string; code: string } {
  const message = errorMessage(err);
  return { error: message.startsWith(`mailbox ${name}`) ? message : `mailbox ${name}: ${message}`, code: errorCode(err) };
}
