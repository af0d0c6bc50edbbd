/**
 * The budgets of one input over its whole tree (unpack/limits.ts): decompressed bytes, leaves
 * (archive entries and mail parts) and reports. Past one, the input is refused whole with E_LIMIT.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Leaf } from '../../src/pipeline/ingest.js';
import { decide } from '../../src/pipeline/mailbox.js';
import { defaultLimits, type Limits } from '../../src/unpack/limits.js';
import { bufferInput, count, freshStore } from '../helpers/common.js';
import { base64Lines, dmarcXml, gzip, mail, nestedZip, record, zip } from '../helpers/synth.js';

async function ingest(name: string, bytes: string | Buffer, limits: Limits = defaultLimits) {
  const { db, ingestor } = freshStore(limits);
  const started = process.hrtime.bigint();
  const result = await ingestor.ingest(bufferInput(name, bytes));
  return { db, leaves: result.leaves, ms: Number(process.hrtime.bigint() - started) / 1e6 };
}

/** The last leaf refuses the whole input, naming the budget's setting. */
function assertRefused(leaves: Leaf[], name: string, setting: string): void {
  const last = leaves[leaves.length - 1]!;
  assert.deepEqual(
    {
      input: last.input,
      status: last.status,
      code: last.status === 'failed' ? last.code : '',
      scope: last.status === 'failed' ? last.scope : '',
    },
    { input: name, status: 'failed', code: 'E_LIMIT', scope: 'input' },
    JSON.stringify(leaves.slice(-3)),
  );
  assert.match(last.status === 'failed' ? last.error : '', new RegExp(`\\(limit: \\[limits\\] ${setting}\\)$`));
}

function attached(files: Buffer[], name = (i: number) => `r${i}.xml.gz`): string {
  return mail(
    files.map((f, i) => ({
      headers: `Content-Type: application/gzip\r\nContent-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename="${name(i)}"`,
      body: base64Lines(f),
    })),
  );
}

describe('the budget of one input', () => {
  it('refuses zips of zips (4 levels of 100 entries: 10^8 reports) when the second listing passes max_input_leaves, before storing anything', async () => {
    const bomb = nestedZip(4, 100, dmarcXml({ reportId: 'amplified' }));
    assert.ok(bomb.length < 1024 * 1024, `${bomb.length} bytes`);
    const m = attached([bomb], () => 'reports.zip');
    const { db, leaves, ms } = await ingest('amplified.eml', m);
    assert.equal(leaves.length, 1, JSON.stringify(leaves));
    assertRefused(leaves, 'amplified.eml', 'max_input_leaves');
    assert.match(
      leaves[0]!.status === 'failed' ? leaves[0]!.error : '',
      /^the input holds more than 200 archive entries and mail parts in all \(a zip archive of 100 entries brings it to 201\)/,
    );
    assert.equal(count(db, 'SELECT COUNT(*) FROM reports'), 0);
    assert.ok(ms < 10_000, `${ms} ms`);
    // The budget is the input's: the same tree as a plain file is refused the same way.
    assertRefused((await ingest('amplified.zip', bomb)).leaves, 'amplified.zip', 'max_input_leaves');
  });

  it('refuses a mail of 10,000 report parts as soon as it is parsed', async () => {
    const part = gzip(dmarcXml({ reportId: 'one-of-many' }));
    const m = attached(Array<Buffer>(10_000).fill(part));
    const { db, leaves } = await ingest('many.eml', m);
    assert.equal(leaves.length, 1, JSON.stringify(leaves.slice(0, 3)));
    assertRefused(leaves, 'many.eml', 'max_input_leaves');
    assert.match(leaves[0]!.status === 'failed' ? leaves[0]!.error : '', /a mail of 10000 parts brings it to 10000/);
    assert.equal(count(db, 'SELECT COUNT(*) FROM reports'), 0);
  });

  it('refuses the report past max_input_reports; those before it stay stored, and are said to be', async () => {
    const parts = Array.from({ length: 5 }, (_, i) => gzip(dmarcXml({ reportId: `r${i}` })));
    const limits = { ...defaultLimits, maxInputReports: 3 };
    const { db, leaves } = await ingest('five.eml', attached(parts), limits);
    assert.deepEqual(
      leaves.map((l) => [l.input, l.status]),
      [
        ['five.eml#r0.xml.gz', 'stored'],
        ['five.eml#r1.xml.gz', 'stored'],
        ['five.eml#r2.xml.gz', 'stored'],
        ['five.eml', 'failed'],
      ],
    );
    assertRefused(leaves, 'five.eml', 'max_input_reports');
    assert.equal(count(db, 'SELECT COUNT(*) FROM reports'), 3);
    // Three reports are within it.
    assert.deepEqual(
      (await ingest('three.eml', attached(parts.slice(0, 3)), limits)).leaves.map((l) => l.status),
      ['stored', 'stored', 'stored'],
    );
  });

  it('refuses once the bytes out of every decompressor together pass max_input_decompressed_bytes', async () => {
    // Three reports of ~500 KB each, each well within max_decompressed_bytes; a gzip inside a zip
    // counts the zip entry's bytes (the gzip file) and then the gzip's, as the work it is.
    const big = (id: string) =>
      dmarcXml({ reportId: id, records: Array.from({ length: 1200 }, (_, i) => record({ ip: `10.1.${i >> 8}.${i & 255}` })) });
    const z = zip({ 'a.xml': big('a'), 'b.xml.gz': gzip(big('b')), 'c.xml': big('c') });
    const size = Buffer.byteLength(big('a'));
    assert.ok(size > 400_000 && size < 600_000, `${size}`);
    const limits = { ...defaultLimits, maxInputDecompressedBytes: Math.floor(size * 2.5) };
    const { db, leaves } = await ingest('bytes.zip', z, limits);
    assert.deepEqual(
      leaves.map((l) => [l.input, l.status]),
      [
        ['bytes.zip#a.xml', 'stored'],
        ['bytes.zip#b.xml.gz', 'stored'],
        ['bytes.zip', 'failed'],
      ],
    );
    assertRefused(leaves, 'bytes.zip', 'max_input_decompressed_bytes');
    assert.match(leaves[2]!.status === 'failed' ? leaves[2]!.error : '', /^the input decompresses to more than .* in all/);
    assert.equal(count(db, 'SELECT COUNT(*) FROM reports'), 2);
    // With room for all of it, all three are stored.
    const roomy = { ...defaultLimits, maxInputDecompressedBytes: size * 5 };
    assert.deepEqual(
      (await ingest('bytes.zip', z, roomy)).leaves.map((l) => l.status),
      ['stored', 'stored', 'stored'],
    );
  });

  it('gives each message of an mbox a budget of its own', async () => {
    const limits = { ...defaultLimits, maxInputReports: 2 };
    const message = (n: number) =>
      `From sender@receiver.example Tue Nov 14 12:00:00 2023\n${attached([gzip(dmarcXml({ reportId: `m${n}a` })), gzip(dmarcXml({ reportId: `m${n}b` }))]).replace(/\r\n/g, '\n')}\n`;
    const { db, leaves } = await ingest('box.mbox', [1, 2, 3].map(message).join(''), limits);
    assert.deepEqual(
      leaves.map((l) => l.status),
      Array<string>(6).fill('stored'),
    );
    assert.equal(count(db, 'SELECT COUNT(*) FROM reports'), 6);
    // A message past its budget is refused alone.
    const third = `From sender@receiver.example Tue Nov 14 12:00:00 2023\n${attached([1, 2, 3].map((k) => gzip(dmarcXml({ reportId: `x${k}` })))).replace(/\r\n/g, '\n')}\n`;
    const mixed = await ingest('box.mbox', message(1) + third, limits);
    assert.deepEqual(
      mixed.leaves.map((l) => [l.input, l.status]),
      [
        ['box.mbox#1#r0.xml.gz', 'stored'],
        ['box.mbox#1#r1.xml.gz', 'stored'],
        ['box.mbox#2#r0.xml.gz', 'stored'],
        ['box.mbox#2#r1.xml.gz', 'stored'],
        ['box.mbox#2', 'failed'],
      ],
    );
  });

  it('sends a mail refused by its budget to Invalid even with reports stored before, and a mail whose report lost to an earlier one to Processed', () => {
    const stored: Leaf = { input: 'box:1#a.xml', status: 'stored', kind: 'dmarc', records: 1 };
    const refused: Leaf = { input: 'box:1', status: 'failed', code: 'E_LIMIT', error: 'too many', scope: 'input' };
    assert.deepEqual(decide([stored, refused]), { to: 'invalid', reason: 'too many [E_LIMIT]' });
    // A failed piece of a mail that also held a report is not a refusal of the mail.
    assert.deepEqual(decide([stored, { ...refused, scope: undefined }]), { to: 'processed' });
    const conflict: Leaf = { input: 'box:2', status: 'conflict', kind: 'dmarc', storedInput: 'box:1', reporter: 'r', reportId: 'id' };
    assert.deepEqual(decide([conflict]), { to: 'processed' });
  });
});
