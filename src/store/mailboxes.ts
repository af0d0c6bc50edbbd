import type { Statement } from 'better-sqlite3';
import { databaseError } from '../errors.js';
import type { Db } from './db.js';
import { Leases, type LeaseHolder, type LeaseRow } from './leases.js';

export { leaseHolder } from './leases.js';

export interface MailboxPosition {
  uidvalidity: number;
  lastUid: number;
}

/** A process reading a mailbox. */
export type { LeaseHolder };

export interface Lease extends LeaseRow {
  mailbox: string;
}

/**
 * A lease not renewed for this long is stale and may be taken over. The holder renews it every
 * LEASE_RENEW_SECONDS while it reads (and before each acknowledgement), so only a process that
 * died, or hung for a minute, loses it.
 */
export const LEASE_SECONDS = 60;
export const LEASE_RENEW_SECONDS = 15;

/**
 * Reading positions of the mailboxes, which messages were acknowledged, and who is reading a
 * mailbox now. Every database error leaves as E_DB naming the database file.
 */
export class MailboxStore {
  /** The database file, for error messages. */
  readonly file: string;
  private readonly getState: Statement;
  private readonly putState: Statement;
  private readonly isHandled: Statement;
  private readonly putHandled: Statement;
  private readonly leases: Leases<'mailbox_leases'>;

  constructor(private readonly db: Db) {
    this.file = db.name;
    this.getState = db.prepare('SELECT uidvalidity, last_uid AS lastUid FROM mailbox_state WHERE mailbox = ? AND folder = ?');
    this.putState = db.prepare(`INSERT INTO mailbox_state (mailbox, folder, uidvalidity, last_uid, updated_at) VALUES (?, ?, ?, ?, ?)
      ON CONFLICT (mailbox) DO UPDATE SET folder = excluded.folder, uidvalidity = excluded.uidvalidity,
        last_uid = excluded.last_uid, updated_at = excluded.updated_at`);
    this.isHandled = db.prepare('SELECT 1 FROM mailbox_messages WHERE mailbox = ? AND uidvalidity = ? AND uid = ?');
    this.putHandled = db.prepare(`INSERT INTO mailbox_messages (mailbox, uidvalidity, uid, outcome, reason, handled_at)
      VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO UPDATE SET outcome = excluded.outcome, reason = excluded.reason`);
    this.leases = new Leases(db, 'mailbox_leases', LEASE_SECONDS);
  }

  /**
   * Where to resume. A changed UIDVALIDITY (the folder was recreated, or the server renumbered)
   * starts again from the beginning; de-duplication makes the rescan harmless.
   */
  position(mailbox: string, folder: string, uidvalidity: number): MailboxPosition {
    const row = this.guard(() => this.getState.get(mailbox, folder) as MailboxPosition | undefined);
    if (!row || row.uidvalidity !== uidvalidity) return { uidvalidity, lastUid: 0 };
    return row;
  }

  savePosition(mailbox: string, folder: string, pos: MailboxPosition): void {
    this.guard(() => this.putState.run(mailbox, folder, pos.uidvalidity, pos.lastUid, now()));
  }

  /**
   * db.ts runs SQLite with synchronous = NORMAL: a commit survives a crash of ruawatch at once, but a
   * crash of the machine only once the WAL file is synced. Before the server is told a batch of
   * messages is done with, this rewrites the position under synchronous = FULL: that commit syncs
   * the WAL file, and with it every report committed before. One sync per batch, not per report.
   */
  makeDurable(mailbox: string, folder: string, uidvalidity: number): void {
    const pos = this.position(mailbox, folder, uidvalidity);
    this.guard(() => {
      this.db.pragma('synchronous = FULL');
      try {
        this.savePosition(mailbox, folder, pos);
      } finally {
        this.db.pragma('synchronous = NORMAL');
      }
    });
  }

  /** Runs fn in one transaction (the bookkeeping of one acknowledged batch). */
  transaction(fn: () => void): void {
    this.guard(() => this.db.transaction(fn)());
  }

  /** Whether a message (by its id, an IMAP UID as text) was already acknowledged. */
  handled(mailbox: string, uidvalidity: number, id: string): boolean {
    // The column is INTEGER: an id of digits is compared, and stored, as the number it is.
    return this.guard(() => this.isHandled.get(mailbox, uidvalidity, id) !== undefined);
  }

  markHandled(mailbox: string, uidvalidity: number, id: string, outcome: 'processed' | 'invalid', reason: string | null): void {
    this.guard(() => this.putHandled.run(mailbox, uidvalidity, id, outcome, reason, now()));
  }

  /**
   * Takes the mailbox's lease for `holder`, unless another process holds it: then that lease is
   * returned. A lease is taken over once it expired, or at once when its holder ran on this host
   * (same host name and PID namespace) and that process is gone (killed, crashed).
   */
  takeLease(mailbox: string, holder: LeaseHolder): { held: true } | { held: false; by: Lease } {
    return this.guard(() => this.leases.take(mailbox, holder));
  }

  /** Extends the lease; false when this holder no longer has it (it expired and was taken over). */
  renewLease(mailbox: string, holderId: string): boolean {
    return this.guard(() => this.leases.renew(mailbox, holderId));
  }

  releaseLease(mailbox: string, holderId: string): void {
    this.guard(() => this.leases.release(mailbox, holderId));
  }

  lease(mailbox: string): Lease | null {
    return this.guard(() => this.leases.lease(mailbox));
  }

  private guard<T>(fn: () => T): T {
    try {
      return fn();
    } catch (err) {
      throw databaseError(this.file, err);
    }
  }
}

function now(): number {
  return Math.floor(Date.now() / 1000);
}
