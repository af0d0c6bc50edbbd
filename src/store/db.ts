import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { RuawatchError, errorMessage } from '../errors.js';
import { migrate } from './migrate.js';

export type Db = Database.Database;

export interface OpenOptions {
  /** false: the caller knows the schema is current (ingest worker threads). */
  migrate?: boolean;
  /**
   * The database must already exist: commands that only read or judge what is stored (report,
   * alerts, digest) refuse a path that holds nothing rather than create an empty database there
   * and report "no reports" from it.
   */
  mustExist?: boolean;
}

/**
 * Opens (creating if needed) the SQLite database in WAL mode and brings its schema up to date.
 * WAL lets `ruawatch report` read while a long ingest writes; busy_timeout rides out the short
 * moments when two writers meet. Every error names the file.
 */
export function openDb(file: string, opts: OpenOptions = {}): Db {
  if (file !== ':memory:') prepareFolder(path.resolve(file), opts.mustExist ?? false);
  const created = file !== ':memory:' && !fs.existsSync(file);
  let db: Db;
  try {
    db = new Database(file, { fileMustExist: opts.mustExist ?? false });
  } catch (err) {
    throw dbError(file, err);
  }
  const fail = (err: unknown): never => {
    db.close();
    // A database this call created and could not set up for want of room is not left behind
    // empty. Only then: on any other failure another process may be using the file just created.
    if (created && isFull(err)) for (const suffix of ['', '-wal', '-shm']) fs.rmSync(`${file}${suffix}`, { force: true });
    throw dbError(file, err);
  };
  // Two processes creating or opening one database at the same moment: switching it to WAL
  // answers SQLITE_BUSY at once, without waiting for the busy timeout, while another connection
  // holds a lock on it, so the settings are tried again for a while.
  const deadline = Date.now() + BUSY_RETRY_MS;
  for (;;) {
    try {
      settings(db);
      break;
    } catch (err) {
      if (!isBusy(err) || Date.now() >= deadline) fail(err);
      pause(20 + Math.floor(Math.random() * 30));
    }
  }
  try {
    // Ingest worker threads open a database their parent has already brought up to date.
    if (opts.migrate !== false) migrate(db);
  } catch (err) {
    fail(err);
  }
  return db;
}

const BUSY_RETRY_MS = 5_000;

function settings(db: Db): void {
  // A new database gives the space of deleted rows back a step at a time (PRAGMA
  // incremental_vacuum, store/prune.ts); it must be set before WAL writes the first page. Only on
  // an empty file: on an existing database it changes nothing but still rewrites the header, and
  // a command that only reads (alerts --dry-run, report) must leave the file as it found it.
  if (db.pragma('page_count', { simple: true }) === 0) db.pragma('auto_vacuum = INCREMENTAL');
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = NORMAL');
  db.pragma('foreign_keys = ON');
  db.pragma('busy_timeout = 5000');
}

function sqliteCode(err: unknown): string {
  return err && typeof err === 'object' && 'code' in err && typeof err.code === 'string' ? err.code : '';
}

function isBusy(err: unknown): boolean {
  return /^SQLITE_(BUSY|LOCKED)/.test(sqliteCode(err));
}

function isFull(err: unknown): boolean {
  return /^SQLITE_FULL/.test(sqliteCode(err)) || /ENOSPC|disk is full/i.test(errorMessage(err));
}

/** Blocks the thread for `ms` (openDb is synchronous, as better-sqlite3 is). */
function pause(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

function dbError(file: string, err: unknown): RuawatchError {
  const sqlite = err && typeof err === 'object' && 'code' in err && typeof err.code === 'string' ? ` [${err.code}]` : '';
  let hint = '';
  if (/unable to open database file|readonly database|SQLITE_CANTOPEN|SQLITE_READONLY/i.test(`${errorMessage(err)}${sqlite}`)) {
    hint = ` (SQLite writes ${path.basename(file)}-wal and -shm beside it: the folder must be writable${uidNote()})`;
  } else if (/SQLITE_BUSY|database is locked/i.test(`${errorMessage(err)}${sqlite}`)) {
    // At open, the lock is almost always another ruawatch bringing the schema up to date, which on
    // a large database can take minutes (building the daily rollups of an older database).
    hint =
      ' (another process holds its write lock, for instance a ruawatch upgrading its schema, which can take minutes on a large database: try again when it is done)';
  }
  return new RuawatchError('E_DB', `database ${file}: ${errorMessage(err)}${sqlite}${hint}`, { cause: err });
}

function uidNote(): string {
  const uid = process.getuid?.();
  return uid === undefined ? '' : ` by uid ${uid}`;
}

/**
 * What opening the database `file` would do, found without creating or writing anything: whether
 * the file exists, and the folders that would be created for it. A path that cannot be used (a
 * folder that cannot be created or written, a file that cannot be read and written) is a
 * configuration error (E_CONFIG, exit 2) naming the file. `ruawatch config check` asks this; every
 * command that opens a database asks it first.
 */
export function checkDbPath(file: string, opts: { mustExist?: boolean } = {}): { exists: boolean; create: string[] } {
  const dir = path.dirname(file);
  const missing: string[] = [];
  let cur = dir;
  for (;;) {
    let st: fs.Stats;
    try {
      st = fs.statSync(cur);
    } catch (err) {
      // ENOTDIR: a file stands where a folder should; the walk up finds it and says so.
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== 'ENOENT' && code !== 'ENOTDIR') {
        throw new RuawatchError('E_CONFIG', `database ${file}: cannot use the folder ${cur}: ${errorMessage(err)}`);
      }
      missing.unshift(cur);
      const parent = path.dirname(cur);
      if (parent === cur) throw new RuawatchError('E_CONFIG', `database ${file}: no folder to create it in`);
      cur = parent;
      continue;
    }
    if (!st.isDirectory()) throw new RuawatchError('E_CONFIG', `database ${file}: ${cur} is not a folder`);
    break;
  }
  const exists = missing.length === 0 && fs.existsSync(file);
  if (opts.mustExist && !exists) throw noDatabase(file);
  if (opts.mustExist) return { exists, create: [] };
  // The folder that must be writable: the database's own, or the nearest one to create it in.
  try {
    fs.accessSync(cur, fs.constants.W_OK | fs.constants.X_OK);
  } catch (err) {
    throw new RuawatchError(
      'E_CONFIG',
      missing.length
        ? `database ${file}: cannot create the folder ${missing[0]}${uidNote()}: ${errorMessage(err)}`
        : `database ${file}: the folder ${dir} is not writable${uidNote()} (SQLite keeps its -wal and -shm files beside the database): ${errorMessage(err)}`,
    );
  }
  if (exists) {
    try {
      fs.accessSync(file, fs.constants.R_OK | fs.constants.W_OK);
    } catch (err) {
      throw new RuawatchError('E_CONFIG', `database ${file}: not readable and writable${uidNote()}: ${errorMessage(err)}`);
    }
  }
  return { exists, create: missing };
}

/**
 * Checks the database's folder and creates what is missing of it, one level at a time from the
 * nearest folder that exists. Node's recursive mkdir is not used: on a path it cannot create in
 * (under /proc, say) it retries forever.
 */
function prepareFolder(file: string, mustExist: boolean): void {
  const { create } = checkDbPath(file, { mustExist });
  for (const d of create) {
    try {
      fs.mkdirSync(d, { mode: 0o750 });
    } catch (err) {
      throw new RuawatchError('E_CONFIG', `database ${file}: cannot create the folder ${d}${uidNote()}: ${errorMessage(err)}`);
    }
  }
}

function noDatabase(file: string): RuawatchError {
  return new RuawatchError(
    'E_CONFIG',
    `no database at ${file}: nothing has been stored there yet. Point [database] path, --db or RUAWATCH_DB at the database ` +
      `ingest, fetch and run write to (a relative path in a config file is relative to that file's folder).`,
  );
}
