import fs from 'node:fs';
import { ImapFlow } from 'imapflow';
import { pino, type Logger } from 'pino';
import type { Config } from '../config/schema.js';
import { RuawatchError, errorMessage, isInfrastructure } from '../errors.js';
import type { Ingestor, InputResult, Leaf } from '../pipeline/ingest.js';
import { inOrder, type IngestPool, type IngestRunner } from '../pipeline/pool.js';
import type { MailboxStore } from '../store/mailboxes.js';
import { fromBuffer } from '../unpack/bytes.js';
import { formatBytes, overLimit, type Limits } from '../unpack/limits.js';

export type MailboxConfig = Config['mailbox'][number];

export interface FetchOptions {
  ingestor: Ingestor;
  /** Worker threads for mailboxes with more than one new message (see pipeline/pool.ts). */
  pool?: IngestPool | null;
  positions: MailboxStore;
  limits: Limits;
  log: Logger;
  /** Called once per message, after it was acknowledged (or left for a retry). */
  onResult(result: InputResult): void;
  /** Called with the number of messages to read, before reading them. */
  onPlan?(count: number): void;
  /** Messages per FETCH; a batch also never exceeds maxMessageBytes in total. */
  batchMessages?: number;
  /** Reconnects after a dropped connection before giving up; delays double from baseDelayMs up to maxDelayMs. */
  reconnects?: number;
  baseDelayMs?: number;
  maxDelayMs?: number;
  /**
   * Shutdown: once aborted, the message being ingested is finished, what is committed is
   * acknowledged, and the pass ends (logging out); the rest waits for the next pass.
   */
  signal?: AbortSignal;
}

/** Where a message goes once its reports are committed. */
type Verdict = { to: 'processed' } | { to: 'invalid'; reason: string } | { to: 'retry'; reason: string };

/**
 * One pass over a mailbox: every message not yet acknowledged is fetched, ingested through the
 * same pipeline as files, and only then moved to the processed folder (reports committed) or the
 * invalid folder (nothing in it could be stored, reason recorded). A message that failed for an
 * infrastructure reason (the database) stays where it is and is tried on the next pass. A dropped
 * connection is retried with capped exponential backoff; de-duplication and the record of handled
 * UIDs make the retry count nothing twice.
 */
export async function fetchMailbox(box: MailboxConfig, opts: FetchOptions): Promise<void> {
  checkSecurity(box);
  const log = opts.log.child({ stage: 'fetch', mailbox: box.name });
  const reconnects = opts.reconnects ?? 5;
  // Results of messages whose reports were committed but whose acknowledgement was cut off:
  // after reconnecting they come back as duplicates, and are reported with their first result.
  const unacked = new Map<number, InputResult>();
  for (let attempt = 0; ; attempt++) {
    const client = connect(box, log);
    try {
      await client.connect();
      await readMailbox(client, box, opts, log, unacked);
      await client.logout().catch(() => undefined);
      return;
    } catch (err) {
      client.close();
      if (isFatal(err)) throw describe(box, err);
      if (attempt >= reconnects || opts.signal?.aborted) throw describe(box, err, `gave up after ${attempt} reconnects`);
      const delay = Math.min(opts.maxDelayMs ?? 30_000, (opts.baseDelayMs ?? 1_000) * 2 ** attempt);
      log.warn({ err: errorMessage(err), attempt: attempt + 1, delayMs: delay }, 'IMAP connection lost; reconnecting');
      await new Promise((r) => setTimeout(r, delay));
    }
  }
}

async function readMailbox(
  client: ImapFlow,
  box: MailboxConfig,
  opts: FetchOptions,
  log: Logger,
  unacked: Map<number, InputResult>,
): Promise<void> {
  const processed = folderPath(box.processed_folder);
  const invalid = folderPath(box.invalid_folder);
  if (!box.mark_seen_only) {
    for (const folder of [processed, invalid]) await client.mailboxCreate(folder);
  }
  const lock = await client.getMailboxLock(box.folder);
  try {
    const mailbox = client.mailbox;
    if (!mailbox) throw new RuawatchError('E_IMAP', `cannot open folder ${box.folder}`);
    const uidvalidity = Number(mailbox.uidValidity);
    const pos = opts.positions.position(box.name, box.folder, uidvalidity);
    // "N:*" always matches the highest UID, even below N (RFC 3501 section 6.4.8): filter again.
    const found = mailbox.exists ? (await client.search({ uid: `${pos.lastUid + 1}:*` }, { uid: true })) || [] : [];
    const todo = found.filter((uid) => uid > pos.lastUid && !opts.positions.handled(box.name, uidvalidity, uid)).sort((a, b) => a - b);
    opts.onPlan?.(todo.length);
    log.info({ uidvalidity, lastUid: pos.lastUid, messages: todo.length }, 'reading mailbox');
    if (todo.length === 0) return;

    const sizes = new Map<number, number>();
    for await (const m of client.fetch(uidSet(todo), { uid: true, size: true }, { uid: true })) sizes.set(m.uid, m.size ?? 0);

    let blocked: number | null = null;
    let lastCommand = Date.now();
    const runner: IngestRunner = opts.pool && todo.length > 1 ? opts.pool : opts.ingestor;
    // Two batches in flight: the next one downloads while this one is parsed. A batch holds at
    // most half of max_message_bytes (or one message, itself at most max_message_bytes).
    const all = [...batches(todo, sizes, opts.limits.maxMessageBytes / 2, opts.batchMessages ?? 50)];
    const download = (batch: number[]) =>
      downloadBatch(
        client,
        batch.filter((uid) => (sizes.get(uid) ?? 0) <= opts.limits.maxMessageBytes),
      );
    let next = all.length ? download(all[0]!) : null;
    for (const [i, batch] of all.entries()) {
      const sources = await next!;
      next = i + 1 < all.length ? download(all[i + 1]!) : null;
      // A failed prefetch is reported when it is awaited, not as an unhandled rejection now.
      next?.catch(() => undefined);
      lastCommand = Date.now();
      const acks: { uid: number; verdict: Exclude<Verdict, { to: 'retry' }> }[] = [];
      const ingest = (uid: number): Promise<InputResult> => {
        const name = `${box.name}:${uid}`;
        const source = sources.get(uid);
        sources.delete(uid);
        if (!source) return Promise.resolve(tooLarge(name, sizes.get(uid)));
        return runner.ingest({ name, open: () => fromBuffer(source), portable: { name, bytes: source } });
      };
      await inOrder(
        batch,
        ingest,
        runner.inFlight,
        async (uid, result) => {
          const verdict = decide(result.leaves);
          if (verdict.to === 'retry') {
            // The result says so (a failed input with an infrastructure code): the caller reports it.
            log.info({ uid, reason: verdict.reason }, 'message left in place, to be tried again');
            blocked ??= uid;
            opts.onResult(result);
            return;
          }
          unacked.set(uid, unacked.get(uid) ?? result);
          acks.push({ uid, verdict });
          // Long parses: keep the connection alive (servers drop idle clients after 30 minutes).
          // A failure here must not cut this loop short while other messages are still being
          // ingested: their results are needed below. A dead connection fails the MOVE instead.
          if (Date.now() - lastCommand > 60_000) {
            await client.noop().catch((err: unknown) => log.warn({ err: errorMessage(err) }, 'keep-alive NOOP failed'));
            lastCommand = Date.now();
          }
        },
        () => opts.signal?.aborted === true,
      );
      // Every report of these messages is committed (and synced to disk): now, and only now,
      // acknowledge them, one command per destination. A crash before this line re-reads them next
      // time as duplicates.
      if (acks.length) opts.positions.makeDurable(box.name, box.folder, uidvalidity);
      for (const to of ['processed', 'invalid'] as const) {
        const uids = acks.filter((x) => x.verdict.to === to).map((x) => x.uid);
        if (uids.length) await acknowledge(client, box, uids, to === 'processed' ? processed : invalid);
      }
      lastCommand = Date.now();
      opts.positions.transaction(() => {
        for (const { uid, verdict } of acks) {
          opts.positions.markHandled(box.name, uidvalidity, uid, verdict.to, verdict.to === 'invalid' ? verdict.reason : null);
        }
        // The position only moves past a contiguous run of acknowledged messages.
        const done = acks.map((x) => x.uid).filter((uid) => blocked === null || uid < blocked);
        if (done.length) opts.positions.savePosition(box.name, box.folder, { uidvalidity, lastUid: Math.max(...done) });
      });
      for (const { uid } of acks) {
        opts.onResult(unacked.get(uid)!);
        unacked.delete(uid);
      }
      if (opts.signal?.aborted) {
        log.info('stopping: the rest of the mailbox is read on the next pass');
        await next?.catch(() => undefined);
        break;
      }
    }
  } finally {
    lock.release();
  }
}

/**
 * Downloads a batch's messages. The FETCH is drained here as its responses arrive, so commands
 * issued meanwhile (the previous batch's MOVE) simply queue behind it.
 */
async function downloadBatch(client: ImapFlow, uids: number[]): Promise<Map<number, Buffer>> {
  const sources = new Map<number, Buffer>();
  if (uids.length === 0) return sources;
  for await (const m of client.fetch(uidSet(uids), { uid: true, source: true }, { uid: true })) {
    if (m.source) sources.set(m.uid, m.source);
  }
  return sources;
}

async function acknowledge(client: ImapFlow, box: MailboxConfig, uids: number[], folder: string[]): Promise<void> {
  const range = uidSet(uids);
  if (box.mark_seen_only) {
    await client.messageFlagsAdd(range, ['\\Seen'], { uid: true });
    return;
  }
  const moved = await client.messageMove(range, folder, { uid: true });
  // imapflow answers false rather than throwing when the connection went away: worth a reconnect.
  if (!moved) throw new Error(`could not move messages ${range} to ${folder.join('/')}`);
}

/**
 * A sorted UID list as an IMAP sequence set with ranges ("1:40,42,45:60"), so a backfill of
 * thousands of messages stays within the server's command-line limit (RFC 3501 section 9).
 */
export function uidSet(uids: number[]): string {
  const parts: string[] = [];
  for (let i = 0; i < uids.length;) {
    let j = i;
    while (j + 1 < uids.length && uids[j + 1] === uids[j]! + 1) j++;
    parts.push(j === i ? String(uids[i]) : `${uids[i]}:${uids[j]}`);
    i = j + 1;
  }
  return parts.join(',');
}

/** Groups UIDs so one FETCH holds at most `maxBytes` of message bodies and `maxCount` messages. */
function* batches(uids: number[], sizes: Map<number, number>, maxBytes: number, maxCount: number): Generator<number[]> {
  let batch: number[] = [];
  let bytes = 0;
  for (const uid of uids) {
    const size = Math.min(sizes.get(uid) ?? 0, maxBytes);
    if (batch.length && (bytes + size > maxBytes || batch.length >= maxCount)) {
      yield batch;
      batch = [];
      bytes = 0;
    }
    batch.push(uid);
    bytes += size;
  }
  if (batch.length) yield batch;
}

function decide(leaves: Leaf[]): Verdict {
  const infra = leaves.find((l) => l.status === 'failed' && isInfrastructure(l.code));
  if (infra && infra.status === 'failed') return { to: 'retry', reason: infra.error };
  if (leaves.some((l) => l.status === 'stored' || l.status === 'duplicate')) return { to: 'processed' };
  const reasons = leaves.map((l) => (l.status === 'failed' ? `${l.error} [${l.code}]` : l.status === 'none' ? l.reason : ''));
  return { to: 'invalid', reason: reasons.filter(Boolean).join('; ') || 'no report' };
}

function tooLarge(name: string, size: number | undefined): InputResult {
  return {
    input: name,
    leaves: [
      {
        input: name,
        status: 'failed',
        code: 'E_LIMIT',
        error: overLimit('maxMessageBytes', `the mail is ${formatBytes(size ?? 0)}; not downloaded`).message,
      },
    ],
  };
}

function folderPath(folder: string): string[] {
  // Configured with "/" between levels; imapflow joins with the server's own delimiter and
  // namespace prefix (RFC 2342), so "Archive/DMARC" works on "." and "/" servers alike.
  return folder.split('/').filter(Boolean);
}

function connect(box: MailboxConfig, log: Logger, idle = false, timeoutMs = 30_000): ImapFlow {
  const client = new ImapFlow({
    host: box.host,
    port: box.port ?? (box.security === 'tls' ? 993 : 143),
    secure: box.security === 'tls',
    doSTARTTLS: box.security === 'starttls' ? true : box.security === 'none' ? false : undefined,
    auth: { user: box.user, pass: box.password },
    tls: box.ca_file ? { ca: readCa(box) } : {},
    logger: false,
    disableAutoIdle: !idle,
    // imapflow enters IDLE once the connection has been quiet this long (15 s by default).
    autoIdleDelay: 1000,
    connectionTimeout: timeoutMs,
    greetingTimeout: Math.min(15_000, timeoutMs),
    socketTimeout: 10 * 60_000,
  });
  // Without a listener an 'error' event would end the process; the failing command reports it too.
  client.on('error', (err: Error) => log.debug({ err: err.message }, 'IMAP client error'));
  return client;
}

function readCa(box: MailboxConfig): Buffer {
  try {
    return fs.readFileSync(box.ca_file!);
  } catch (err) {
    throw new RuawatchError('E_CONFIG', `mailbox ${box.name}: cannot read ca_file ${box.ca_file}: ${errorMessage(err)}`);
  }
}

function checkSecurity(box: MailboxConfig): void {
  const loopback = /^(localhost|127(\.\d{1,3}){3}|::1|\[::1\])$/i.test(box.host);
  if (box.security === 'none' && !loopback) {
    throw new RuawatchError(
      'E_CONFIG',
      `mailbox ${box.name}: security = "none" sends the password in clear; it is allowed only for a loopback host, not ${box.host}`,
    );
  }
}

const TLS_FATAL = /CERT|SELF_SIGNED|UNABLE_TO_VERIFY|ERR_TLS/;

/** Errors that another attempt cannot fix: wrong credentials, an untrusted certificate, a missing folder. */
function isFatal(err: unknown): boolean {
  if (err instanceof RuawatchError) return true;
  const e = err as { authenticationFailed?: boolean; code?: string; serverResponseCode?: string; responseStatus?: string };
  if (e.authenticationFailed) return true;
  if (e.code && TLS_FATAL.test(e.code)) return true;
  if (e.serverResponseCode === 'NONEXISTENT') return true;
  return false;
}

function describe(box: MailboxConfig, err: unknown, suffix?: string): RuawatchError {
  if (err instanceof RuawatchError) return err;
  const e = err as { authenticationFailed?: boolean; code?: string; responseText?: string };
  let what: string;
  if (e.authenticationFailed) what = `authentication failed for ${box.user}${e.responseText ? ` (${e.responseText})` : ''}`;
  else if (e.code && TLS_FATAL.test(e.code)) what = `the server's TLS certificate is not trusted (${e.code}); set ca_file for a private CA`;
  else what = `${errorMessage(err)}${e.code ? ` (${e.code})` : ''}`;
  return new RuawatchError('E_IMAP', `mailbox ${box.name} (${box.host}): ${what}${suffix ? `; ${suffix}` : ''}`, { cause: err });
}

export interface Watcher {
  stop(): Promise<void>;
}

/**
 * IMAP IDLE (RFC 2177) on a mailbox's folder over a connection of its own: calls `onNew` when the
 * server announces new messages, so they are read within seconds instead of at the next poll.
 * Reading stays with the poll; this only wakes it. A lost connection is re-opened with backoff
 * (5 s doubling to 5 minutes) until stop().
 */
export function watchMailbox(box: MailboxConfig, log: Logger, onNew: () => void): Watcher {
  checkSecurity(box);
  const wlog = log.child({ stage: 'idle', mailbox: box.name });
  let stopped = false;
  let client: ImapFlow | null = null;
  let timer: NodeJS.Timeout | null = null;
  let failures = 0;
  const open = async () => {
    if (stopped) return;
    const c = connect(box, wlog, true);
    client = c;
    c.on('exists', (data: { count: number; prevCount: number }) => {
      if (data.count > data.prevCount) {
        wlog.info({ messages: data.count - data.prevCount }, 'new mail announced');
        onNew();
      }
    });
    c.on('close', () => {
      if (stopped || client !== c) return;
      client = null;
      schedule();
    });
    try {
      await c.connect();
      await c.mailboxOpen(box.folder, { readOnly: true });
      failures = 0;
      wlog.info('watching for new mail');
    } catch (err) {
      wlog.warn({ err: errorMessage(err) }, 'cannot watch the mailbox; retrying');
      if (client === c) {
        client = null;
        c.close();
        schedule();
      }
    }
  };
  const schedule = () => {
    if (stopped) return;
    const delay = Math.min(300_000, 5_000 * 2 ** Math.min(failures++, 6));
    timer = setTimeout(() => void open(), delay);
    timer.unref();
  };
  void open();
  return {
    async stop() {
      stopped = true;
      if (timer) clearTimeout(timer);
      const c = client;
      client = null;
      if (c) await c.logout().catch(() => c.close());
    },
  };
}

export interface MailboxProbe {
  name: string;
  /** host:port */
  server: string;
  security: MailboxConfig['security'];
  user: string;
  ok: boolean;
  error?: string;
  /** The TLS the session used; null when it was in clear. */
  tls?: { protocol: string; cipher: string } | null;
  folders: {
    role: 'folder' | 'processed_folder' | 'invalid_folder';
    name: string;
    exists: boolean;
    messages?: number;
    unseen?: number;
    error?: string;
  }[];
}

/**
 * Logs in to a mailbox and looks, without changing anything (no folder created, nothing selected
 * for writing): the TLS in use, and for the folder read, the processed and the invalid folder
 * whether each exists and how many messages it holds. `ruawatch config check --connect`.
 */
export async function probeMailbox(box: MailboxConfig, timeoutMs: number): Promise<MailboxProbe> {
  const probe: MailboxProbe = {
    name: box.name,
    server: `${box.host}:${box.port ?? (box.security === 'tls' ? 993 : 143)}`,
    security: box.security,
    user: box.user,
    ok: false,
    folders: [],
  };
  const log = pino({ level: 'silent' });
  let client: ImapFlow | null = null;
  try {
    checkSecurity(box);
    client = connect(box, log, false, timeoutMs);
    await client.connect();
    probe.tls = client.tls ? { protocol: client.tls.version, cipher: client.tls.name } : null;
    const roles = box.mark_seen_only ? (['folder'] as const) : (['folder', 'processed_folder', 'invalid_folder'] as const);
    for (const role of roles) {
      const name = box[role];
      try {
        const st = await client.status(folderPath(name), { messages: true, unseen: true });
        if (!st) throw new Error('the server did not answer STATUS');
        probe.folders.push({ role, name, exists: true, messages: st.messages ?? 0, unseen: st.unseen ?? 0 });
      } catch (err) {
        const missing = (err as { code?: string }).code === 'NotFound';
        probe.folders.push({ role, name, exists: false, ...(missing ? {} : { error: errorMessage(err) }) });
      }
    }
    const read = probe.folders[0]!;
    probe.ok = read.exists;
    if (!read.exists) probe.error = `the folder ${box.folder} ${read.error ? `cannot be read: ${read.error}` : 'does not exist'}`;
    await client.logout().catch(() => undefined);
  } catch (err) {
    client?.close();
    probe.error = describe(box, err).message.replace(`mailbox ${box.name} (${box.host}): `, '');
  }
  return probe;
}
