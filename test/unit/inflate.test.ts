import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { describe, it } from 'node:test';
import { rng } from '../../devtools/corpus.js';
import { inflate, inflateSliced } from '../../src/unpack/archive.js';
import { fromBuffer, type ByteStream } from '../../src/unpack/bytes.js';
import { defaultLimits } from '../../src/unpack/limits.js';
import { FIXTURES } from '../helpers/common.js';

/**
 * Small compressed streams are inflated in one zlib call, everything else in fflate slices
 * (src/unpack/archive.ts). Whatever the bytes, `inflate` must give what the sliced path alone
 * gives: the same output, or the same error.
 */

type Outcome = { ok: true; out: Buffer } | { ok: false; error: string };

async function outcome(stream: ByteStream): Promise<Outcome> {
  const parts: Buffer[] = [];
  try {
    for await (const c of stream) parts.push(Buffer.from(c));
    return { ok: true, out: Buffer.concat(parts) };
  } catch (err) {
    return { ok: false, error: (err as Error).message };
  }
}

function damage(good: Buffer, random: () => number): Buffer {
  const at = (n: number) => Math.floor(random() * n);
  const b = Buffer.from(good);
  switch (at(6)) {
    case 0:
      return b.subarray(0, at(b.length)); // truncated
    case 1:
      b[at(b.length)]! ^= 1 << at(8); // one bit flipped
      return b;
    case 2:
      return Buffer.concat([b, Buffer.from([at(256), at(256), at(256)])]); // a few bytes of junk
    case 3:
      return Buffer.concat([b, Buffer.from([0x1f, 0x8b]), Buffer.alloc(at(20), at(256))]); // a broken second member
    case 4:
      return Buffer.concat([b, good]); // a second member (or trailing data for zlib and deflate)
    default:
      return Buffer.concat([b, Buffer.alloc(at(40))]); // zero padding
  }
}

describe('inflate in one call and in slices', () => {
  const dir = path.join(FIXTURES, 'dmarc-aggregate');
  const gz = fs
    .readdirSync(dir)
    .filter((f) => f.endsWith('.gz'))
    .map((f) => fs.readFileSync(path.join(dir, f)));
  gz.push(fs.readFileSync(path.join(FIXTURES, 'tlsrpt/mailtlsrpt_report.json.gz')));
  const xml = zlib.gunzipSync(gz[0]!);
  const streams: ['gzip' | 'zlib' | 'deflate', Buffer][] = [
    ...gz.map((b) => ['gzip', b] as ['gzip', Buffer]),
    ['zlib', zlib.deflateSync(xml)],
    ['deflate', zlib.deflateRawSync(xml)],
  ];

  it('agree on every compressed fixture and on 300 damaged copies of each: the same bytes out, or the same error', async () => {
    const random = rng(7);
    let accepted = 0;
    let refused = 0;
    for (const [format, good] of streams) {
      for (let k = 0; k <= 300; k++) {
        const input = k === 0 ? good : damage(good, random);
        const both = await outcome(inflate(fromBuffer(input), format, defaultLimits, 'x'));
        const sliced = await outcome(inflateSliced(fromBuffer(input), format, defaultLimits, 'x'));
        assert.deepEqual(both, sliced, `${format} copy ${k}`);
        if (both.ok) accepted++;
        else refused++;
      }
    }
    assert.equal(accepted + refused, streams.length * 301);
    assert.ok(accepted > 500 && refused > 500, `${accepted} accepted, ${refused} refused`);
  });

  it('ignore junk and zero padding after a complete gzip member, and read a second member', async () => {
    const good = gz[0]!;
    for (const tail of [Buffer.from('\r\n'), Buffer.alloc(64), Buffer.from('-- \r\nsignature\r\n')]) {
      const r = await outcome(inflate(fromBuffer(Buffer.concat([good, tail])), 'gzip', defaultLimits, 'x'));
      assert.deepEqual(r, { ok: true, out: xml });
      const s = await outcome(inflateSliced(fromBuffer(Buffer.concat([good, tail])), 'gzip', defaultLimits, 'x'));
      assert.deepEqual(s, { ok: true, out: xml });
    }
    const twice = await outcome(inflate(fromBuffer(Buffer.concat([good, good])), 'gzip', defaultLimits, 'x'));
    assert.deepEqual(twice, { ok: true, out: Buffer.concat([xml, xml]) });
  });
});
