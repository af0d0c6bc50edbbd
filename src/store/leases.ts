import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import type { Statement } from 'better-sqlite3';
import type { Db } from './db.js';

/**
 * Leases: which process is doing a piece of work that two must not do at once (reading a mailbox,
 * delivering a channel's queue). One row per piece of work, held by one process, renewed while it
 * works, taken over once it expired, or at once when its holder ran on this host and is gone.
 */

/** A process holding a lease. */
export interface LeaseHolder {
  id: string;
  host: string;
  pid: number;
  command: string;
}

export interface LeaseRow extends LeaseHolder {
  /** Epoch seconds. */
  acquiredAt: number;
  expiresAt: number;
}

/** The lease tables: mailbox_leases (migrations/0007) and channel_leases (0009), keyed by their first column. */
const TABLES = { mailbox_leases: 'mailbox', channel_leases: 'channel' } as const;
type Table = keyof typeof TABLES;

export class Leases<T extends Table> {
  private readonly get: Statement;
  private readonly put: Statement;
  private readonly extend: Statement;
  private readonly drop: Statement;

  constructor(
    private readonly db: Db,
    table: T,
    /** A lease not renewed for this long is stale and may be taken over. */
    private readonly seconds: number,
  ) {
    const key = TABLES[table];
    this.get = db.prepare(`SELECT ${key}, holder AS id, host, pid, command, acquired_at AS acquiredAt, expires_at AS expiresAt
      FROM ${table} WHERE ${key} = ?`);
    this.put = db.prepare(`INSERT INTO ${table} (${key}, holder, host, pid, command, acquired_at, expires_at)
      VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (${key}) DO UPDATE SET holder = excluded.holder, host = excluded.host,
        pid = excluded.pid, command = excluded.command, acquired_at = excluded.acquired_at, expires_at = excluded.expires_at`);
    this.extend = db.prepare(`UPDATE ${table} SET expires_at = ? WHERE ${key} = ? AND holder = ?`);
    this.drop = db.prepare(`DELETE FROM ${table} WHERE ${key} = ? AND holder = ?`);
  }

  /** Takes the lease of `name` for `holder`, unless another process holds it: then its lease is returned. */
  take(name: string, holder: LeaseHolder): { held: true } | { held: false; by: LeaseRow & Record<(typeof TABLES)[T], string> } {
    type Row = LeaseRow & Record<(typeof TABLES)[T], string>;
    return this.db
      .transaction((): { held: true } | { held: false; by: Row } => {
        const t = now();
        const current = this.get.get(name) as Row | undefined;
        if (current && current.id !== holder.id && current.expiresAt > t && !holderGone(current, holder))
          return { held: false, by: current };
        this.put.run(name, holder.id, holder.host, holder.pid, holder.command, t, t + this.seconds);
        return { held: true };
      })
      .immediate();
  }

  /** Extends the lease; false when this holder no longer has it (it expired and was taken over). */
  renew(name: string, holderId: string): boolean {
    return this.extend.run(now() + this.seconds, name, holderId).changes === 1;
  }

  release(name: string, holderId: string): void {
    this.drop.run(name, holderId);
  }

  lease(name: string): (LeaseRow & Record<(typeof TABLES)[T], string>) | null {
    return (this.get.get(name) as (LeaseRow & Record<(typeof TABLES)[T], string>) | undefined) ?? null;
  }
}

/** One id per process: a process that still holds a lease (its database failed) takes it up again. */
const PROCESS_ID = randomUUID();

/** This process as a lease holder. */
export function leaseHolder(command: string): LeaseHolder {
  return { id: PROCESS_ID, host: hostIdentity(), pid: process.pid, command };
}

/**
 * The host name, with the PID namespace when it can be read: two containers may share a host
 * name (and a database volume) but not their process ids.
 */
function hostIdentity(): string {
  let ns = '';
  try {
    ns = fs.readlinkSync('/proc/self/ns/pid');
  } catch {
    // not Linux, or /proc not mounted: the host name alone
  }
  return ns ? `${os.hostname()} ${ns}` : os.hostname();
}

/** True when the lease's holder ran here and its process no longer exists. */
function holderGone(lease: LeaseHolder, me: LeaseHolder): boolean {
  if (lease.host !== me.host || lease.pid === me.pid) return false;
  try {
    process.kill(lease.pid, 0);
    return false;
  } catch (err) {
    // EPERM: it exists, under another user.
    return (err as NodeJS.ErrnoException).code === 'ESRCH';
  }
}

function now(): number {
  return Math.floor(Date.now() / 1000);
}
