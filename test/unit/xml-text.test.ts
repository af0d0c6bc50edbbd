import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { TextDecoder } from 'node:util';
import { rng } from '../../devtools/corpus.js';
import { XmlTextDecoder } from '../../src/parse/xml-text.js';

/**
 * The UTF-8 path of XmlTextDecoder (Node's validator and decoder, a character cut by a chunk
 * boundary carried over) against TextDecoder in fatal mode, which it replaced: the same text or
 * the same refusal, whatever the chunk boundaries.
 */

const PIECES = ['a', '<r>', ' ', 'é', 'ü', '€', '中', '😀', '\uFEFF'].map((s) => Buffer.from(s, 'utf8'));
const BAD = [
  [0x80],
  [0xbf],
  [0xc0, 0x80],
  [0xc1, 0xbf],
  [0xe0, 0x80, 0x80],
  [0xed, 0xa0, 0x80],
  [0xf0, 0x80, 0x80, 0x80],
  [0xf4, 0x90, 0x80, 0x80],
  [0xf5, 0x80, 0x80, 0x80],
  [0xff],
  [0xe2, 0x82],
  [0xf0, 0x9f, 0x98],
  [0xc3],
].map((b) => Buffer.from(b));

function viaTextDecoder(bytes: Buffer): string | 'error' {
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(bytes).replace(/^[\s\uFEFF]+/, '');
  } catch {
    return 'error';
  }
}

function viaXmlTextDecoder(bytes: Buffer, cuts: number[]): string | 'error' {
  const d = new XmlTextDecoder(Buffer.from('<?xml version="1.0" encoding="UTF-8"?>'));
  let out = '';
  let from = 0;
  try {
    for (const at of [...cuts, bytes.length]) {
      out += d.decode(bytes.subarray(from, at), at === bytes.length);
      from = at;
    }
  } catch (err) {
    assert.equal((err as { code?: string }).code, 'E_ENCODING');
    return 'error';
  }
  return out;
}

describe('XML text decoding', () => {
  it('decodes UTF-8 as TextDecoder does, whatever the chunk boundaries', () => {
    const rand = rng(11);
    let errors = 0;
    for (let n = 0; n < 3000; n++) {
      const parts: Buffer[] = [];
      const len = 1 + Math.floor(rand() * 12);
      for (let k = 0; k < len; k++) {
        const bad = rand() < 0.04;
        const list = bad ? BAD : PIECES;
        parts.push(list[Math.floor(rand() * list.length)]!);
      }
      const bytes = Buffer.concat(parts);
      const cuts = [...new Set(Array.from({ length: Math.floor(rand() * 4) }, () => Math.floor(rand() * bytes.length)))].sort(
        (a, b) => a - b,
      );
      const want = viaTextDecoder(bytes);
      if (want === 'error') errors++;
      assert.equal(viaXmlTextDecoder(bytes, cuts), want, `${bytes.toString('hex')} cut at ${cuts.join(',')}`);
    }
    assert.ok(errors > 100, `${errors} invalid sequences among the cases`);
  });

  it('says at which byte UTF-8 breaks, counting earlier chunks', () => {
    const d = new XmlTextDecoder(Buffer.from('<a>'));
    assert.equal(d.decode(Buffer.from('<a>\u00e9')), '<a>\u00e9');
    assert.throws(() => d.decode(Buffer.from([0x61, 0x91])), /invalid utf-8 byte sequence at byte 6 \(0x91\)/);
  });

  it('drops a byte order mark split over chunks', () => {
    const d = new XmlTextDecoder(Buffer.from([0xef, 0xbb, 0xbf]));
    assert.equal(d.decode(Buffer.from([0xef])) + d.decode(Buffer.from([0xbb, 0xbf, 0x3c])) + d.decode(Buffer.from('a/>'), true), '<a/>');
  });
});
