import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { zipSync } from 'fflate';
import { defaultLimits } from '../../src/unpack/limits.js';
import { bufferInput, count, fixture, freshStore, tempDir } from '../helpers/common.js';
import { dmarcXml, gzip, gzipBomb, record, zip, zip64 } from '../helpers/synth.js';

async function ingestOne(name: string, bytes: Uint8Array | string) {
  const { db, ingestor } = freshStore();
  const result = await ingestor.ingest(bufferInput(name, bytes));
  return { db, result, leaf: result.leaves[0]! };
}

function assertFailed(leaf: { status: string; code?: string; error?: string }, code: string, error: RegExp): void {
  assert.equal(leaf.status, 'failed', JSON.stringify(leaf));
  assert.equal(leaf.code, code, leaf.error);
  assert.match(leaf.error!, error);
}

describe('hostile and broken input', () => {
  it('refuses a gzip bomb by its expansion ratio', async () => {
    const bomb = gzipBomb(1024 * 1024 * 1024, '<?xml version="1.0"?><feedback>', '<x/>');
    assert.ok(bomb.length < 2 * 1024 * 1024, `bomb is ${bomb.length} bytes`);
    const { leaf, db } = await ingestOne('bomb.xml.gz', bomb);
    assertFailed(
      leaf,
      'E_LIMIT',
      /expands more than 500:1; refused as a possible decompression bomb \(limit: \[limits\] max_compression_ratio\)/,
    );
    assert.equal(count(db, 'SELECT COUNT(*) FROM reports'), 0);
    // A bomb of zeros stops within the first slices: refused by its ratio, or found to hold no
    // report by its first bytes (which comes first depends on the slice size).
    const zeros = (await ingestOne('zeros.gz', gzipBomb(1024 * 1024 * 1024))).leaf;
    const outcome = zeros.status === 'failed' ? zeros.code : zeros.status === 'none' ? zeros.reason : zeros.status;
    assert.ok(['E_LIMIT', 'gzip holding binary data that is neither gzip, zip, XML nor JSON'].includes(outcome), outcome);
  });

  it('refuses gzip data past the decompressed-size cap even at a plausible ratio', async () => {
    const { db, ingestor } = freshStore({ ...defaultLimits, maxDecompressedBytes: 4 * 1024 * 1024 });
    // About 6 MiB of report-like XML that compresses far less than 500:1.
    const records = Array.from({ length: 20_000 }, (_, i) => record({ ip: `10.${(i >> 8) & 255}.${i & 255}.${(i * 7) & 255}`, count: i }));
    const result = await ingestor.ingest(bufferInput('big.xml.gz', gzip(dmarcXml({ records }))));
    assertFailed(
      result.leaves[0]!,
      'E_LIMIT',
      /decompresses to more than 4 MiB; refused as a possible decompression bomb \(limit: \[limits\] max_decompressed_bytes\)/,
    );
    assert.equal(count(db, 'SELECT COUNT(*) FROM dmarc_records'), 0);
  });

  it('refuses a zip entry that declares a huge size before decompressing it', async () => {
    const big = new Uint8Array(80 * 1024 * 1024);
    const { leaf } = await ingestOne('bomb.zip', Buffer.from(zipSync({ 'report.xml': big }, { level: 9 })));
    assertFailed(leaf, 'E_LIMIT', /declares 80 MiB uncompressed/);
  });

  it('refuses a zip with thousands of entries without opening them', async () => {
    const entries: Record<string, string> = {};
    for (let i = 0; i < 5000; i++) entries[`r${i}.xml`] = 'x';
    const { leaf } = await ingestOne('many.zip', zip(entries));
    assertFailed(leaf, 'E_LIMIT', /5000 entries, more than 100 \(limit: \[limits\] max_zip_entries\)/);
  });

  it('reports a zip archive cut short, or with a corrupt entry', async () => {
    const z = zip({ 'a.xml': dmarcXml() });
    assertFailed((await ingestOne('cut.zip', z.subarray(0, z.length - 30))).leaf, 'E_ZIP', /no end of central directory record/);
    const broken = Buffer.from(z);
    const local = broken.indexOf(Buffer.from([0x50, 0x4b, 0x03, 0x04]));
    broken.fill(0xff, local + 30 + 'a.xml'.length, local + 30 + 'a.xml'.length + 20);
    assertFailed((await ingestOne('broken.zip', broken)).leaf, 'E_ZIP', /corrupt deflate data/);
  });

  it('reads a ZIP64 archive (64-bit sizes and offsets in extra fields)', async () => {
    const { leaf, db } = await ingestOne('r.zip', zip64('report.xml', dmarcXml({ reportId: 'z64' })));
    assert.deepEqual([leaf.input, leaf.status], ['r.zip#report.xml', 'stored']);
    assert.equal(count(db, "SELECT COUNT(*) FROM reports WHERE report_id = 'z64'"), 1);
  });

  it('refuses entity expansion (billion laughs) without expanding anything', async () => {
    const lol = `<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol9 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
]>
<feedback><report_metadata><org_name>&lol9;</org_name></report_metadata></feedback>`;
    const { leaf } = await ingestOne('lol.xml', lol);
    assertFailed(leaf, 'E_XML_DOCTYPE', /DOCTYPE declaration; refused/);
  });

  it('never resolves an external entity (XXE) and reads nothing from disk', async () => {
    const dir = tempDir();
    const secret = path.join(dir, 'secret.txt');
    fs.writeFileSync(secret, 'TOP-SECRET-CONTENT');
    const xxe = dmarcXml({ orgName: '&xxe;' }).replace(
      '<feedback>',
      `<!DOCTYPE feedback [<!ENTITY xxe SYSTEM "file://${secret}">]>\n<feedback>`,
    );
    const { leaf, db } = await ingestOne('xxe.xml', xxe);
    assertFailed(leaf, 'E_XML_DOCTYPE', /external entity \(XXE\)/);
    assert.doesNotMatch(JSON.stringify(leaf), /TOP-SECRET/);
    assert.equal(count(db, 'SELECT COUNT(*) FROM reports'), 0);
    // An entity reference with no DOCTYPE at all is simply undefined.
    const bare = await ingestOne('bare.xml', dmarcXml({ orgName: '&xxe;' }));
    assertFailed(bare.leaf, 'E_XML', /undefined entity/i);
  });

  it('rolls back a report truncated after its records began: no partial rows', async () => {
    const records = Array.from({ length: 500 }, (_, i) => record({ ip: `198.51.100.${i % 250}`, count: 1 }));
    const full = dmarcXml({ records });
    const { leaf, db } = await ingestOne('cut.xml', full.slice(0, Math.floor(full.length * 0.8)));
    assertFailed(leaf, 'E_XML', /not well-formed XML: .*the document ends inside/);
    assert.equal(count(db, 'SELECT COUNT(*) FROM reports'), 0);
    assert.equal(count(db, 'SELECT COUNT(*) FROM dmarc_records'), 0);
  });

  it('reports a truncated gzip stream', async () => {
    const gz = gzip(dmarcXml({ records: Array.from({ length: 200 }, (_, i) => record({ ip: `203.0.113.${i}` })) }));
    const { leaf } = await ingestOne('cut.xml.gz', gz.subarray(0, gz.length - 40));
    assert.equal(leaf.status, 'failed', JSON.stringify(leaf));
    if (leaf.status !== 'failed') return;
    assert.ok(['E_GZIP', 'E_XML'].includes(leaf.code), `${leaf.code}: ${leaf.error}`);
  });

  it('skips JSON that is not a TLS report, and fails JSON that is not JSON', async () => {
    const other = (await ingestOne('x.json', '{"hello": "world"}')).leaf;
    assert.equal(other.status, 'none', JSON.stringify(other));
    assert.match(other.status === 'none' ? other.reason : '', /no "policies" array: not an SMTP TLS report/);
    assertFailed((await ingestOne('y.json', '{"policies": [')).leaf, 'E_JSON', /not valid JSON/);
  });

  it('refuses XML nested deeper than the cap, and over-long text', async () => {
    const deep = `<feedback>${'<a>'.repeat(100)}${'</a>'.repeat(100)}</feedback>`;
    assertFailed((await ingestOne('deep.xml', deep)).leaf, 'E_LIMIT', /deeper than 32 elements/);
    const long = dmarcXml({ orgName: 'x'.repeat(200_000) });
    assertFailed((await ingestOne('long.xml', long)).leaf, 'E_LIMIT', /more than 65536 characters/);
  });

  it('refuses a record listing more DKIM and SPF results and override reasons than the cap; one at the cap is stored', async () => {
    const sigs = (n: number) =>
      Array.from({ length: n }, (_, i) => `<dkim><domain>d${i}.example</domain><result>fail</result></dkim>`).join('');
    // record() lists a DKIM and an SPF result of its own: 98 more make 100, 99 more 101.
    const at = await ingestOne('at.xml', dmarcXml({ records: [record({}), record({ extra: sigs(98) })] }));
    assert.equal(at.leaf.status, 'stored', JSON.stringify(at.leaf));
    assert.equal(count(at.db, `SELECT max(json_array_length(dkim_results)) FROM dmarc_records`), 99);
    const over = await ingestOne('over.xml.gz', gzip(dmarcXml({ records: [record({}), record({ extra: sigs(99) })] })));
    assertFailed(
      over.leaf,
      'E_LIMIT',
      /^record 2 lists more than 100 DKIM and SPF results and override reasons \(limit: \[limits\] max_record_results\)/,
    );
    assert.equal(count(over.db, 'SELECT COUNT(*) FROM dmarc_records'), 0);
    const reasons = '<reason><type>forwarded</type></reason>'.repeat(99);
    assertFailed(
      (await ingestOne('why.xml', dmarcXml({ records: [record({ reasons })] }))).leaf,
      'E_LIMIT',
      /record 1 lists more than 100/,
    );
  });

  it('refuses containers nested too deep', async () => {
    let data: Uint8Array = Buffer.from(dmarcXml());
    for (let i = 0; i < 7; i++) data = gzip(data);
    assertFailed((await ingestOne('deep.gz', data)).leaf, 'E_LIMIT', /nested more than 4 deep/);
  });

  it('keeps going after a broken report in the same zip', async () => {
    const z = zip({ 'a.xml': dmarcXml({ reportId: 'a' }), 'b.xml': '<feedback><report_metadata>', 'c.xml': dmarcXml({ reportId: 'c' }) });
    const { result, db } = await ingestOne('mixed.zip', z);
    assert.deepEqual(
      result.leaves.map((l) => [l.input, l.status]),
      [
        ['mixed.zip#a.xml', 'stored'],
        ['mixed.zip#b.xml', 'failed'],
        ['mixed.zip#c.xml', 'stored'],
      ],
    );
    assert.equal(count(db, 'SELECT COUNT(*) FROM reports'), 2);
  });

  it('reads a real report truncated on disk as failed, and stores the rest of the batch', async () => {
    const dir = tempDir();
    const good = fs.readFileSync(fixture('dmarc-aggregate/pdm_nice-input.xml'));
    fs.writeFileSync(path.join(dir, 'a-cut.xml'), good.subarray(0, 3000));
    fs.copyFileSync(fixture('dmarc-aggregate/drv_yahoo.xml'), path.join(dir, 'b-good.xml'));
    const { db, ingestor } = freshStore();
    const { expandPaths } = await import('../../src/sources/files.js');
    const statuses: string[] = [];
    for await (const input of expandPaths([dir], 1e9)) statuses.push(...(await ingestor.ingest(input)).leaves.map((l) => l.status));
    assert.deepEqual(statuses, ['failed', 'stored']);
    assert.equal(count(db, 'SELECT COUNT(*) FROM reports'), 1);
  });
});
