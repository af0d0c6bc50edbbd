import {
  MailboxError,
  type Destination,
  type Mailbox,
  type MailboxSession,
  type WaitingMessage,
  type Watcher,
} from '../../src/pipeline/mailbox.js';

export type FakeEvent =
  | { op: 'open' }
  | { op: 'list'; after: number }
  | { op: 'download'; ids: string[] }
  | { op: 'acknowledge'; ids: string[]; to: Destination }
  | { op: 'close' }
  | { op: 'destroy' };

/**
 * Where a call fails: the error to throw at the Nth call of that method (1-based, counted over all
 * sessions), or 'hang': the call never answers, until the session is destroyed (a frozen server).
 */
export type FakeFault = { op: 'open' | 'list' | 'download' | 'acknowledge'; at: number; error: Error | 'hang' };

/** A dropped connection, as an adapter reports it. */
export function dropped(what = 'connection reset'): MailboxError {
  return new MailboxError('E_IMAP', `mailbox fake: ${what}`, { retryable: true });
}

/**
 * A mailbox held in memory, for the acknowledge-after-commit loop: a folder of messages by UID,
 * the destination folders, an epoch (UIDVALIDITY) that a test may change, faults to inject, and a
 * log of every call in order.
 */
export class FakeMailbox implements Mailbox {
  readonly name: string;
  readonly folder = 'INBOX';
  epoch = 1;
  readonly inbox = new Map<number, Buffer>();
  readonly processed: number[] = [];
  readonly invalid: number[] = [];
  readonly events: FakeEvent[] = [];
  faults: FakeFault[] = [];
  /** Called at each acknowledgement, before the messages move (to look at the database then). */
  onAcknowledge: ((ids: string[], to: Destination) => void) | null = null;
  /** Messages the server lists but no longer returns when downloaded (moved away meanwhile). */
  readonly vanishing = new Set<number>();
  /** mark_seen_only: messages stay in the folder, flagged. */
  readonly seen = new Set<number>();
  markSeenOnly = false;
  private readonly calls = new Map<string, number>();
  private nextUid = 1;

  constructor(name = 'fake') {
    this.name = name;
  }

  add(raw: string | Buffer): number {
    const uid = this.nextUid++;
    this.inbox.set(uid, typeof raw === 'string' ? Buffer.from(raw) : raw);
    return uid;
  }

  /** The fault planned for this call, if any. */
  fault(op: FakeFault['op']): FakeFault['error'] | null {
    const n = (this.calls.get(op) ?? 0) + 1;
    this.calls.set(op, n);
    return this.faults.find((x) => x.op === op && x.at === n)?.error ?? null;
  }

  open(signal?: AbortSignal): Promise<MailboxSession> {
    this.events.push({ op: 'open' });
    const f = this.fault('open');
    if (f === 'hang') return new Promise((_, reject) => signal?.addEventListener('abort', () => reject(dropped('connection closed'))));
    if (f) return Promise.reject(f);
    return Promise.resolve(new FakeSession(this));
  }

  watch(): Watcher {
    return { stop: () => Promise.resolve() };
  }
}

class FakeSession implements MailboxSession {
  readonly epoch: number;
  private dead = false;
  private onDestroy: (() => void) | null = null;
  constructor(private readonly box: FakeMailbox) {
    this.epoch = box.epoch;
  }

  async list(after: number): Promise<WaitingMessage[]> {
    await this.tick('list');
    this.box.events.push({ op: 'list', after });
    return [...this.box.inbox.entries()]
      .filter(([uid]) => uid > after)
      .sort(([a], [b]) => a - b)
      .map(([uid, raw]) => ({ id: String(uid), order: uid, size: raw.length }));
  }

  async download(ids: string[]): Promise<Map<string, Buffer>> {
    await this.tick('download');
    this.box.events.push({ op: 'download', ids });
    const out = new Map<string, Buffer>();
    for (const id of ids) {
      const raw = this.box.inbox.get(Number(id));
      if (raw && !this.box.vanishing.has(Number(id))) out.set(id, raw);
    }
    return out;
  }

  async acknowledge(ids: string[], to: Destination): Promise<void> {
    await this.tick('acknowledge');
    this.box.onAcknowledge?.(ids, to);
    this.box.events.push({ op: 'acknowledge', ids, to });
    for (const id of ids) {
      const uid = Number(id);
      if (!this.box.inbox.has(uid)) throw new Error(`acknowledging ${uid}, which is not in the folder`);
      if (this.box.markSeenOnly) {
        this.box.seen.add(uid);
        continue;
      }
      this.box.inbox.delete(uid);
      (to === 'processed' ? this.box.processed : this.box.invalid).push(uid);
    }
  }

  close(): Promise<void> {
    this.box.events.push({ op: 'close' });
    this.dead = true;
    return Promise.resolve();
  }

  destroy(): void {
    if (this.dead) return;
    this.box.events.push({ op: 'destroy' });
    this.dead = true;
    this.onDestroy?.();
  }

  /** A call on a destroyed session fails as a dropped connection would; a planned fault fires. */
  private async tick(op: FakeFault['op']): Promise<void> {
    await Promise.resolve();
    if (this.dead) throw dropped('the session was closed');
    const f = this.box.fault(op);
    if (f === 'hang') {
      await new Promise<void>((resolve) => (this.onDestroy = resolve));
      throw dropped('the session was closed');
    }
    if (f) throw f;
  }
}
