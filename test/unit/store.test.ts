import assert from 'node:assert/strict';
import path from 'node:path';
import { describe, it } from 'node:test';
import Database from 'better-sqlite3';
import { openDb } from '../../src/store/db.js';
import { loadMigrations, migrate } from '../../src/store/migrate.js';
import { expandPaths } from '../../src/sources/files.js';
import { bufferInput, count, fixture, FIXTURES, freshStore, ingestFile, tempDir } from '../helpers/common.js';
import { dmarcXml, record } from '../helpers/synth.js';

describe('database', () => {
  it('applies the migrations once, records them, and uses WAL', () => {
    const file = path.join(tempDir(), 'm.sqlite');
    const db = openDb(file);
    const ids = loadMigrations().map((m) => m.id);
    assert.deepEqual(
      (db.prepare('SELECT id FROM schema_migrations ORDER BY id').all() as { id: number }[]).map((r) => r.id),
      ids,
    );
    assert.equal(db.pragma('journal_mode', { simple: true }), 'wal');
    assert.deepEqual(migrate(db), []);
    db.close();
  });

  it('makes committed reports durable before an acknowledgement without changing the position', async () => {
    const { MailboxStore } = await import('../../src/store/mailboxes.js');
    const file = path.join(tempDir(), 'd.sqlite');
    const db = openDb(file);
    const boxes = new MailboxStore(db);
    boxes.makeDurable('dmarc', 'INBOX', 7); // no position yet: the first batch of a mailbox
    assert.deepEqual(boxes.position('dmarc', 'INBOX', 7), { uidvalidity: 7, lastUid: 0 });
    boxes.savePosition('dmarc', 'INBOX', { uidvalidity: 7, lastUid: 42 });
    boxes.makeDurable('dmarc', 'INBOX', 7);
    assert.deepEqual(boxes.position('dmarc', 'INBOX', 7), { uidvalidity: 7, lastUid: 42 });
    assert.equal(db.pragma('synchronous', { simple: true }), 1); // back to NORMAL
    db.close();
  });

  it('refuses a database that knows a migration this code does not', () => {
    const file = path.join(tempDir(), 'future.sqlite');
    openDb(file).close();
    const raw = new Database(file);
    raw.prepare('INSERT INTO schema_migrations (id, name, applied_at) VALUES (9999, ?, 0)').run('9999_future.sql');
    raw.close();
    assert.throws(() => openDb(file), /migration\(s\) 9999 that this version of ruawatch does not know/);
  });

  it('stores a report once whatever form it arrives in: xml, gzip, zip, double gzip', async () => {
    const { db, ingestor } = freshStore();
    const forms = ['tierpod_test.xml', 'tierpod_test.xml.gz', 'tierpod_test.xml.zip', 'tierpod_test.xml.gz.gz'];
    const statuses: string[] = [];
    for (const f of forms) statuses.push(...(await ingestFile(ingestor, fixture(`dmarc-aggregate/${f}`))).leaves.map((l) => l.status));
    assert.deepEqual(statuses, ['stored', 'duplicate', 'duplicate', 'duplicate']);
    assert.equal(count(db, 'SELECT COUNT(*) FROM reports'), 1);
    assert.equal(count(db, 'SELECT COUNT(*) FROM dmarc_records'), 2);
    const sha = db.prepare('SELECT raw_sha256, raw_size FROM reports').get() as { raw_sha256: string; raw_size: number };
    const { createHash } = await import('node:crypto');
    const { readFileSync } = await import('node:fs');
    const bytes = readFileSync(fixture('dmarc-aggregate/tierpod_test.xml'));
    assert.deepEqual([sha.raw_sha256, sha.raw_size], [createHash('sha256').update(bytes).digest('hex'), bytes.length]);
  });

  it('stores every record in order under consecutive ids, whatever the count (several to a statement, buffered or streamed)', async () => {
    const { db, ingestor } = freshStore();
    const ip = (i: number) => `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`;
    for (const n of [1, 9, 10, 11, 23, 5003, 5013]) {
      const records = Array.from({ length: n }, (_, i) => record({ ip: ip(i), count: (i % 7) + 1 }));
      const result = await ingestor.ingest(bufferInput(`n${n}.xml`, dmarcXml({ reportId: `n${n}`, records })));
      assert.deepEqual(
        result.leaves.map((l) => l.status),
        ['stored'],
      );
      const id = count(db, 'SELECT id FROM reports WHERE report_id = ?', `n${n}`);
      const rows = db.prepare('SELECT id, source_ip AS ip, count FROM dmarc_records WHERE report_id = ? ORDER BY id').all(id) as {
        id: number;
        ip: string;
        count: number;
      }[];
      assert.equal(rows.length, n);
      assert.equal(rows[n - 1]!.id - rows[0]!.id + 1, n, 'consecutive ids');
      rows.forEach((r, i) => assert.deepEqual([r.ip, r.count], [ip(i), (i % 7) + 1], `record ${i} of ${n}`));
      const messages = rows.reduce((sum, r) => sum + r.count, 0);
      assert.equal(count(db, 'SELECT message_count FROM reports WHERE id = ?', id), messages);
    }
    // Every record is its source's first and only one: a report counted once per source, messages all there.
    assert.equal(count(db, 'SELECT SUM(reports) FROM dmarc_daily'), 1 + 9 + 10 + 11 + 23 + 5003 + 5013);
    assert.equal(
      count(db, 'SELECT CAST(round(SUM(messages)) AS INTEGER) FROM dmarc_daily'),
      count(db, 'SELECT SUM(count) FROM dmarc_records'),
    );
  });

  it('keeps DKIM and SPF results and reasons per record', async () => {
    const { db, ingestor } = freshStore();
    await ingestFile(ingestor, fixture('dmarc-aggregate/mailauth_feedback_003.xml'));
    assert.ok(count(db, 'SELECT COUNT(*) FROM dmarc_records, json_each(dkim_results)') > count(db, 'SELECT COUNT(*) FROM dmarc_records'));
    assert.equal(count(db, "SELECT COUNT(*) FROM dmarc_records, json_each(reasons) r WHERE r.value ->> 'type' = 'trusted_forwarder'"), 3);
    const selectors = db
      .prepare("SELECT d.value ->> 'selector' AS s, COUNT(*) AS n FROM dmarc_records, json_each(dkim_results) d GROUP BY s ORDER BY s")
      .all();
    assert.deepEqual(selectors, [
      { s: '6gbrjpgwjskckoa6a5zn6fwqkn67xbtw', n: 1 },
      { s: 'dkim-1', n: 3 },
      { s: 'kvoujh5guu2jpweurhpt2ioscpkpukc3', n: 1 },
    ]);
  });

  it('writes DKIM and SPF results as JSON arrays of objects with their keys in a fixed order, escapes included', async () => {
    const { db, ingestor } = freshStore();
    const odd =
      '<dkim><domain>example.com</domain><selector>q"uote\\back&lt;\u2028é</selector><result>fail</result><human_result>a\tb</human_result></dkim>';
    await ingestor.ingest(bufferInput('odd.xml', dmarcXml({ records: [record({ extra: odd })] })));
    for await (const input of expandPaths([FIXTURES], 1 << 30)) await ingestor.ingest(input);
    const rows = db.prepare('SELECT dkim_results AS dkim, spf_results AS spf FROM dmarc_records').all() as { dkim: string; spf: string }[];
    assert.ok(rows.length > 2000, `${rows.length} records`);
    let results = 0;
    for (const row of rows) {
      for (const [text, keys] of [
        [row.dkim, 'domain,selector,result,human_result'],
        [row.spf, 'domain,scope,result,human_result'],
      ] as const) {
        const parsed = JSON.parse(text) as Record<string, unknown>[];
        assert.equal(text, JSON.stringify(parsed));
        for (const r of parsed) assert.equal(Object.keys(r).join(), keys);
        results += parsed.length;
      }
    }
    assert.ok(results > rows.length, `${results} results`);
    const selectors = db
      .prepare(
        "SELECT d.value ->> 'selector' AS s FROM dmarc_records, json_each(dkim_results) d WHERE d.value ->> 'result' = 'fail' AND d.value ->> 'selector' LIKE 'q%'",
      )
      .all();
    assert.deepEqual(selectors, [{ s: 'q"uote\\back<\u2028é' }]);
  });
});
