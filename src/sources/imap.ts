import fs from 'node:fs';
import { ImapFlow, type MailboxLockObject } from 'imapflow';
import { pino, type Logger } from 'pino';
import type { Token, TokenProvider } from '../auth/tokens.js';
import { authOf, isLoopback, type MailboxConfig } from '../config/schema.js';
import { RuawatchError, errorMessage, messageWithHint } from '../errors.js';
import {
  MailboxError,
  type Destination,
  type Mailbox,
  type MailboxSession,
  type WaitingMessage,
  type Watcher,
} from '../pipeline/mailbox.js';

export type { MailboxConfig };

/**
 * A mailbox on an IMAP server (imapflow): connect, list new messages, download, move or flag, and
 * watch with IDLE. What is read when, and when a message may be acknowledged, is decided by
 * pipeline/mailbox.ts. It logs in with a password, or (with `tokens`) with an OAuth2 access token
 * (SASL XOAUTH2 or OAUTHBEARER, RFC 7628, whichever the server offers; imapflow prefers OAUTHBEARER).
 */
export class ImapMailbox implements Mailbox {
  readonly name: string;
  readonly folder: string;

  constructor(
    private readonly box: MailboxConfig,
    private readonly log: Logger,
    private readonly tokens: TokenProvider | null = null,
  ) {
    this.name = box.name;
    this.folder = box.folder;
  }

  async open(signal?: AbortSignal): Promise<MailboxSession> {
    const box = this.box;
    checkSecurity(box);
    const client = await login(box, this.log, this.tokens, false, signal);
    // Cut off (the pass's kill signal) until the session is handed over, which the caller can then
    // destroy: a server that stops answering after the login would otherwise hold the pass until
    // timeout_seconds, long past the deadline and its grace.
    const abort = () => client.close();
    signal?.addEventListener('abort', abort);
    try {
      if (signal?.aborted) throw new RuawatchError('E_IMAP', `mailbox ${box.name} (${box.host}): stopped while opening the folder`);
      if (!box.mark_seen_only) {
        for (const folder of [box.processed_folder, box.invalid_folder]) await client.mailboxCreate(folderPath(folder));
      }
      const lock = await client.getMailboxLock(box.folder);
      const mailbox = client.mailbox;
      if (!mailbox) {
        lock.release();
        throw new RuawatchError('E_IMAP', `mailbox ${box.name} (${box.host}): cannot open folder ${box.folder}`);
      }
      return new ImapSession(client, lock, box, Number(mailbox.uidValidity), mailbox.exists > 0);
    } catch (err) {
      client.close();
      throw describe(box, err, false);
    } finally {
      signal?.removeEventListener('abort', abort);
    }
  }

  watch(onNew: () => void): Watcher {
    return watchMailbox(this.box, this.log, onNew, this.tokens);
  }
}

class ImapSession implements MailboxSession {
  constructor(
    private readonly client: ImapFlow,
    private readonly lock: MailboxLockObject,
    private readonly box: MailboxConfig,
    readonly epoch: number,
    private readonly nonEmpty: boolean,
  ) {}

  list(after: number): Promise<WaitingMessage[]> {
    return this.guard(async () => {
      if (!this.nonEmpty) return [];
      // "N:*" always matches the highest UID, even below N (RFC 3501 section 6.4.8): filter again.
      const found = ((await this.client.search({ uid: `${after + 1}:*` }, { uid: true })) || []).filter((uid) => uid > after);
      if (found.length === 0) return [];
      found.sort((a, b) => a - b);
      const sizes = new Map<number, number>();
      for await (const m of this.client.fetch(uidSet(found), { uid: true, size: true }, { uid: true })) sizes.set(m.uid, m.size ?? 0);
      // A message expunged between SEARCH and FETCH is not listed.
      return found.filter((uid) => sizes.has(uid)).map((uid) => ({ id: String(uid), order: uid, size: sizes.get(uid)! }));
    });
  }

  /**
   * The FETCH is drained here as its responses arrive, so commands issued meanwhile (the previous
   * batch's MOVE) simply queue behind it.
   */
  download(ids: string[]): Promise<Map<string, Buffer>> {
    return this.guard(async () => {
      const sources = new Map<string, Buffer>();
      for await (const m of this.client.fetch(uidSet(ids.map(Number)), { uid: true, source: true }, { uid: true })) {
        if (m.source) sources.set(String(m.uid), m.source);
      }
      return sources;
    });
  }

  acknowledge(ids: string[], to: Destination): Promise<void> {
    return this.guard(async () => {
      const range = uidSet(ids.map(Number));
      if (this.box.mark_seen_only) {
        await this.client.messageFlagsAdd(range, ['\\Seen'], { uid: true });
        return;
      }
      const folder = folderPath(to === 'processed' ? this.box.processed_folder : this.box.invalid_folder);
      const moved = await this.client.messageMove(range, folder, { uid: true });
      // imapflow answers false rather than throwing when the connection went away: worth a reconnect.
      if (!moved) {
        throw new MailboxError(
          'E_IMAP',
          `mailbox ${this.box.name} (${this.box.host}): could not move messages ${range} to ${folder.join('/')}`,
          {
            retryable: true,
          },
        );
      }
    });
  }

  async close(): Promise<void> {
    this.lock.release();
    await this.client.logout().catch(() => undefined);
  }

  destroy(): void {
    this.client.close();
  }

  private async guard<T>(fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      throw describe(this.box, err, false);
    }
  }
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

function folderPath(folder: string): string[] {
  // Configured with "/" between levels; imapflow joins with the server's own delimiter and
  // namespace prefix (RFC 2342), so "Archive/DMARC" works on "." and "/" servers alike.
  return folder.split('/').filter(Boolean);
}

function portOf(box: MailboxConfig): number {
  return box.port ?? (box.security === 'tls' ? 993 : 143);
}

/**
 * Connects and logs in: with the password, or with an access token. A token the server refuses
 * (AUTHENTICATIONFAILED) is dropped; one that came from the cache is replaced by a new one at once
 * and the login tried again, since it may have been revoked or expired early. A new token refused
 * too is an error: the app lacks a permission, which asking again does not cure.
 */
async function login(
  box: MailboxConfig,
  log: Logger,
  tokens: TokenProvider | null,
  idle: boolean,
  signal?: AbortSignal,
): Promise<ImapFlow> {
  for (let attempt = 0; ; attempt++) {
    let token: Token | null = null;
    if (tokens) {
      try {
        token = await tokens.token(signal);
      } catch (err) {
        throw prefixed(box, err);
      }
    }
    const client = connect(box, log, idle, token);
    const abort = () => client.close();
    signal?.addEventListener('abort', abort);
    try {
      await client.connect();
      return client;
    } catch (err) {
      client.close();
      if (token && (err as ImapErrorShape).authenticationFailed) {
        tokens!.refused(token);
        if (!token.fresh && attempt === 0 && !signal?.aborted) {
          log.info({ mailbox: box.name }, 'access token refused; logging in again with a new one');
          continue;
        }
      }
      throw describe(box, err, true, tokens);
    } finally {
      signal?.removeEventListener('abort', abort);
    }
  }
}

/** An error of getting a token, named after its mailbox. */
function prefixed(box: MailboxConfig, err: unknown): unknown {
  if (!(err instanceof RuawatchError)) return err;
  return new RuawatchError(err.code, `mailbox ${box.name} (${box.host}): ${err.message}`, { cause: err, retryable: err.retryable });
}

function connect(box: MailboxConfig, log: Logger, idle = false, token: Token | null = null): ImapFlow {
  const timeout = box.timeout_seconds * 1000;
  const client = new ImapFlow({
    host: box.host!,
    port: portOf(box),
    secure: box.security === 'tls',
    doSTARTTLS: box.security === 'starttls' ? true : box.security === 'none' ? false : undefined,
    auth: token ? { user: box.user, accessToken: token.value } : { user: box.user, pass: box.password },
    tls: box.ca_file ? { ca: readCa(box) } : {},
    logger: false,
    disableAutoIdle: !idle,
    // imapflow enters IDLE once the connection has been quiet this long (15 s by default).
    autoIdleDelay: 1000,
    connectionTimeout: timeout,
    greetingTimeout: timeout,
    // A command that gets no answer for this long means a server that hangs: the connection is
    // dropped (and opened again). A connection merely quiet this long (a long parse, IDLE) is sent
    // a NOOP by imapflow instead, which also keeps servers that drop idle clients at bay.
    socketTimeout: timeout,
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
  if (box.security === 'none' && !isLoopback(box.host!)) {
    throw new RuawatchError(
      'E_CONFIG',
      `mailbox ${box.name}: security = "none" sends the password in clear; it is allowed only for a loopback host, not ${box.host}`,
    );
  }
}

const TLS_FATAL = /CERT|SELF_SIGNED|UNABLE_TO_VERIFY|ERR_TLS/;
const TLS_NOT_SPOKEN = /WRONG_VERSION_NUMBER|UNKNOWN_PROTOCOL|PACKET_LENGTH_TOO_LONG|HTTP_REQUEST/;
const NETWORK = /^(ECONNREFUSED|ECONNRESET|ETIMEDOUT|ETIMEOUT|EPIPE|EHOSTUNREACH|ENETUNREACH|ENETDOWN|EAI_AGAIN|ENOTFOUND|ECONNABORTED)$/;

interface ImapErrorShape {
  authenticationFailed?: boolean;
  code?: string;
  serverResponseCode?: string;
  responseText?: string;
}

/**
 * An imapflow or socket error as a MailboxError: retryable unless another attempt cannot fix it
 * (wrong credentials, an untrusted certificate, TLS against a plain port, a missing folder), and
 * with a hint for a connection that never succeeded.
 */
function describe(box: MailboxConfig, err: unknown, connecting: boolean, tokens: TokenProvider | null = null): RuawatchError {
  if (err instanceof RuawatchError) return err;
  const e = err as ImapErrorShape;
  const code = e.code ?? '';
  const where = `${box.host}:${portOf(box)}`;
  let what: string;
  let retryable = true;
  let hint: string | null = null;
  if (e.authenticationFailed && tokens) {
    what = `authentication failed for ${box.user} with a new access token from ${tokens.source}${e.responseText ? ` (${e.responseText})` : ''}`;
    retryable = false;
    hint = oauthHint(box);
  } else if (e.authenticationFailed) {
    what = `authentication failed for ${box.user}${e.responseText ? ` (${e.responseText})` : ''}`;
    retryable = false;
  } else if (TLS_NOT_SPOKEN.test(code) || /wrong version number/.test(errorMessage(err))) {
    what = `${where} does not answer in TLS (${code || errorMessage(err).trim()})`;
    hint = `it looks like a plain IMAP port: set security = "starttls" (or use the implicit TLS port, usually 993, with security = "tls")`;
    retryable = false;
  } else if (TLS_FATAL.test(code)) {
    what = `the server's TLS certificate is not trusted (${code}); set ca_file for a private CA`;
    retryable = false;
  } else if (e.serverResponseCode === 'NONEXISTENT') {
    what = `${errorMessage(err)}${e.responseText ? ` (${e.responseText})` : ''}`;
    retryable = false;
  } else {
    what = `${errorMessage(err)}${code && !errorMessage(err).includes(code) ? ` (${code})` : ''}`;
    retryable = NETWORK.test(code) || !connecting;
    if (connecting) hint = connectHint(box, code);
  }
  return new MailboxError('E_IMAP', `mailbox ${box.name} (${box.host}): ${what}`, { cause: err, retryable, hint });
}

/** What to check when the server refused a token the identity provider had just issued. */
function oauthHint(box: MailboxConfig): string {
  switch (authOf(box)) {
    case 'microsoft':
      return 'the token was issued but Exchange Online refused it: the app needs the Office 365 Exchange Online application permission IMAP.AccessAsApp (admin consent), its service principal registered in Exchange (New-ServicePrincipal) with FullAccess on this mailbox (Add-MailboxPermission), and IMAP enabled for the mailbox (docs/mailboxes.md)';
    case 'google':
      return 'the token was issued but Gmail refused it: is IMAP enabled for the user, and user the address of the mailbox impersonated? (docs/mailboxes.md)';
    default:
      return 'the server refused the token: is it issued for this server (scope, audience) and for this user?';
  }
}

/** What to check when the first connection to a server failed. */
function connectHint(box: MailboxConfig, code: string): string | null {
  const port = portOf(box);
  const other = box.security === 'tls' ? 'security = "starttls" with port 143' : 'security = "tls" with port 993';
  switch (code) {
    case 'ECONNREFUSED':
      return `nothing accepts connections on port ${port}: a wrong port? IMAP listens on 993 with security = "tls" and on 143 with "starttls"`;
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return `the host name ${box.host} does not resolve`;
    case 'ETIMEOUT':
    case 'ETIMEDOUT':
    case 'CONNECT_TIMEOUT':
    case 'GREETING_TIMEOUT':
      return box.security === 'tls'
        ? `no IMAP answer within ${box.timeout_seconds} s: a firewall, a wrong port, or a port that expects ${other}?`
        : `no IMAP greeting within ${box.timeout_seconds} s: if port ${port} speaks implicit TLS (usually 993), set security = "tls"; else a firewall or a wrong port?`;
    default:
      return null;
  }
}

/**
 * IMAP IDLE (RFC 2177) on a mailbox's folder over a connection of its own: calls `onNew` when the
 * server announces new messages, so they are read within seconds instead of at the next poll.
 * Reading stays with the poll; this only wakes it. A lost connection is re-opened with backoff
 * (5 s doubling to 5 minutes) until stop().
 */
export function watchMailbox(box: MailboxConfig, log: Logger, onNew: () => void, tokens: TokenProvider | null = null): Watcher {
  checkSecurity(box);
  const wlog = log.child({ stage: 'idle', mailbox: box.name });
  let stopped = false;
  let client: ImapFlow | null = null;
  let timer: NodeJS.Timeout | null = null;
  let failures = 0;
  const open = async () => {
    if (stopped) return;
    let token: Token | null = null;
    if (tokens) {
      try {
        token = await tokens.token();
      } catch (err) {
        wlog.warn({ err: errorMessage(err) }, 'cannot watch the mailbox: no access token; retrying');
        schedule();
        return;
      }
      if (stopped) return;
    }
    const c = connect(box, wlog, true, token);
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
      // A refused token is renewed for the next attempt (a login here, not the poll, may meet it first).
      if (token && (err as ImapErrorShape).authenticationFailed) tokens!.refused(token);
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
  /** "imap", or "graph" (sources/probe.ts fills the probe of a Graph mailbox). */
  kind?: MailboxConfig['kind'];
  /**
   * With OAuth2: where the token came from and how long it is good for (never the token itself),
   * or why none could be had.
   */
  token?: { source: string; expires_in_seconds?: number | null; error?: string };
  /** host:port */
  server: string;
  security: MailboxConfig['security'];
  user: string;
  ok: boolean;
  error?: string;
  /** The TLS the session used, null when it was in clear; absent when the login failed. */
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
 * Logs in to a mailbox and looks, changing nothing (no folder created, nothing selected): the
 * TLS in use, and for the folder read, the processed and the invalid folder whether each exists
 * and how many messages it holds. `ruawatch config check --connect`; a server that does not
 * answer is given `timeoutSeconds` at most, whatever timeout_seconds says.
 */
export async function probeMailbox(box: MailboxConfig, timeoutSeconds: number, tokens: TokenProvider | null = null): Promise<MailboxProbe> {
  const probe: MailboxProbe = {
    name: box.name,
    server: `${box.host}:${portOf(box)}`,
    security: box.security,
    user: box.user,
    ok: false,
    folders: [],
  };
  let client: ImapFlow | null = null;
  try {
    checkSecurity(box);
    // With a password, or a token (renewed once if the server refuses a cached one).
    client = await login({ ...box, timeout_seconds: Math.min(box.timeout_seconds, timeoutSeconds) }, silentLog, tokens, false);
    probe.tls = client.tls ? { protocol: client.tls.version, cipher: client.tls.name } : null;
    const roles = box.mark_seen_only ? (['folder'] as const) : (['folder', 'processed_folder', 'invalid_folder'] as const);
    for (const role of roles) {
      const name = box[role];
      try {
        const st = await client.status(folderPath(name), { messages: true, unseen: true });
        if (!st) throw new RuawatchError('E_IMAP', 'the server did not answer STATUS');
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
    probe.error = messageWithHint(err).replace(`mailbox ${box.name} (${box.host}): `, '');
  }
  return probe;
}

const silentLog = pino({ level: 'silent' });
