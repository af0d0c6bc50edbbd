import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { openApp } from '../../src/app.js';
import { configSchema } from '../../src/config/schema.js';
import { createLogger } from '../../src/log.js';
import { runCli } from '../helpers/cli.js';
import { ROOT, count, freshStore, tempDir } from '../helpers/common.js';
import { D0, dayIso, ingestDays } from '../helpers/scenario.js';

/** Every .ts file under src/, relative to the root. */
function sources(dir = path.join(ROOT, 'src')): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) return sources(p);
    return e.name.endsWith('.ts') ? [path.relative(ROOT, p)] : [];
  });
}

describe('one composition root', () => {
  it('the database, stores, ingestor, pool, mailboxes, channels and reverse DNS are made in src/app.ts only', () => {
    // Calls, not definitions. The ingest worker thread opens its own connection and ingestor: a
    // thread shares nothing but the write lock.
    const made = /new (Ingestor|ReportStore|MailboxStore)\(|\b(poolFor|channelsOf|systemReverseLookup|mailboxesOf|openDb)\(/;
    const found: string[] = [];
    for (const file of sources()) {
      const lines = fs.readFileSync(path.join(ROOT, file), 'utf8').split('\n');
      lines.forEach((line, i) => {
        if (made.test(line) && !/function \w+\(/.test(line) && !line.trim().startsWith('*') && !line.trim().startsWith('//')) {
          found.push(`${file}:${i + 1}`);
        }
      });
    }
    const outside = found.filter((f) => !f.startsWith('src/app.ts:') && !f.startsWith('src/pipeline/pool-worker.ts:'));
    assert.deepEqual(outside, []);
    assert.ok(found.some((f) => f.startsWith('src/app.ts:')));
  });

  it('opens nothing it is not asked for, and closes what it opened (a database handed in stays open)', async () => {
    const file = path.join(tempDir(), 'sub', 'r.sqlite');
    const app = openApp(configSchema.parse({}), { db: file, log: createLogger('silent') });
    assert.equal(app.channels().length, 0);
    assert.equal(app.mailboxes().length, 0);
    await app.close();
    assert.ok(!fs.existsSync(file), 'a command that uses no database created one');
    const store = freshStore();
    const mine = openApp(configSchema.parse({}), { db: store.db, log: createLogger('silent') });
    assert.equal(mine.dbFile, store.file);
    assert.equal(mine.ingestor, mine.ingestor);
    await mine.close();
    assert.equal(count(store.db, 'SELECT COUNT(*) FROM reports'), 0);
    store.db.close();
  });

  it('runs a command in process with the parts a test puts in: alerts --dry-run names sources and writes nothing', async () => {
    const store = freshStore();
    await ingestDays(store, 0, 34);
    store.db.close();
    const before = fs.readFileSync(store.file);
    const asked: string[] = [];
    const lookup = async (ip: string) => {
      asked.push(ip);
      return ip === '198.51.100.20' ? 'out.esp.example' : null;
    };
    const r = await runCli(['alerts', '--db', store.file, '--at', dayIso(D0 + 34), '--dry-run', '--json'], {}, { lookup });
    assert.equal(r.code, 0, r.stderr);
    const { findings } = JSON.parse(r.stdout) as { findings: { summary: string }[] };
    assert.ok(asked.includes('198.51.100.20'));
    assert.ok(findings.some((f) => /198\.51\.100\.20 \([^\n]*out\.esp\.example/.test(f.summary)));
    assert.ok(fs.readFileSync(store.file).equals(before), 'the dry run changed the database file');
  });
});
