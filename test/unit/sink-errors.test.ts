/**
 * The store failing while a report is read (the database locked by another process, or full) is
 * an infrastructure failure, tried again later, for every kind of report: never relabelled as a
 * fault of the report, which would send a good report mail to the Invalid folder.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { describe, it } from 'node:test';
import Database from 'better-sqlite3';
import { isInfrastructure } from '../../src/errors.js';
import { bufferInput, count, fixture, freshStore } from '../helpers/common.js';
import { dmarcXml, record } from '../helpers/synth.js';

/** More records than a report writer buffers (5,000), so its transaction opens while it is still parsed. */
const bigAggregate = dmarcXml({ records: Array.from({ length: 6000 }, (_, i) => record({ ip: `10.2.${i >> 8}.${i & 255}` })) });

/** A TLS report with enough failure details to need new database pages. */
function bigTls(): string {
  const doc = JSON.parse(fs.readFileSync(fixture('tlsrpt/drv_microsoft.json'), 'utf8')) as {
    policies: { 'failure-details'?: unknown[] }[];
  };
  doc.policies[0]!['failure-details'] = Array.from({ length: 2000 }, (_, i) => ({
    'result-type': 'certificate-expired',
    'sending-mta-ip': `192.0.2.${i & 255}`,
    'failed-session-count': 1,
    'additional-information': `detail ${i} ${'x'.repeat(200)}`,
  }));
  return JSON.stringify(doc);
}

/** An ARF failure report whose Authentication-Results is long enough to need new pages. */
function bigFailure(): string {
  return fs
    .readFileSync(fixture('failure/mailauth_arf_004.eml'), 'latin1')
    .replace(/^Authentication-Results: (.*)$/m, (_m, v: string) => `Authentication-Results: ${v}${' dkim=fail'.repeat(6000)}`);
}

const inputs: [kind: string, name: string, bytes: () => string][] = [
  ['aggregate', 'big.xml', () => bigAggregate],
  ['TLS', 'big.json', bigTls],
  ['failure', 'big.eml', bigFailure],
];

describe('errors of the store pass through the parsers', () => {
  for (const [kind, name, bytes] of inputs) {
    it(`an ${kind} report read while another process holds the database's write lock: SQLITE_BUSY, tried again later`, async () => {
      const { db, file, ingestor } = freshStore();
      db.pragma('busy_timeout = 0');
      const other = new Database(file);
      other.exec('BEGIN IMMEDIATE');
      try {
        const leaf = (await ingestor.ingest(bufferInput(name, bytes()))).leaves[0]!;
        assert.equal(leaf.status, 'failed', JSON.stringify(leaf));
        if (leaf.status !== 'failed') return;
        assert.equal(leaf.code, 'SQLITE_BUSY', leaf.error);
        assert.equal(leaf.error, 'database is locked');
        assert.ok(isInfrastructure(leaf.code));
      } finally {
        other.exec('ROLLBACK');
        other.close();
      }
      // Nothing half-written, nothing recorded against the input; and once free, it is stored.
      assert.equal(count(db, 'SELECT COUNT(*) FROM reports'), 0);
      assert.equal(count(db, 'SELECT COUNT(*) FROM ingest_failures'), 0);
      assert.deepEqual(
        (await ingestor.ingest(bufferInput(name, bytes()))).leaves.map((l) => l.status),
        ['stored'],
      );
    });

    it(`an ${kind} report read while the database is full: SQLITE_FULL, tried again later`, async () => {
      const { db, ingestor } = freshStore();
      const pages = db.pragma('page_count', { simple: true }) as number;
      db.pragma(`max_page_count = ${pages}`);
      const leaf = (await ingestor.ingest(bufferInput(name, bytes()))).leaves[0]!;
      assert.equal(leaf.status, 'failed', JSON.stringify(leaf));
      if (leaf.status !== 'failed') return;
      assert.equal(leaf.code, 'SQLITE_FULL', leaf.error);
      assert.ok(isInfrastructure(leaf.code));
      assert.equal(count(db, 'SELECT COUNT(*) FROM reports'), 0);
    });
  }
});
