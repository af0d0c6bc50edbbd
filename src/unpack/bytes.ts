import { formatBytes, overLimit, type Limits } from './limits.js';

/** A report's bytes as they arrive: a file read in chunks, a decompressor's output, a buffer. */
export type ByteStream = AsyncIterable<Uint8Array>;

const SLICE = 64 * 1024;

export async function* fromBuffer(buf: Uint8Array): ByteStream {
  for (let i = 0; i < buf.length; i += SLICE) yield buf.subarray(i, Math.min(i + SLICE, buf.length));
}

export interface Peeked {
  /** Up to `n` first bytes (fewer only when the stream is shorter). */
  head: Uint8Array;
  /** The whole stream again, head included. */
  stream: ByteStream;
}

/** Reads the first `n` bytes without consuming them, so content can be sniffed before use. */
export async function peek(src: ByteStream, n: number): Promise<Peeked> {
  const it = src[Symbol.asyncIterator]();
  const buffered: Uint8Array[] = [];
  let have = 0;
  let done = false;
  while (have < n) {
    const r = await it.next();
    if (r.done) {
      done = true;
      break;
    }
    if (r.value.length === 0) continue;
    buffered.push(r.value);
    have += r.value.length;
  }
  const joined = concat(buffered, have);
  async function* again(): ByteStream {
    if (joined.length) yield joined;
    if (done) return;
    for (;;) {
      const r = await it.next();
      if (r.done) return;
      yield r.value;
    }
  }
  return { head: joined.subarray(0, Math.min(n, joined.length)), stream: again() };
}

/** Collects a stream into one buffer, refusing to hold more than `cap` bytes. */
export async function readAll(src: ByteStream, limits: Limits, key: keyof Limits, what: string): Promise<Buffer> {
  const cap = limits[key];
  const parts: Uint8Array[] = [];
  let total = 0;
  for await (const chunk of src) {
    total += chunk.length;
    if (total > cap) throw overLimit(key, `${what} is larger than ${formatBytes(cap)}`);
    parts.push(chunk);
  }
  return Buffer.concat(parts, total);
}

function concat(parts: Uint8Array[], total: number): Uint8Array {
  if (parts.length === 1) return parts[0]!;
  return Buffer.concat(parts, total);
}
