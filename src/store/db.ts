import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { migrate } from './migrate.js';

export type Db = Database.Database;

/**
 * Opens (creating if needed) the SQLite database in WAL mode and brings its schema up to date.
 * WAL lets `ruawatch report` read while a long ingest writes; busy_timeout rides out the short
 * moments when two writers meet.
 */
export function openDb(file: string, opts: { migrate?: boolean } = {}): Db {
  if (file !== ':memory:') fs.mkdirSync(path.dirname(path.resolve(file)), { recursive: true });
  const created = file !== ':memory:' && !fs.existsSync(file);
  const db = new Database(file);
  try {
    db.pragma('journal_mode = WAL');
    db.pragma('synchronous = NORMAL');
    db.pragma('foreign_keys = ON');
    db.pragma('busy_timeout = 5000');
    // Ingest worker threads open a database their parent has already brought up to date.
    if (opts.migrate !== false) migrate(db);
  } catch (err) {
    db.close();
    // A database this call created and could not set up (a full disk) is not left behind empty.
    if (created) for (const suffix of ['', '-wal', '-shm']) fs.rmSync(`${file}${suffix}`, { force: true });
    throw err;
  }
  return db;
}
