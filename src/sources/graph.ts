import { createHash } from 'node:crypto';
import type { Logger } from 'pino';
import { GRAPH_URL } from '../auth/providers.js';
import type { TokenProvider } from '../auth/tokens.js';
import type { MailboxConfig } from '../config/schema.js';
import { jsonObject } from '../auth/http.js';
import { MailboxError, type Destination, type Mailbox, type MailboxSession, type WaitingMessage } from '../pipeline/mailbox.js';
import { GraphClient, MAX_CONCURRENT, graphErrorOf } from './graph-client.js';

/*
 * A mailbox at Microsoft 365 read through Microsoft Graph (`kind = "graph"`): the messages of a
 * folder listed oldest first, each downloaded as MIME (GET /messages/{id}/$value), and moved to the
 * processed or invalid folder (POST /messages/{id}/move), or marked read, once its reports are
 * committed; pipeline/mailbox.ts decides when. The endpoints used, as Microsoft documents them:
 *   GET  /users/{user}/mailFolders/{well-known name or id}
 *   GET  /users/{user}/mailFolders/{id}/childFolders      POST the same: create a folder
 *   GET  /users/{user}/mailFolders/{id}/messages          ($select, $orderby, $filter, $top, $expand)
 *   GET  /users/{user}/messages/{id}/$value
 *   POST /users/{user}/messages/{id}/move                  PATCH /users/{user}/messages/{id} (isRead)
 *
 * How it maps onto the Mailbox interface:
 *   - epoch: a number derived from the folder's id, so a folder deleted and created again (a new
 *     id) is read again from the start, as a new UIDVALIDITY is for IMAP;
 *   - order: the message's receivedDateTime in epoch seconds (ties are fine: the loop's record of
 *     handled messages tells them apart, and the position never passes a message left in place);
 *   - id: Graph's message id. A moved message gets a new id, as a moved IMAP message gets a new UID;
 *   - size: PidTagMessageSize (the MAPI property 0x0E08), which Graph has no plain property for. The
 *     MIME form can be larger (attachments in base64): the download stops at max_message_bytes
 *     whatever the stated size, and the message then counts as too large.
 *
 * What is listed: the folder's messages are the queue. With messages moved out on acknowledgement
 * (the default) every message in the folder is listed, so a message moved back into it (to be
 * read again) is found whatever its date. With mark_seen_only, the messages stay and are listed
 * from the position on (receivedDateTime at or after it).
 *
 * Graph has no IDLE: it pushes change notifications only to a public HTTPS endpoint (or Azure
 * Event Hubs / Event Grid), which a self-hosted ruawatch usually does not have. A graph mailbox is
 * polled on [schedule] poll; a listing is one request per 250 messages, cheap enough to poll often.
 */

/** Folder names Graph knows in every mailbox whatever their display name (https://learn.microsoft.com/graph/api/resources/mailfolder). */
const WELL_KNOWN = new Set(['inbox', 'archive', 'junkemail', 'deleteditems', 'drafts', 'sentitems', 'msgfolderroot']);
/** PidTagMessageSize, as a single-value extended property id. */
const SIZE_PROPERTY = 'Integer 0x0E08';
/** Messages per page of a listing (Graph allows up to 1000). */
const PAGE = 250;
/** A listing that goes on for more pages than this is not one Graph would send. */
const MAX_PAGES = 4000;
/** Downloads and moves in flight at once; one request of MAX_CONCURRENT stays free for the other. */
const PARALLEL = MAX_CONCURRENT - 1;

/** A folder as `config check --connect` reports it. */
export interface GraphFolderProbe {
  role: 'folder' | 'processed_folder' | 'invalid_folder';
  name: string;
  exists: boolean;
  messages?: number;
  unseen?: number;
}

export class GraphMailbox implements Mailbox {
  readonly name: string;
  readonly folder: string;

  constructor(
    private readonly box: MailboxConfig,
    private readonly log: Logger,
    private readonly tokens: TokenProvider,
    private readonly maxMessageBytes: number,
    /** Tests shorten the throttling delays. */
    private readonly backoffMs?: number,
  ) {
    this.name = box.name;
    this.folder = box.folder;
  }

  async open(signal?: AbortSignal): Promise<MailboxSession> {
    const ctl = new AbortController();
    const abort = () => ctl.abort();
    if (signal?.aborted) ctl.abort();
    signal?.addEventListener('abort', abort);
    const client = this.client(ctl.signal);
    try {
      const folders = new Folders(client);
      const folderId = await folders.find(this.box.folder, false);
      if (!folderId) {
        throw new MailboxError('E_GRAPH', `mailbox ${this.name} (graph): there is no folder ${this.box.folder} in ${this.box.user}`, {
          retryable: false,
        });
      }
      let destinations: Record<Destination, string> | null = null;
      if (!this.box.mark_seen_only) {
        destinations = {
          processed: (await folders.find(this.box.processed_folder, true))!,
          invalid: (await folders.find(this.box.invalid_folder, true))!,
        };
      }
      return new GraphSession(client, ctl, this.box, epochOf(folderId), folderId, destinations, this.maxMessageBytes);
    } catch (err) {
      ctl.abort();
      throw err;
    } finally {
      signal?.removeEventListener('abort', abort);
    }
  }

  /**
   * For `config check --connect`: the folder and the destination folders looked up (nothing
   * created, moved or marked), with the messages in each and, for the folder read, how many are
   * unread. Rejects when the folder read cannot be opened.
   */
  async probe(timeoutMs: number): Promise<GraphFolderProbe[]> {
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), timeoutMs);
    try {
      const client = this.client(ctl.signal);
      const folders = new Folders(client);
      const out: GraphFolderProbe[] = [];
      const roles = this.box.mark_seen_only ? (['folder'] as const) : (['folder', 'processed_folder', 'invalid_folder'] as const);
      for (const role of roles) {
        const name = this.box[role];
        const id = await folders.find(name, false);
        if (id === null) {
          if (role === 'folder')
            throw new MailboxError('E_GRAPH', `mailbox ${this.name} (graph): there is no folder ${name}`, { retryable: false });
          out.push({ role, name, exists: false });
          continue;
        }
        const info = await client.json('GET', `/mailFolders/${encodeURIComponent(id)}`, `GET folder ${name}`, {
          query: { $select: 'id,totalItemCount,unreadItemCount' },
        });
        const count = (v: unknown) => (typeof v === 'number' && Number.isInteger(v) && v >= 0 ? v : 0);
        out.push({ role, name, exists: true, messages: count(info.totalItemCount), unseen: count(info.unreadItemCount) });
      }
      return out;
    } finally {
      clearTimeout(timer);
      ctl.abort();
    }
  }

  private client(signal: AbortSignal): GraphClient {
    return new GraphClient({
      baseUrl: this.box.graph_url ?? GRAPH_URL,
      user: this.box.user,
      tokens: this.tokens,
      timeoutMs: this.box.timeout_seconds * 1000,
      log: this.log,
      name: this.name,
      signal,
      ...(this.backoffMs === undefined ? {} : { backoffMs: this.backoffMs }),
    });
  }
}

/** The epoch of a folder: 31 bits of a hash of its id (SQLite keeps it as an INTEGER beside the position). */
export function epochOf(folderId: string): number {
  return createHash('sha256').update(folderId).digest().readUInt32BE(0) >>> 1;
}

/** Folders by path ("Archive/DMARC"), looked up level by level under the root or a well-known folder. */
class Folders {
  constructor(private readonly client: GraphClient) {}

  /** The folder's id, created with its missing parents if `create`; null if missing and not created. */
  async find(path: string, create: boolean): Promise<string | null> {
    const parts = path.split('/').filter(Boolean);
    let parent = 'msgfolderroot';
    let i = 0;
    if (WELL_KNOWN.has(parts[0]!.toLowerCase())) {
      const f = await this.client.json('GET', `/mailFolders/${parts[0]!.toLowerCase()}`, `GET folder ${parts[0]}`, {
        query: { $select: 'id,displayName' },
      });
      parent = idOf(f, this.client);
      i = 1;
    }
    for (; i < parts.length; i++) {
      const name = parts[i]!;
      const found = await this.child(parent, name);
      if (found) {
        parent = found;
        continue;
      }
      if (!create) return null;
      parent = await this.create(parent, name);
    }
    return parent;
  }

  /** A child folder by display name (Exchange compares them without case). */
  private async child(parent: string, name: string): Promise<string | null> {
    let target: string = `/mailFolders/${encodeURIComponent(parent)}/childFolders`;
    let query: Record<string, string> | undefined = { $select: 'id,displayName', $top: '100' };
    for (let page = 0; page < MAX_PAGES; page++) {
      const body = await this.client.json(
        'GET',
        target,
        `list the folders in ${parent === 'msgfolderroot' ? 'the mailbox' : 'a folder'}`,
        query ? { query } : {},
      );
      const value = Array.isArray(body.value) ? (body.value as Record<string, unknown>[]) : [];
      const match = value.find((f) => typeof f.displayName === 'string' && f.displayName.toLowerCase() === name.toLowerCase());
      if (match) return idOf(match, this.client);
      if (body['@odata.nextLink'] === undefined) return null;
      target = this.client.checkLink(body['@odata.nextLink']);
      query = undefined;
    }
    throw this.client.error('the folder listing does not end', false);
  }

  private async create(parent: string, name: string): Promise<string> {
    const answer = await this.client.request('POST', `/mailFolders/${encodeURIComponent(parent)}/childFolders`, {
      body: { displayName: name },
    });
    if (answer.status === 201 || answer.status === 200) return idOf(jsonObject(answer.body) ?? {}, this.client);
    // Created meanwhile by another client (or by a request whose answer was lost): look it up again.
    if (answer.status === 409 || graphErrorOf(answer).code === 'ErrorFolderExists') {
      const found = await this.child(parent, name);
      if (found) return found;
    }
    throw this.client.failure(answer, `create folder ${name}`);
  }
}

function idOf(obj: Record<string, unknown>, client: GraphClient): string {
  const id = obj.id;
  if (typeof id !== 'string' || !validId(id)) throw client.error('Graph answered a folder without a usable id', false);
  return id;
}

/** Graph's ids are base64 (URL-safe or not); anything else, or absurdly long, is not one. */
function validId(id: string): boolean {
  return id.length > 0 && id.length <= 1024 && /^[A-Za-z0-9+/=_-]+$/.test(id);
}

class GraphSession implements MailboxSession {
  /** The messages of the last listing by id: a download that finds one larger than stated raises its size. */
  private listed = new Map<string, WaitingMessage>();

  constructor(
    private readonly client: GraphClient,
    private readonly ctl: AbortController,
    private readonly box: MailboxConfig,
    readonly epoch: number,
    private readonly folderId: string,
    private readonly destinations: Record<Destination, string> | null,
    private readonly maxMessageBytes: number,
  ) {}

  async list(after: number): Promise<WaitingMessage[]> {
    const query: Record<string, string> = {
      $select: 'id,receivedDateTime',
      $orderby: 'receivedDateTime asc',
      $top: String(PAGE),
      $expand: `singleValueExtendedProperties($filter=id eq '${SIZE_PROPERTY}')`,
    };
    // With mark_seen_only the messages stay in the folder: from the position on ("ge": messages
    // received in the same second as the last one handled are listed again, and skipped as handled).
    // Graph wants the $orderby property first in $filter.
    if (this.box.mark_seen_only && after > 0)
      query.$filter = `receivedDateTime ge ${new Date(after * 1000).toISOString().replace('.000Z', 'Z')}`;
    const out: WaitingMessage[] = [];
    let target = `/mailFolders/${encodeURIComponent(this.folderId)}/messages`;
    let q: Record<string, string> | undefined = query;
    for (let page = 0; ; page++) {
      if (page >= MAX_PAGES) throw this.client.error('the message listing does not end', false);
      const body = await this.client.json('GET', target, `list the messages in ${this.box.folder}`, q ? { query: q } : {});
      const value = Array.isArray(body.value) ? (body.value as Record<string, unknown>[]) : null;
      if (!value) throw this.client.error(`list the messages in ${this.box.folder}: the answer has no "value" list`, true);
      for (const m of value) {
        if (typeof m.id !== 'string' || !validId(m.id)) continue;
        const received = typeof m.receivedDateTime === 'string' ? Date.parse(m.receivedDateTime) : NaN;
        out.push({ id: m.id, order: Number.isFinite(received) ? Math.floor(received / 1000) : 0, size: sizeOf(m) });
      }
      if (body['@odata.nextLink'] === undefined) break;
      target = this.client.checkLink(body['@odata.nextLink']);
      q = undefined;
    }
    // Sorted by order, ties in the order Graph listed them (a stable sort).
    out.sort((a, b) => a.order - b.order);
    this.listed = new Map(out.map((m) => [m.id, m]));
    return out;
  }

  async download(ids: string[]): Promise<Map<string, Buffer>> {
    const out = new Map<string, Buffer>();
    await parallel(ids, PARALLEL, async (id) => {
      const answer = await this.client.request('GET', `/messages/${encodeURIComponent(id)}/$value`, { maxBytes: this.maxMessageBytes });
      if (answer.status === 404) return; // moved or deleted meanwhile: not in the answer
      if (answer.status !== 200) throw this.client.failure(answer, `download message ${id}`);
      if (answer.over) {
        // Larger as MIME than its stated size: left out, and its size raised so the loop counts it as too large.
        const m = this.listed.get(id);
        if (m) m.size = Math.max(answer.size, this.maxMessageBytes + 1);
        return;
      }
      out.set(id, answer.body);
    });
    return out;
  }

  async acknowledge(ids: string[], to: Destination): Promise<void> {
    await parallel(ids, PARALLEL, async (id) => {
      const path = `/messages/${encodeURIComponent(id)}`;
      const answer = this.box.mark_seen_only
        ? await this.client.request('PATCH', path, { body: { isRead: true } })
        : await this.client.request('POST', `${path}/move`, { body: { destinationId: this.destinations![to] } });
      // 404: no longer there (a move whose answer was lost and was sent again; someone else moved it).
      if (answer.status === 404) return;
      if (answer.status < 200 || answer.status > 299) {
        throw this.client.failure(
          answer,
          this.box.mark_seen_only
            ? `mark message ${id} read`
            : `move message ${id} to ${this.box[to === 'processed' ? 'processed_folder' : 'invalid_folder']}`,
        );
      }
    });
  }

  close(): Promise<void> {
    this.ctl.abort();
    return Promise.resolve();
  }

  destroy(): void {
    this.ctl.abort();
  }
}

/** The message's size from PidTagMessageSize; 0 when Graph did not give it (the download cap still applies). */
function sizeOf(m: Record<string, unknown>): number {
  const props = Array.isArray(m.singleValueExtendedProperties) ? (m.singleValueExtendedProperties as Record<string, unknown>[]) : [];
  // Graph answers the id in its own spelling ("Integer 0xe08").
  const p = props.find((x) => typeof x.id === 'string' && x.id.toLowerCase().replace(/0x0*/, '0x') === 'integer 0xe08');
  const n = typeof p?.value === 'string' && /^\d{1,15}$/.test(p.value) ? Number(p.value) : typeof p?.value === 'number' ? p.value : 0;
  return Number.isFinite(n) && n >= 0 ? n : 0;
}

/** Runs fn over items, at most `n` at a time; the first failure rejects once every started call has ended. */
async function parallel<T>(items: T[], n: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  let failure: unknown = null;
  const worker = async () => {
    while (failure === null && next < items.length) {
      const item = items[next++]!;
      try {
        await fn(item);
      } catch (err) {
        failure ??= err;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(n, items.length) }, worker));
  if (failure !== null) throw failure;
}
