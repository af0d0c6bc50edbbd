import crypto from 'node:crypto';
import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import type { OAuthServer } from './oauth-server.js';

/**
 * A loopback stand-in for the few Microsoft Graph v1.0 endpoints a mailbox of kind "graph" uses,
 * checked against Microsoft's documentation (https://learn.microsoft.com/graph/api/):
 *
 *   GET   /v1.0/users/{id|upn}/mailFolders/{id|well-known name}              mailfolder-get
 *   GET   /v1.0/users/{id|upn}/mailFolders/{id}/childFolders                 mailfolder-list-childfolders
 *   POST  /v1.0/users/{id|upn}/mailFolders/{id}/childFolders                 mailfolder-post-childfolders
 *   GET   /v1.0/users/{id|upn}/mailFolders/{id}/messages                     mailfolder-list-messages
 *   GET   /v1.0/users/{id|upn}/messages/{id}/$value                          message-get (MIME)
 *   POST  /v1.0/users/{id|upn}/messages/{id}/move                            message-move
 *   PATCH /v1.0/users/{id|upn}/messages/{id}                                 message-update
 *
 * Each request is checked: the bearer token (issued by the OAuth stand-in for the Graph resource,
 * for an app given this mailbox), method, path, every OData query option and its syntax ($select,
 * $top at most 1000, $orderby and $filter on receivedDateTime with the $orderby property first in
 * $filter as Graph requires, the $expand of PidTagMessageSize), Accept and Content-Type, and the
 * JSON bodies. A request that breaks the API is answered as Graph would (400, 401, 404, 405) and
 * recorded in `violations`, which tests expect to be empty. No more than 4 requests per mailbox at
 * once (Exchange Online's limit; past it, 429 ApplicationThrottled and a violation).
 *
 * Listings page with @odata.nextLink ($skip), as Graph does for messages. Message ids are standard
 * base64 with "+", "/" and "=" in them, so a client that does not encode them in a path breaks.
 * A moved message gets a new id, as in Exchange. Faults on demand: throttle (429 with Retry-After,
 * or 503/504) the next N requests matching a test, stall the answers, cut the connection in the
 * middle of a download.
 */

export interface GraphMessage {
  id: string;
  raw: Buffer;
  receivedDateTime: string;
  isRead: boolean;
  /** PidTagMessageSize as Graph states it: the MAPI size, not the MIME one (by default a little more than the MIME). */
  statedSize: number;
}

export interface GraphFolder {
  id: string;
  displayName: string;
  parentId: string | null;
  wellKnown: string | null;
  messages: GraphMessage[];
}

export interface GraphRequestRecord {
  method: string;
  path: string;
  query: Record<string, string>;
  status: number;
  /** When it came (epoch ms). */
  at: number;
}

interface Fault {
  match: (method: string, path: string) => boolean;
  count: number;
  status: number;
  retryAfter: string | null;
}

const SELECTABLE = new Set([
  'id',
  'receivedDateTime',
  'subject',
  'isRead',
  'displayName',
  'parentFolderId',
  'childFolderCount',
  'totalItemCount',
  'unreadItemCount',
]);
const SIZE_EXPAND = /^singleValueExtendedProperties\(\$filter=id eq 'Integer 0x0?e08'\)$/i;

export class GraphServer {
  url = '';
  readonly requests: GraphRequestRecord[] = [];
  readonly violations: string[] = [];
  /** Most requests in flight at once for one mailbox, seen so far. */
  maxInFlight = 0;
  /** Delay every answer this long (a slow server). */
  delayMs = 0;
  private readonly mailboxes = new Map<string, Map<string, GraphFolder>>();
  private readonly faults: Fault[] = [];
  private cutDownloads = 0;
  private readonly inFlight = new Map<string, number>();
  private readonly sockets = new Set<Socket>();
  private clock = Date.parse('2026-01-01T00:00:00Z');
  private server: http.Server | null = null;

  constructor(private readonly oauth: OAuthServer) {}

  async start(): Promise<this> {
    this.server = http.createServer((req, res) => {
      // In flight from its arrival until its answer is sent, per mailbox.
      const seg = /^\/v1\.0\/users\/([^/?]+)/.exec(req.url ?? '')?.[1];
      const key = seg ? safeDecode(seg).toLowerCase() : '';
      const inFlight = (this.inFlight.get(key) ?? 0) + 1;
      this.inFlight.set(key, inFlight);
      this.maxInFlight = Math.max(this.maxInFlight, inFlight);
      res.on('close', () => this.inFlight.set(key, this.inFlight.get(key)! - 1));
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => void this.handle(req, Buffer.concat(chunks), res, inFlight));
    });
    this.server.on('connection', (s: Socket) => {
      this.sockets.add(s);
      s.on('close', () => this.sockets.delete(s));
    });
    await new Promise<void>((resolve) => this.server!.listen(0, '127.0.0.1', resolve));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}/v1.0`;
    return this;
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise((resolve) => this.server?.close(resolve));
  }

  /** A mailbox with the folders every mailbox has. */
  addMailbox(user: string): void {
    const folders = new Map<string, GraphFolder>();
    const root: GraphFolder = {
      id: newId('F'),
      displayName: 'Top of Information Store',
      parentId: null,
      wellKnown: 'msgfolderroot',
      messages: [],
    };
    folders.set(root.id, root);
    for (const [name, display] of [
      ['inbox', 'Inbox'],
      ['archive', 'Archive'],
      ['deleteditems', 'Deleted Items'],
      ['drafts', 'Drafts'],
      ['junkemail', 'Junk Email'],
      ['sentitems', 'Sent Items'],
    ] as const) {
      const f: GraphFolder = { id: newId('F'), displayName: display, parentId: root.id, wellKnown: name, messages: [] };
      folders.set(f.id, f);
    }
    this.mailboxes.set(user.toLowerCase(), folders);
  }

  /** Delivers a message to a folder (path of display names, or a well-known name first); its id. */
  deliver(user: string, raw: string | Buffer, opts: { folder?: string; receivedDateTime?: string; statedSize?: number } = {}): string {
    const folder = this.folder(user, opts.folder ?? 'inbox');
    if (!folder) throw new Error(`no folder ${opts.folder}`);
    this.clock += 1000;
    const bytes = typeof raw === 'string' ? Buffer.from(raw) : raw;
    const m: GraphMessage = {
      id: newId('M'),
      raw: bytes,
      statedSize: opts.statedSize ?? bytes.length + 2048,
      receivedDateTime: opts.receivedDateTime ?? new Date(this.clock).toISOString().replace('.000Z', 'Z'),
      isRead: false,
    };
    folder.messages.push(m);
    return m.id;
  }

  /** The folder at a path ("inbox", "Processed", "Archive/DMARC"), or null. */
  folder(user: string, path: string): GraphFolder | null {
    const folders = this.mailboxes.get(user.toLowerCase());
    if (!folders) return null;
    const parts = path.split('/');
    let cur: GraphFolder | undefined = [...folders.values()].find((f) => f.wellKnown === parts[0]!.toLowerCase());
    let i = cur ? 1 : 0;
    if (!cur) cur = [...folders.values()].find((f) => f.wellKnown === 'msgfolderroot');
    for (; i < parts.length && cur; i++) {
      const parent: GraphFolder = cur;
      cur = [...folders.values()].find((f) => f.parentId === parent.id && f.displayName.toLowerCase() === parts[i]!.toLowerCase());
    }
    return cur ?? null;
  }

  /** Makes a folder under another (a path, as for folder()), as a person does in Outlook. */
  addFolder(user: string, parentPath: string, displayName: string): void {
    const parent = this.folder(user, parentPath)!;
    const f: GraphFolder = { id: newId('F'), displayName, parentId: parent.id, wellKnown: null, messages: [] };
    this.mailboxes.get(user.toLowerCase())!.set(f.id, f);
  }

  /** Replaces a folder by a new one of the same name and content (a new id), as after deleting and restoring it. */
  recreate(user: string, path: string): void {
    const folders = this.mailboxes.get(user.toLowerCase())!;
    const f = this.folder(user, path)!;
    folders.delete(f.id);
    const again = { ...f, id: newId('F') };
    folders.set(again.id, again);
    for (const c of folders.values()) if (c.parentId === f.id) c.parentId = again.id;
  }

  count(user: string, path: string): number {
    return this.folder(user, path)?.messages.length ?? 0;
  }

  /** Answers the next `count` requests matching `match` with `status` (429 with Retry-After by default). */
  throttle(
    count: number,
    opts: { status?: number; retryAfter?: string | null; match?: (method: string, path: string) => boolean } = {},
  ): void {
    this.faults.push({
      count,
      status: opts.status ?? 429,
      retryAfter: opts.retryAfter === undefined ? '1' : opts.retryAfter,
      match: opts.match ?? (() => true),
    });
  }

  /** Cuts the connection in the middle of the next `n` downloads ($value). */
  cutNextDownloads(n: number): void {
    this.cutDownloads += n;
  }

  private async handle(req: http.IncomingMessage, body: Buffer, res: http.ServerResponse, inFlight: number): Promise<void> {
    const raw = req.url ?? '/';
    const [pathPart, queryPart = ''] = raw.split('?', 2) as [string, string?];
    const method = req.method ?? 'GET';
    const record: GraphRequestRecord = { method, path: pathPart, query: {}, status: 0, at: Date.now() };
    this.requests.push(record);
    const send = (status: number, obj?: unknown, headers: Record<string, string> = {}) => {
      record.status = status;
      const requestId = crypto.randomUUID();
      if (obj === undefined) {
        res.writeHead(status, { 'request-id': requestId, ...headers });
        res.end();
        return;
      }
      res.writeHead(status, {
        'content-type': 'application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8',
        'request-id': requestId,
        ...headers,
      });
      res.end(JSON.stringify(obj));
    };
    const error = (status: number, code: string, message: string, violation = true) => {
      if (violation) this.violations.push(`${method} ${raw}: ${status} ${code}: ${message}`);
      send(status, { error: { code, message, innerError: { date: new Date().toISOString(), 'request-id': crypto.randomUUID() } } });
    };

    // The query: OData system query options only, each once, percent-decoded ("+" is not a space here).
    const query: Record<string, string> = {};
    for (const pair of queryPart.split('&').filter(Boolean)) {
      const eq = pair.indexOf('=');
      const k = decodeURIComponent(eq < 0 ? pair : pair.slice(0, eq));
      const v = eq < 0 ? '' : decodeURIComponent(pair.slice(eq + 1));
      if (k in query) return error(400, 'BadRequest', `Query option '${k}' was specified more than once`);
      query[k] = v;
    }
    record.query = query;

    const m = /^\/v1\.0\/users\/([^/]+)(\/.*)$/.exec(pathPart);
    if (!m) return error(400, 'BadRequest', `Resource not found for the segment '${pathPart}'.`);
    const user = decodeURIComponent(m[1]!).toLowerCase();
    const rest = m[2]!;

    // Authorization: a bearer token for Graph from an app given this mailbox.
    const auth = req.headers.authorization ?? '';
    const token = /^Bearer (\S+)$/.exec(auth)?.[1];
    if (!token) return error(401, 'InvalidAuthenticationToken', 'Access token is empty.');
    const issued = this.oauth.tokens.get(token);
    if (!issued || issued.revoked || issued.expiresAt <= Date.now() || issued.resource !== 'https://graph.microsoft.com') {
      return error(401, 'InvalidAuthenticationToken', 'Lifetime validation failed, the token is expired.', false);
    }
    const folders = this.mailboxes.get(user);
    if (!folders) return error(404, 'ErrorInvalidUser', `The requested user '${user}' is invalid.`, false);
    if (!this.oauth.valid(token, 'https://graph.microsoft.com', user))
      return error(403, 'ErrorAccessDenied', 'Access is denied. Check credentials and try again.', false);

    const fault = this.faults.find((f) => f.count > 0 && f.match(method, rest));
    if (fault) {
      fault.count--;
      record.status = fault.status;
      const code = fault.status === 429 ? 'TooManyRequests' : fault.status === 503 ? 'ServiceUnavailable' : 'GatewayTimeout';
      res.writeHead(fault.status, {
        'content-type': 'application/json',
        ...(fault.retryAfter === null ? {} : { 'retry-after': fault.retryAfter }),
      });
      res.end(JSON.stringify({ error: { code, message: 'Application is over its MailboxConcurrency limit.' } }));
      return;
    }

    if (inFlight > 4) return error(429, 'ApplicationThrottled', 'Application is over its MailboxConcurrency limit.');
    if (this.delayMs) await new Promise((r) => setTimeout(r, this.delayMs));
    this.route(method, m[1]!, rest, query, body, req, res, folders, send, error);
  }

  private route(
    method: string,
    userSegment: string,
    rest: string,
    query: Record<string, string>,
    body: Buffer,
    req: http.IncomingMessage,
    res: http.ServerResponse,
    folders: Map<string, GraphFolder>,
    send: (status: number, obj?: unknown, headers?: Record<string, string>) => void,
    error: (status: number, code: string, message: string, violation?: boolean) => void,
  ): void {
    const allow = (...names: string[]) => {
      const extra = Object.keys(query).filter((k) => !names.includes(k));
      if (extra.length) {
        error(400, 'BadRequest', `Query option '${extra[0]}' is not allowed here.`);
        return false;
      }
      return true;
    };
    const selected = (): string[] | null => {
      if (query.$select === undefined) return [];
      const props = query.$select.split(',');
      const bad = props.find((p) => !SELECTABLE.has(p));
      if (bad) {
        error(400, 'RequestBroker--ParseUri', `Could not find a property named '${bad}' on type 'microsoft.graph.message'.`);
        return null;
      }
      return props;
    };
    const wantsJson = () => {
      const accept = req.headers.accept ?? '';
      if (accept && !/application\/json|\*\/\*/.test(accept)) {
        error(406, 'NotAcceptable', `Accept ${accept}`);
        return false;
      }
      return true;
    };
    const jsonBody = (): Record<string, unknown> | null => {
      const type = (req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
      if (type !== 'application/json') {
        error(415, 'UnsupportedMediaType', `Content-Type ${type || '(none)'}; application/json expected`);
        return null;
      }
      try {
        const v: unknown = JSON.parse(body.toString('utf8'));
        if (v && typeof v === 'object' && !Array.isArray(v)) return v as Record<string, unknown>;
      } catch {
        // below
      }
      error(400, 'BadRequest', 'Empty Payload. JSON content expected.');
      return null;
    };
    const folderBy = (idOrName: string): GraphFolder | undefined =>
      folders.get(idOrName) ?? [...folders.values()].find((f) => f.wellKnown === idOrName.toLowerCase());
    const messageBy = (id: string): { folder: GraphFolder; index: number } | null => {
      for (const f of folders.values()) {
        const index = f.messages.findIndex((x) => x.id === id);
        if (index >= 0) return { folder: f, index };
      }
      return null;
    };
    const folderJson = (f: GraphFolder) => ({
      id: f.id,
      displayName: f.displayName,
      parentFolderId: f.parentId,
      childFolderCount: [...folders.values()].filter((c) => c.parentId === f.id).length,
      unreadItemCount: f.messages.filter((x) => !x.isRead).length,
      totalItemCount: f.messages.length,
    });
    const pick = (obj: Record<string, unknown>, props: string[]) =>
      props.length ? Object.fromEntries(Object.entries(obj).filter(([k]) => k === 'id' || props.includes(k))) : obj;
    const segments = rest.split('/').slice(1).map(decodeURIComponent);

    // /mailFolders/{id}
    if (segments[0] === 'mailFolders' && segments.length === 2) {
      if (method !== 'GET') return error(405, 'Request_BadRequest', `${method} not allowed`);
      if (!allow('$select') || !wantsJson()) return;
      const props = selected();
      if (props === null) return;
      const f = folderBy(segments[1]!);
      if (!f) return error(404, 'ErrorItemNotFound', 'The specified object was not found in the store.', false);
      return send(200, pick(folderJson(f), props));
    }
    // /mailFolders/{id}/childFolders
    if (segments[0] === 'mailFolders' && segments[2] === 'childFolders' && segments.length === 3) {
      const parent = folderBy(segments[1]!);
      if (!parent) return error(404, 'ErrorItemNotFound', 'The specified object was not found in the store.', false);
      if (method === 'GET') {
        if (!allow('$select', '$top', '$skip') || !wantsJson()) return;
        const props = selected();
        if (props === null) return;
        const children = [...folders.values()].filter((f) => f.parentId === parent.id);
        return this.page(
          children.map((f) => pick(folderJson(f), props)),
          query,
          userSegment,
          rest,
          send,
          error,
        );
      }
      if (method === 'POST') {
        if (!allow()) return;
        const b = jsonBody();
        if (!b) return;
        if (typeof b.displayName !== 'string' || b.displayName === '') return error(400, 'ErrorInvalidRequest', 'displayName is required');
        const extra = Object.keys(b).filter((k) => k !== 'displayName' && k !== 'isHidden');
        if (extra.length) return error(400, 'BadRequest', `unexpected properties ${extra.join(', ')}`);
        if (
          [...folders.values()].some(
            (f) => f.parentId === parent.id && f.displayName.toLowerCase() === (b.displayName as string).toLowerCase(),
          )
        ) {
          return error(409, 'ErrorFolderExists', 'A folder with the specified name already exists.', false);
        }
        const f: GraphFolder = { id: newId('F'), displayName: b.displayName, parentId: parent.id, wellKnown: null, messages: [] };
        folders.set(f.id, f);
        return send(201, folderJson(f));
      }
      return error(405, 'Request_BadRequest', `${method} not allowed`);
    }
    // /mailFolders/{id}/messages
    if (segments[0] === 'mailFolders' && segments[2] === 'messages' && segments.length === 3) {
      if (method !== 'GET') return error(405, 'Request_BadRequest', `${method} not allowed`);
      if (!allow('$select', '$top', '$skip', '$orderby', '$filter', '$expand') || !wantsJson()) return;
      const props = selected();
      if (props === null) return;
      const f = folderBy(segments[1]!);
      if (!f) return error(404, 'ErrorItemNotFound', 'The specified object was not found in the store.', false);
      let list = [...f.messages];
      let orderProp: string | null = null;
      if (query.$orderby !== undefined) {
        const o = /^(receivedDateTime)(?: (asc|desc))?$/.exec(query.$orderby);
        if (!o) return error(400, 'BadRequest', `Invalid $orderby '${query.$orderby}'`);
        orderProp = o[1]!;
        list.sort((a, b) => a.receivedDateTime.localeCompare(b.receivedDateTime) * (o[2] === 'desc' ? -1 : 1));
      }
      if (query.$filter !== undefined) {
        const flt = /^(receivedDateTime) (ge|gt|le|lt) (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z)$/.exec(query.$filter);
        if (!flt) return error(400, 'BadRequest', `Invalid filter clause '${query.$filter}'`);
        // "When using $filter and $orderby in the same query, properties in $orderby must also
        // appear in $filter, in the same order, before any that are not" (message-list docs).
        if (orderProp !== null && flt[1] !== orderProp)
          return error(400, 'InefficientFilter', 'The restriction or sort order is too complex for this operation.');
        const at = Date.parse(flt[3]!);
        const cmp = { ge: (t: number) => t >= at, gt: (t: number) => t > at, le: (t: number) => t <= at, lt: (t: number) => t < at }[
          flt[2] as 'ge'
        ];
        list = list.filter((x) => cmp(Date.parse(x.receivedDateTime)));
      }
      const withSize = query.$expand !== undefined;
      if (withSize && !SIZE_EXPAND.test(query.$expand!)) return error(400, 'BadRequest', `Invalid $expand '${query.$expand}'`);
      const items = list.map((x) =>
        pick(
          {
            '@odata.etag': `W/"${crypto.createHash('sha1').update(x.id).digest('base64').slice(0, 20)}"`,
            id: x.id,
            receivedDateTime: x.receivedDateTime,
            isRead: x.isRead,
            subject: 'Report domain',
            ...(withSize ? { singleValueExtendedProperties: [{ id: 'Integer 0xe08', value: String(x.statedSize) }] } : {}),
          },
          [...props, ...(withSize ? ['singleValueExtendedProperties'] : []), '@odata.etag'],
        ),
      );
      return this.page(items, query, userSegment, rest, send, error);
    }
    // /messages/{id}/$value, /messages/{id}/move, /messages/{id}
    if (segments[0] === 'messages' && segments.length >= 2) {
      const found = messageBy(segments[1]!);
      const notFound = () => error(404, 'ErrorItemNotFound', 'The specified object was not found in the store.', false);
      if (segments[2] === '$value' && segments.length === 3) {
        if (method !== 'GET') return error(405, 'Request_BadRequest', `${method} not allowed`);
        if (!allow()) return;
        if (!found) return notFound();
        const msg = found.folder.messages[found.index]!;
        if (this.cutDownloads > 0) {
          this.cutDownloads--;
          res.writeHead(200, { 'content-type': 'text/plain' });
          res.write(msg.raw.subarray(0, Math.floor(msg.raw.length / 2)));
          res.socket?.destroy();
          return;
        }
        res.writeHead(200, { 'content-type': 'text/plain' });
        res.end(msg.raw);
        return;
      }
      if (segments[2] === 'move' && segments.length === 3) {
        if (method !== 'POST') return error(405, 'Request_BadRequest', `${method} not allowed`);
        if (!allow()) return;
        const b = jsonBody();
        if (!b) return;
        if (typeof b.destinationId !== 'string' || Object.keys(b).length !== 1)
          return error(400, 'ErrorInvalidRequest', 'destinationId is required, alone');
        const dest = folderBy(b.destinationId);
        if (!dest) return error(404, 'ErrorItemNotFound', 'The destination folder was not found.', false);
        if (!found) return notFound();
        const [msg] = found.folder.messages.splice(found.index, 1);
        // A moved item gets a new id in its new folder.
        const moved = { ...msg!, id: newId('M') };
        dest.messages.push(moved);
        return send(201, { id: moved.id, receivedDateTime: moved.receivedDateTime, parentFolderId: dest.id, isRead: moved.isRead });
      }
      if (segments.length === 2) {
        if (method !== 'PATCH') return error(405, 'Request_BadRequest', `${method} not allowed`);
        if (!allow()) return;
        const b = jsonBody();
        if (!b) return;
        if (Object.keys(b).some((k) => k !== 'isRead') || typeof b.isRead !== 'boolean')
          return error(400, 'ErrorInvalidRequest', 'only isRead is updated here');
        if (!found) return notFound();
        const msg = found.folder.messages[found.index]!;
        msg.isRead = b.isRead;
        return send(200, { id: msg.id, isRead: msg.isRead });
      }
    }
    error(400, 'BadRequest', `Resource not found for the segment '${rest}'.`);
  }

  /** A page of `items` by $top (default 10, at most 1000) and $skip, with @odata.nextLink when more follow. */
  private page(
    items: unknown[],
    query: Record<string, string>,
    userSegment: string,
    rest: string,
    send: (status: number, obj?: unknown) => void,
    error: (status: number, code: string, message: string) => void,
  ): void {
    const top = query.$top === undefined ? 10 : Number(query.$top);
    if (!Number.isInteger(top) || top < 1 || top > 1000) return error(400, 'ErrorInvalidArgument', `$top ${query.$top}: 1 to 1000`);
    const skip = query.$skip === undefined ? 0 : Number(query.$skip);
    if (!Number.isInteger(skip) || skip < 0) return error(400, 'BadRequest', `$skip ${query.$skip}`);
    const page = items.slice(skip, skip + top);
    const out: Record<string, unknown> = { '@odata.context': `${this.url}/$metadata#Collection`, value: page };
    if (skip + top < items.length) {
      const next = Object.entries({ ...query, $skip: String(skip + top) })
        .map(([k, v]) => `${k}=${encodeURIComponent(v)}`)
        .join('&');
      out['@odata.nextLink'] = `${this.url}/users/${userSegment}${rest}?${next}`;
    }
    send(200, out);
  }
}

function safeDecode(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

/** An id in the shape of Exchange's: standard base64 of random bytes, so "+", "/" and "=" occur. */
function newId(kind: 'F' | 'M'): string {
  return `AAMkA${kind}${crypto.randomBytes(kind === 'M' ? 100 : 40).toString('base64')}`;
}
