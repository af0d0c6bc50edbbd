import type { Statement } from 'better-sqlite3';
import type { Db } from './db.js';

export interface MailboxPosition {
  uidvalidity: number;
  lastUid: number;
}

/** Reading positions of the IMAP mailboxes, and which messages were acknowledged. */
export class MailboxStore {
  private readonly getState: Statement;
  private readonly putState: Statement;
  private readonly isHandled: Statement;
  private readonly putHandled: Statement;

  constructor(private readonly db: Db) {
    this.getState = db.prepare('SELECT uidvalidity, last_uid AS lastUid FROM mailbox_state WHERE mailbox = ? AND folder = ?');
    this.putState = db.prepare(`INSERT INTO mailbox_state (mailbox, folder, uidvalidity, last_uid, updated_at) VALUES (?, ?, ?, ?, ?)
      ON CONFLICT (mailbox) DO UPDATE SET folder = excluded.folder, uidvalidity = excluded.uidvalidity,
        last_uid = excluded.last_uid, updated_at = excluded.updated_at`);
    this.isHandled = db.prepare('SELECT 1 FROM mailbox_messages WHERE mailbox = ? AND uidvalidity = ? AND uid = ?');
    this.putHandled = db.prepare(`INSERT INTO mailbox_messages (mailbox, uidvalidity, uid, outcome, reason, handled_at)
      VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO UPDATE SET outcome = excluded.outcome, reason = excluded.reason`);
  }

  /**
   * Where to resume. A changed UIDVALIDITY (the folder was recreated, or the server renumbered)
   * starts again from the beginning; de-duplication makes the rescan harmless.
   */
  position(mailbox: string, folder: string, uidvalidity: number): MailboxPosition {
    const row = this.getState.get(mailbox, folder) as MailboxPosition | undefined;
    if (!row || row.uidvalidity !== uidvalidity) return { uidvalidity, lastUid: 0 };
    return row;
  }

  savePosition(mailbox: string, folder: string, pos: MailboxPosition): void {
    this.putState.run(mailbox, folder, pos.uidvalidity, pos.lastUid, now());
  }

  /**
   * db.ts runs SQLite with synchronous = NORMAL: a commit survives a crash of ruawatch at once, but a
   * crash of the machine only once the WAL file is synced. Before the server is told a batch of
   * messages is done with, this rewrites the position under synchronous = FULL: that commit syncs
   * the WAL file, and with it every report committed before. One sync per batch, not per report.
   */
  makeDurable(mailbox: string, folder: string, uidvalidity: number): void {
    const pos = this.position(mailbox, folder, uidvalidity);
    this.db.pragma('synchronous = FULL');
    try {
      this.savePosition(mailbox, folder, pos);
    } finally {
      this.db.pragma('synchronous = NORMAL');
    }
  }

  /** Runs fn in one transaction (the bookkeeping of one acknowledged batch). */
  transaction(fn: () => void): void {
    this.db.transaction(fn)();
  }

  handled(mailbox: string, uidvalidity: number, uid: number): boolean {
    return this.isHandled.get(mailbox, uidvalidity, uid) !== undefined;
  }

  markHandled(mailbox: string, uidvalidity: number, uid: number, outcome: 'processed' | 'invalid', reason: string | null): void {
    this.putHandled.run(mailbox, uidvalidity, uid, outcome, reason, now());
  }
}

function now(): number {
  return Math.floor(Date.now() / 1000);
}
