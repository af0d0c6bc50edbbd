import { RuawatchError } from '../errors.js';
import { compareV6, parseAddress, type Address, type V6 } from './ip.js';

/**
 * A range table: sorted, non-overlapping address ranges, each pointing at a value (an AS number and
 * its organisation, or a country code). Built from the CSV files of the ip-location-db project (one
 * range a line: first address, last address, then the value's fields) and kept in a compact binary
 * form that loads without parsing: typed arrays over one buffer. The bundled ASN data is compiled at
 * build time (build-data.ts); a user's newer CSV is compiled on first use and cached.
 *
 * Binary layout, little-endian, every section 4-byte aligned:
 *   "RWRT" | u32 version | u32 n4 | u32 n6 | u32 values | u32 string bytes | u32 meta bytes | u32 0
 *   meta (JSON, padded) | v4 start[n4] | v4 end[n4] | v4 value[n4] | v6 start[4*n6] | v6 end[4*n6]
 *   | v6 value[n6] | value number[values] | value string offset[values + 1] | strings (UTF-8, padded)
 */

export const TABLE_MAGIC = 'RWRT';
const VERSION = 1;
const HEADER = 32;

/** What a table's values are: AS number + organisation, or a country code. */
export type TableKind = 'asn' | 'country';

/** Free-form facts about where a table came from, stored in it (source file, size, date). */
export type TableMeta = Record<string, string | number>;

export interface RangeValue {
  /** The AS number; 0 in a country table. */
  num: number;
  /** The AS organisation or the country code; '' when the source had none. */
  text: string;
}

export class RangeTable {
  readonly kind: TableKind;
  readonly meta: TableMeta;
  private readonly v4Start: Uint32Array;
  private readonly v4End: Uint32Array;
  private readonly v4Value: Uint32Array;
  private readonly v6Start: Uint32Array;
  private readonly v6End: Uint32Array;
  private readonly v6Value: Uint32Array;
  private readonly valueNum: Uint32Array;
  private readonly valueOffset: Uint32Array;
  private readonly strings: Uint8Array;
  private readonly decoded = new Map<number, string>();

  private constructor(parts: {
    kind: TableKind;
    meta: TableMeta;
    v4Start: Uint32Array;
    v4End: Uint32Array;
    v4Value: Uint32Array;
    v6Start: Uint32Array;
    v6End: Uint32Array;
    v6Value: Uint32Array;
    valueNum: Uint32Array;
    valueOffset: Uint32Array;
    strings: Uint8Array;
  }) {
    this.kind = parts.kind;
    this.meta = parts.meta;
    this.v4Start = parts.v4Start;
    this.v4End = parts.v4End;
    this.v4Value = parts.v4Value;
    this.v6Start = parts.v6Start;
    this.v6End = parts.v6End;
    this.v6Value = parts.v6Value;
    this.valueNum = parts.valueNum;
    this.valueOffset = parts.valueOffset;
    this.strings = parts.strings;
  }

  get ipv4Ranges(): number {
    return this.v4Start.length;
  }

  get ipv6Ranges(): number {
    return this.v6Value.length;
  }

  /** The value of the range holding the address, or null when none does. */
  lookup(addr: Address): RangeValue | null {
    const index = addr.family === 4 ? this.find4(addr.v4) : this.find6(addr.v6);
    if (index < 0) return null;
    const text = this.decoded.get(index) ?? this.decode(index);
    return { num: this.valueNum[index]!, text };
  }

  private decode(index: number): string {
    const text = DECODER.decode(this.strings.subarray(this.valueOffset[index]!, this.valueOffset[index + 1]!));
    this.decoded.set(index, text);
    return text;
  }

  private find4(x: number): number {
    // The last range starting at or before x; it holds x when it also ends at or after it.
    let lo = 0;
    let hi = this.v4Start.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      if (this.v4Start[mid]! > x) hi = mid - 1;
      else lo = mid + 1;
    }
    return hi >= 0 && this.v4End[hi]! >= x ? this.v4Value[hi]! : -1;
  }

  private find6(x: V6): number {
    // As find4, comparing four words in place (a subarray per step cost more than the search).
    const starts = this.v6Start;
    let lo = 0;
    let hi = this.v6Value.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      if (compareAt(starts, mid * 4, x) > 0) hi = mid - 1;
      else lo = mid + 1;
    }
    return hi >= 0 && compareAt(this.v6End, hi * 4, x) >= 0 ? this.v6Value[hi]! : -1;
  }

  /** The table in its binary form, to write to a file. */
  serialize(): Buffer {
    const meta = Buffer.from(JSON.stringify({ kind: this.kind, ...this.meta }));
    const pad = (n: number) => (n + 3) & ~3;
    const sections = [this.v4Start, this.v4End, this.v4Value, this.v6Start, this.v6End, this.v6Value, this.valueNum, this.valueOffset];
    const size = HEADER + pad(meta.length) + sections.reduce((n, s) => n + s.byteLength, 0) + pad(this.strings.length);
    const out = Buffer.alloc(size);
    out.write(TABLE_MAGIC, 0, 'latin1');
    const header = [VERSION, this.v4Start.length, this.v6Value.length, this.valueNum.length, this.strings.length, meta.length, 0];
    header.forEach((v, i) => out.writeUInt32LE(v, 4 + i * 4));
    let at = HEADER;
    meta.copy(out, at);
    at += pad(meta.length);
    for (const s of sections) {
      // Little-endian on disk whatever the machine: write word by word.
      for (let i = 0; i < s.length; i++) out.writeUInt32LE(s[i]!, at + i * 4);
      at += s.byteLength;
    }
    out.set(this.strings, at);
    return out;
  }

  /**
   * A table from its binary form, checked so that a truncated or corrupt file is an error rather
   * than wrong answers or an exception deep in a lookup: sizes, order, and every index in bounds.
   */
  static deserialize(bytes: Uint8Array, where: string): RangeTable {
    const fail = (why: string): never => {
      throw new RuawatchError('E_ENRICH', `${where}: not a usable range table (${why})`);
    };
    if (bytes.length < HEADER || Buffer.from(bytes.buffer, bytes.byteOffset, 4).toString('latin1') !== TABLE_MAGIC) fail('no header');
    if (!LITTLE_ENDIAN) fail('this machine is big-endian');
    // Typed arrays need 4-byte alignment; a buffer from a pool may not have it.
    const buf = bytes.byteOffset % 4 === 0 ? bytes : new Uint8Array(bytes);
    const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
    const [version, n4, n6, values, stringBytes, metaBytes] = [1, 2, 3, 4, 5, 6].map((i) => view.getUint32(i * 4, true)) as [
      number,
      number,
      number,
      number,
      number,
      number,
    ];
    if (version !== VERSION) fail(`version ${version}, this ruawatch reads ${VERSION}`);
    const pad = (n: number) => (n + 3) & ~3;
    const expected = HEADER + pad(metaBytes) + 4 * (3 * n4 + 9 * n6 + 2 * values + 1) + pad(stringBytes);
    if (expected !== buf.length) fail(`${buf.length} bytes where the header implies ${expected}`);
    let meta: TableMeta & { kind?: unknown };
    try {
      meta = JSON.parse(Buffer.from(buf.buffer, buf.byteOffset + HEADER, metaBytes).toString('utf8')) as TableMeta;
    } catch {
      return fail('unreadable metadata');
    }
    if (meta.kind !== 'asn' && meta.kind !== 'country') return fail('unknown kind');
    const kind: TableKind = meta.kind;
    let at = buf.byteOffset + HEADER + pad(metaBytes);
    const words = (n: number) => {
      const a = new Uint32Array(buf.buffer, at, n);
      at += n * 4;
      return a;
    };
    const v4Start = words(n4);
    const v4End = words(n4);
    const v4Value = words(n4);
    const v6Start = words(4 * n6);
    const v6End = words(4 * n6);
    const v6Value = words(n6);
    const valueNum = words(values);
    const valueOffset = words(values + 1);
    const strings = new Uint8Array(buf.buffer, at, stringBytes);
    for (let i = 0; i < n4; i++) {
      if (v4Start[i]! > v4End[i]! || (i > 0 && v4Start[i]! <= v4End[i - 1]!) || v4Value[i]! >= values) fail(`IPv4 range ${i}`);
    }
    for (let i = 0; i < n6; i++) {
      const at = i * 4;
      if (compareWords(v6Start, at, v6End, at) > 0 || (i > 0 && compareWords(v6Start, at, v6End, at - 4) <= 0) || v6Value[i]! >= values) {
        fail(`IPv6 range ${i}`);
      }
    }
    if (valueOffset[0] !== 0 || valueOffset[values] !== stringBytes) fail('string table');
    for (let i = 0; i < values; i++) if (valueOffset[i]! > valueOffset[i + 1]!) fail('string table');
    const { kind: _, ...rest } = meta;
    return new RangeTable({ kind, meta: rest, v4Start, v4End, v4Value, v6Start, v6End, v6Value, valueNum, valueOffset, strings });
  }

  /**
   * Compiles CSV files into one table. Rows may come in any order and may overlap: where ranges
   * nest, the smaller one wins inside it (the more specific announcement, as in routing); where two
   * overlap partly or are equal, the one that starts later, or comes later, wins. Adjacent ranges
   * with the same value are merged.
   */
  static compile(kind: TableKind, files: { name: string; bytes: Uint8Array }[], meta: TableMeta = {}): RangeTable {
    const rows4: Row<number>[] = [];
    const rows6: Row<V6>[] = [];
    const values = new ValueSet();
    for (const f of files) parseCsv(kind, f.name, f.bytes, values, rows4, rows6);
    const flat4 = flatten(rows4, V4_OPS);
    const flat6 = flatten(rows6, V6_OPS);
    const v4Start = new Uint32Array(flat4.length);
    const v4End = new Uint32Array(flat4.length);
    const v4Value = new Uint32Array(flat4.length);
    flat4.forEach((r, i) => {
      v4Start[i] = r.s;
      v4End[i] = r.e;
      v4Value[i] = r.v;
    });
    const v6Start = new Uint32Array(flat6.length * 4);
    const v6End = new Uint32Array(flat6.length * 4);
    const v6Value = new Uint32Array(flat6.length);
    flat6.forEach((r, i) => {
      v6Start.set(r.s, i * 4);
      v6End.set(r.e, i * 4);
      v6Value[i] = r.v;
    });
    const { valueNum, valueOffset, strings } = values.pack();
    return new RangeTable({ kind, meta, v4Start, v4End, v4Value, v6Start, v6End, v6Value, valueNum, valueOffset, strings });
  }
}

const DECODER = new TextDecoder();

/** compareV6 of the four words of `a` from `i` with those of `b` from `j`. */
function compareWords(a: Uint32Array, i: number, b: Uint32Array, j: number): number {
  for (let k = 0; k < 4; k++) {
    const x = a[i + k]!;
    const y = b[j + k]!;
    if (x !== y) return x < y ? -1 : 1;
  }
  return 0;
}

/** compareV6 of the four words of `a` from `at` with `x`. */
function compareAt(a: Uint32Array, at: number, x: V6): number {
  for (let i = 0; i < 4; i++) {
    const w = a[at + i]!;
    if (w !== x[i]) return w < x[i]! ? -1 : 1;
  }
  return 0;
}
const LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

export interface Row<K> {
  s: K;
  e: K;
  v: number;
  /** Input order, so that of two equal ranges the later wins. */
  n: number;
}

class ValueSet {
  /** By number first: nearly every AS has one organisation, so the inner list is one long. */
  private readonly index = new Map<number, { text: string; i: number }[]>();
  private readonly nums: number[] = [];
  private readonly texts: string[] = [];

  add(num: number, text: string): number {
    let list = this.index.get(num);
    if (!list) this.index.set(num, (list = []));
    for (const x of list) if (x.text === text) return x.i;
    const i = this.nums.length;
    list.push({ text, i });
    this.nums.push(num);
    this.texts.push(text);
    return i;
  }

  pack(): { valueNum: Uint32Array; valueOffset: Uint32Array; strings: Uint8Array } {
    const encoded = this.texts.map((t) => Buffer.from(t, 'utf8'));
    const valueOffset = new Uint32Array(encoded.length + 1);
    encoded.forEach((b, i) => (valueOffset[i + 1] = valueOffset[i]! + b.length));
    const strings = Buffer.concat(encoded);
    return { valueNum: Uint32Array.from(this.nums), valueOffset, strings: new Uint8Array(strings) };
  }
}

/**
 * One CSV file: `first,last,asn,organisation` (asn) or `first,last,country` (country). Addresses in
 * text form, IPv4 and IPv6 alike; a field may be quoted, with "" for a quote inside (RFC 4180), but
 * not span lines. A first line that is not a row is taken for a header; any other line that is not
 * a row is an error naming it. The file is decoded once and cut with indexOf: reading it byte by
 * byte from the buffer took twice as long.
 */
function parseCsv(kind: TableKind, name: string, bytes: Uint8Array, values: ValueSet, rows4: Row<number>[], rows6: Row<V6>[]): void {
  const text = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('utf8');
  let line = 0;
  for (let pos = 0; pos < text.length;) {
    line++;
    let nl = text.indexOf('\n', pos);
    if (nl < 0) nl = text.length;
    const raw = text.slice(pos, nl > pos && text.charCodeAt(nl - 1) === 13 ? nl - 1 : nl);
    pos = nl + 1;
    if (raw === '') continue;
    const fields = raw.includes('"') ? splitQuoted(raw) : raw.split(',');
    const row = typeof fields === 'string' ? fields : readRow(kind, fields);
    if (typeof row === 'string') {
      if (line === 1) continue;
      throw new RuawatchError('E_ENRICH', `${name} line ${line}: ${row}`);
    }
    const v = values.add(row.num, row.text);
    if (row.first.family === 4 && row.last.family === 4) {
      rows4.push({ s: row.first.v4, e: row.last.v4, v, n: rows4.length });
    } else if (row.first.family === 6 && row.last.family === 6) {
      rows6.push({ s: row.first.v6, e: row.last.v6, v, n: rows6.length });
    }
  }
}

/** The fields of a line with quotes in it, or why it is not a CSV line. */
function splitQuoted(line: string): string[] | string {
  const out: string[] = [];
  let i = 0;
  for (;;) {
    if (line.charCodeAt(i) === 34) {
      let value = '';
      let from = i + 1;
      for (;;) {
        const close = line.indexOf('"', from);
        if (close < 0) return 'a quoted field does not end on its line';
        value += line.slice(from, close);
        if (line.charCodeAt(close + 1) === 34) {
          value += '"';
          from = close + 2;
        } else {
          i = close + 1;
          break;
        }
      }
      out.push(value);
      if (i < line.length && line.charCodeAt(i) !== 44) return 'text after a quoted field';
    } else {
      let end = line.indexOf(',', i);
      if (end < 0) end = line.length;
      out.push(line.slice(i, end));
      i = end;
    }
    if (i >= line.length) return out;
    i++; // the comma
  }
}

function readRow(kind: TableKind, f: string[]): { first: Address; last: Address; num: number; text: string } | string {
  const want = kind === 'asn' ? 4 : 3;
  if (f.length < want - (kind === 'asn' ? 1 : 0)) return `expected ${want} fields, found ${f.length}`;
  const first = parseAddress(f[0]!);
  const last = parseAddress(f[1]!);
  if (!first || !last) return `"${f[0]}" to "${f[1]}" is not a range of IP addresses`;
  // IPv4-mapped IPv6 ranges (::ffff:0:0/96) read as IPv4; a range that crosses families is refused.
  if (first.family !== last.family) return `"${f[0]}" and "${f[1]}" are not of one address family`;
  const ordered = first.family === 4 ? first.v4 <= (last as typeof first).v4 : compareV6(first.v6, (last as typeof first).v6) <= 0;
  if (!ordered) return `"${f[0]}" comes after "${f[1]}"`;
  if (kind === 'country') {
    const cc = f[2]!.trim().toUpperCase();
    if (!/^[A-Z0-9]{2}$/.test(cc)) return `"${f[2]}" is not a two-letter country code`;
    return { first, last, num: 0, text: cc };
  }
  const asn = f[2]!.trim().replace(/^AS/i, '');
  if (!/^\d{1,10}$/.test(asn) || Number(asn) > 0xffffffff) return `"${f[2]}" is not an AS number`;
  return { first, last, num: Number(asn), text: (f[3] ?? '').trim() };
}

/** Order and successor arithmetic of one kind of address number. */
interface KeyOps<K> {
  cmp(a: K, b: K): number;
  next(a: K): K;
  prev(a: K): K;
}

export const V4_OPS: KeyOps<number> = { cmp: (a, b) => a - b, next: (a) => a + 1, prev: (a) => a - 1 };
export const V6_OPS: KeyOps<V6> = {
  cmp: compareV6,
  next: (a) => step(a, 1),
  prev: (a) => step(a, -1),
};

/** a + 1 or a - 1 over the four words, carrying (wrapping at the ends, which ranges never reach past). */
function step(a: V6, by: 1 | -1): V6 {
  const out: V6 = [a[0], a[1], a[2], a[3]];
  for (let i = 3; i >= 0; i--) {
    const v = out[i]! + by;
    out[i] = v >>> 0;
    if (v >= 0 && v <= 0xffffffff) break;
  }
  return out;
}

/**
 * Overlapping rows to disjoint segments, the innermost row winning. Sorted by start, wider first
 * (so a range comes before the ranges nested in it), a sweep keeps the rows that cover the current
 * point on a stack, innermost on top; a row that overlaps the top only partly cuts the top short.
 */
export function flatten<K>(rows: Row<K>[], ops: KeyOps<K>): { s: K; e: K; v: number }[] {
  const { cmp, next, prev } = ops;
  rows.sort((a, b) => cmp(a.s, b.s) || cmp(b.e, a.e) || a.n - b.n);
  const out: { s: K; e: K; v: number }[] = [];
  const emit = (s: K, e: K, v: number) => {
    if (cmp(s, e) > 0) return;
    const last = out[out.length - 1];
    if (last && last.v === v && cmp(next(last.e), s) === 0) last.e = e;
    else out.push({ s, e, v });
  };
  const stack: Row<K>[] = [];
  let cursor: K | undefined;
  for (const r of rows) {
    // Rows that end before this one starts are finished: emit what is left of each.
    while (stack.length && cmp(stack[stack.length - 1]!.e, r.s) < 0) {
      const top = stack.pop()!;
      emit(cursor!, top.e, top.v);
      cursor = next(top.e);
    }
    // Rows that this one overlaps past their end give way to it from its start on.
    while (stack.length && cmp(stack[stack.length - 1]!.e, r.e) < 0) {
      const top = stack.pop()!;
      emit(cursor!, prev(r.s), top.v);
      cursor = r.s;
    }
    const top = stack[stack.length - 1];
    if (top) emit(cursor!, prev(r.s), top.v);
    cursor = r.s;
    stack.push(r);
  }
  while (stack.length) {
    const top = stack.pop()!;
    emit(cursor!, top.e, top.v);
    cursor = next(top.e);
  }
  return out;
}
