import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { expectations } from '../helpers/fixture-expectations.js';
import { FIXTURES, count, freshStore, ingestFile } from '../helpers/common.js';

const FOLDERS = ['dmarc-aggregate', 'dmarc-eml', 'tlsrpt', 'failure'];
const files = FOLDERS.flatMap((d) =>
  fs
    .readdirSync(path.join(FIXTURES, d))
    .sort()
    .map((f) => `${d}/${f}`),
);

/**
 * Independent recount from the raw bytes: <record> elements and the sum of their <count>. A record
 * with neither a source IP nor messages is not stored, so not counted.
 */
function recountXml(text: string): { records: number; messages: number } {
  const all = text.match(/<([\w-]+:)?record[\s>][\s\S]*?<\/([\w-]+:)?record>/g) ?? [];
  const records = all.filter((r) => !/<([\w-]+:)?source_ip\s*(\/>|>\s*<)/.test(r) || !/<([\w-]+:)?count>\s*0*\s*</.test(r)).length;
  const messages = [...text.matchAll(/<([\w-]+:)?count>\s*(\d+)\s*</g)].reduce((a, m) => a + Number(m[2]), 0);
  return { records, messages };
}

/** Independent recount of a TLS report: policies and total sessions. */
function recountJson(text: string): { records: number; messages: number } {
  const doc = JSON.parse(text) as { policies: { summary?: Record<string, unknown> }[] };
  let messages = 0;
  for (const p of doc.policies) {
    messages += Number(p.summary?.['total-successful-session-count'] ?? 0) + Number(p.summary?.['total-failure-session-count'] ?? 0);
  }
  return { records: doc.policies.length, messages };
}

describe('every fixture has an expected outcome', () => {
  it('lists each fixture file exactly once', () => {
    assert.deepEqual(
      files.filter((f) => !(f in expectations)),
      [],
      'fixtures without an expectation',
    );
    assert.deepEqual(
      Object.keys(expectations).filter((f) => !files.includes(f)),
      [],
      'expectations without a fixture',
    );
  });

  for (const rel of files) {
    const want = expectations[rel];
    it(rel, async () => {
      assert.ok(want, 'no expectation');
      const { db, ingestor } = freshStore();
      const result = await ingestFile(ingestor, path.join(FIXTURES, rel));
      try {
        if ('stored' in want) {
          const got = result.leaves.map((l) => {
            assert.equal(l.status, 'stored', `${l.input}: ${JSON.stringify(l)}`);
            const row = db.prepare('SELECT kind, record_count, message_count FROM reports WHERE input = ?').get(l.input) as {
              kind: string;
              record_count: number;
              message_count: number;
            };
            return [row.kind, row.record_count, row.message_count];
          });
          assert.deepEqual(got, want.stored);
          // Cross-check plain XML and JSON against the bytes themselves.
          const raw = fs.readFileSync(path.join(FIXTURES, rel));
          const head = raw.subarray(0, 64).toString('latin1').trimStart();
          if (want.stored.length === 1 && want.stored[0]![0] === 'dmarc' && head.startsWith('<')) {
            const { records, messages } = recountXml(raw.toString('latin1'));
            assert.deepEqual([want.stored[0]![1], want.stored[0]![2]], [records, messages], 'recount from the raw XML');
          }
          if (want.stored[0]![0] === 'tlsrpt' && (head.startsWith('{') || head.startsWith('['))) {
            const { records, messages } = recountJson(raw.toString('utf8'));
            assert.deepEqual([want.stored[0]![1], want.stored[0]![2]], [records, messages], 'recount from the raw JSON');
          }
        } else if ('failed' in want) {
          assert.equal(result.leaves.length, 1);
          const leaf = result.leaves[0]!;
          assert.equal(leaf.status, 'failed', JSON.stringify(leaf));
          if (leaf.status !== 'failed') return;
          assert.equal(leaf.code, want.failed);
          assert.match(leaf.error, want.error);
          assert.equal(count(db, 'SELECT COUNT(*) FROM reports'), 0, 'nothing stored');
          const recorded = db.prepare('SELECT outcome, error_code, sha256, size FROM ingest_failures').get() as Record<string, unknown>;
          assert.equal(recorded.outcome, 'failed');
          assert.equal(recorded.error_code, want.failed);
          assert.equal(recorded.size, fs.statSync(path.join(FIXTURES, rel)).size);
          assert.match(String(recorded.sha256), /^[0-9a-f]{64}$/);
        } else {
          assert.equal(result.leaves.length, 1);
          const leaf = result.leaves[0]!;
          assert.equal(leaf.status, 'none', JSON.stringify(leaf));
          if (leaf.status !== 'none') return;
          assert.match(leaf.reason, want.skipped);
          assert.deepEqual(db.prepare('SELECT outcome, error_code FROM ingest_failures').get(), {
            outcome: 'skipped',
            error_code: 'E_NOT_REPORT',
          });
        }
      } finally {
        db.close();
      }
    });
  }
});
