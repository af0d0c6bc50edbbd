import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import path from 'node:path';
import { describe, it } from 'node:test';
import { pathToFileURL } from 'node:url';
import { openDb } from '../src/store/db.js';
import { loadMigrations } from '../src/store/migrate.js';
import { ROOT, tempDir } from './helpers/common.js';

/**
 * Two ruawatch processes opening a database at the same moment (a cron `fetch` started beside
 * `ruawatch run`, just after an upgrade) both see migrations to apply. Only one may apply each; the
 * other must find it applied and go on, not fail with "table ... already exists".
 */
const DB_MODULE = pathToFileURL(path.join(ROOT, 'dist/src/store/db.js')).href;

/** Opens `file` at wall-clock time `at` (ms), so that the processes start their migrations together. */
function opener(file: string, at: number): Promise<{ code: number | null; stderr: string }> {
  const script = `
    const { openDb } = await import(${JSON.stringify(DB_MODULE)});
    while (Date.now() < ${at}) {}
    openDb(${JSON.stringify(file)}).close();`;
  return new Promise((resolve) => {
    const p = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    p.on('close', (code) => resolve({ code, stderr }));
  });
}

describe('migrations from several processes at once', () => {
  it('each migration is applied once, and every process opens the database', async () => {
    const dir = tempDir();
    for (let round = 0; round < 6; round++) {
      const file = path.join(dir, `race-${round}.sqlite`);
      // Far enough ahead for four Node processes to have started and loaded the module.
      const at = Date.now() + 1500;
      const results = await Promise.all([0, 1, 2, 3].map(() => opener(file, at)));
      for (const r of results) assert.equal(r.code, 0, `round ${round}: ${r.stderr}`);
      const db = openDb(file);
      const ids = (db.prepare('SELECT id FROM schema_migrations ORDER BY id').all() as { id: number }[]).map((r) => r.id);
      db.close();
      assert.deepEqual(
        ids,
        loadMigrations().map((m) => m.id),
      );
    }
  });
});
