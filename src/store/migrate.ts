import fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import type Database from 'better-sqlite3';
import { RuawatchError } from '../errors.js';
import { buildRollups } from './rollups.js';

const MIGRATIONS_DIR = fileURLToPath(new URL('../../../migrations/', import.meta.url));
const NAME = /^(\d{4})_[a-z0-9_]+\.sql$/;

export interface Migration {
  id: number;
  name: string;
  sql: string;
}

export function loadMigrations(dir = MIGRATIONS_DIR): Migration[] {
  return fs
    .readdirSync(dir)
    .filter((f) => NAME.test(f))
    .sort()
    .map((f) => ({ id: Number(NAME.exec(f)![1]), name: f, sql: fs.readFileSync(`${dir}/${f}`, 'utf8') }));
}

/**
 * Work a migration needs that SQL alone cannot do well (filling new tables with progress on a
 * terminal), run in the migration's transaction right after its SQL. The SQL files stay the record
 * of the schema.
 */
export type MigrationStep = (db: Database.Database) => void;

export const MIGRATION_STEPS: Record<number, MigrationStep> = {
  4: (db) => buildRollups(db, terminalProgress('building the daily rollups', 'reports')),
};

/**
 * Applies pending migrations in order, each in its own transaction, recording what was applied.
 * Forward only; a database that knows a migration this code does not is refused, since an older
 * ruawatch writing to a newer schema could corrupt it.
 */
export function migrate(db: Database.Database, migrations = loadMigrations(), steps = MIGRATION_STEPS): number[] {
  db.exec(`CREATE TABLE IF NOT EXISTS schema_migrations (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)`);
  const applied = new Set((db.prepare('SELECT id FROM schema_migrations').all() as { id: number }[]).map((r) => r.id));
  const known = new Set(migrations.map((m) => m.id));
  const unknown = [...applied].filter((id) => !known.has(id));
  if (unknown.length) {
    throw new RuawatchError(
      'E_DB',
      `the database has migration(s) ${unknown.join(', ')} that this version of ruawatch does not know; upgrade ruawatch`,
    );
  }
  const done: number[] = [];
  const isApplied = db.prepare('SELECT 1 FROM schema_migrations WHERE id = ?');
  for (const m of migrations) {
    if (applied.has(m.id)) continue;
    // Another process opening the database at the same moment (a cron `fetch` beside `run`) may
    // have applied it since the list above was read. BEGIN IMMEDIATE takes the write lock first,
    // so looking again and applying are one step: the second process finds it applied and goes on.
    const ran = db
      .transaction(() => {
        if (isApplied.get(m.id)) return false;
        db.exec(m.sql);
        steps[m.id]?.(db);
        db.prepare('INSERT INTO schema_migrations (id, name, applied_at) VALUES (?, ?, ?)').run(
          m.id,
          m.name,
          Math.floor(Date.now() / 1000),
        );
        return true;
      })
      .immediate();
    if (ran) done.push(m.id);
  }
  return done;
}

/** A progress line on stderr, only when it is a terminal and the work is big enough to wait for. */
function terminalProgress(label: string, unit: string): ((done: number, total: number) => void) | undefined {
  const out = process.stderr;
  if (!out.isTTY) return undefined;
  let last = 0;
  let shown = false;
  return (done, total) => {
    const now = Date.now();
    if (done >= total) {
      if (shown) out.write('\r\x1b[2K');
      return;
    }
    if (total < 1000 || now - last < 200) return;
    last = now;
    shown = true;
    out.write(`\r${label}: ${done.toLocaleString('en-US')} of ${total.toLocaleString('en-US')} ${unit}`);
  };
}
