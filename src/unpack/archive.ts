import zlib from 'node:zlib';
import { Gunzip, Inflate, Unzlib } from 'fflate';
import { RuawatchError, errorMessage } from '../errors.js';
import { fromBuffer, type ByteStream } from './bytes.js';
import { formatBytes, overLimit, type InputBudget, type Limits } from './limits.js';

/**
 * Compressed input is fed to the inflater (fflate) in small slices: deflate expands at most
 * ~1032:1, so a 2 KiB slice yields at most ~2 MiB, and the size cap is checked after every slice.
 * A bomb is therefore refused after holding at most one slice's output, never followed to its end.
 * The slice size trades peak memory against speed (docs/performance.md, "Memory under hostile
 * input"; test/slow/memory.test.ts measures it).
 */
const INFLATE_SLICE = 2 * 1024;

/**
 * Fast path (ARCHITECTURE.md, "Fast paths"): a compressed stream this small (nearly every
 * report) is first inflated in one call of Node's zlib, at most AT_ONCE_OUTPUT bytes out, in place
 * of the sliced fflate path below, which is several times slower on small streams
 * (docs/performance.md, "Inflating"). Anything else (bigger, over that output, or an error of any
 * kind) takes the sliced path from the start.
 * Invariant: `inflate` gives what `inflateSliced` alone gives, the same bytes out or the same
 * error, so caps and error messages do not depend on the path taken.
 * Held by: test/unit/inflate.test.ts (every compressed fixture and 300 damaged copies of each).
 */
const AT_ONCE_INPUT = 256 * 1024;
const AT_ONCE_OUTPUT = 8 * 1024 * 1024;

type Format = 'gzip' | 'zlib' | 'deflate';

/**
 * Streams the decompressed bytes of a gzip (RFC 1952, several members allowed), zlib (RFC 1950)
 * or raw deflate (RFC 1951, a zip entry) stream, counting them against the input's budget too.
 */
export async function* inflate(src: ByteStream, format: Format, limits: Limits, what: string, budget?: InputBudget): ByteStream {
  const it = src[Symbol.asyncIterator]();
  const head: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const r = await it.next();
    if (r.done) {
      const out = inflateAtOnce(head.length === 1 ? head[0]! : Buffer.concat(head, size), format, limits);
      if (out) {
        budget?.addBytes(out.length);
        yield* fromBuffer(out);
        return;
      }
      break;
    }
    head.push(r.value);
    size += r.value.length;
    if (size > AT_ONCE_INPUT) break;
  }
  async function* again(): ByteStream {
    yield* head;
    for (;;) {
      const r = await it.next();
      if (r.done) return;
      yield r.value;
    }
  }
  yield* inflateSliced(again(), format, limits, what, budget);
}

/** The whole output when it is within every cap and the data is sound; otherwise null. */
function inflateAtOnce(data: Uint8Array, format: Format, limits: Limits): Buffer | null {
  if (data.length === 0) return null;
  // What SizeGuard would allow for this much input, and no more than AT_ONCE_OUTPUT.
  const byRatio = Math.max(limits.ratioCheckAfterBytes - 1, Math.floor(limits.maxCompressionRatio * data.length));
  const maxOutputLength = Math.min(AT_ONCE_OUTPUT, limits.maxDecompressedBytes, byRatio);
  try {
    const opts = { maxOutputLength };
    const out =
      format === 'gzip' ? zlib.gunzipSync(data, opts) : format === 'zlib' ? zlib.inflateSync(data, opts) : zlib.inflateRawSync(data, opts);
    return out.length > 0 ? out : null;
  } catch {
    return null;
  }
}

/** The streaming path alone (exported for the test that holds the two paths to the same results). */
export async function* inflateSliced(src: ByteStream, format: Format, limits: Limits, what: string, budget?: InputBudget): ByteStream {
  let out: Uint8Array[] = [];
  const inflater = format === 'gzip' ? new Gunzip() : format === 'zlib' ? new Unzlib() : new Inflate();
  inflater.ondata = (chunk) => {
    if (chunk.length) out.push(chunk);
  };
  const guard = new SizeGuard(limits, what, budget);
  let fed = 0;
  let produced = false;
  const drain = function* (): Generator<Uint8Array> {
    const ready = out;
    out = [];
    for (const c of ready) {
      guard.add(c.length, fed);
      produced = true;
      yield c;
    }
  };
  /** False once bytes that are not a gzip member follow a complete one: they are ignored. */
  const push = (data: Uint8Array, final: boolean): boolean => {
    try {
      inflater.push(data, final);
      return true;
    } catch (err) {
      // fflate throws "invalid gzip data" only for a member header. After output, that header
      // follows a complete member: padding or junk (Mimecast appends CRLF; others pad with zeros),
      // ignored as zlib ignores it, so both paths (see AT_ONCE_INPUT) read such a file alike.
      if (format === 'gzip' && (produced || out.length > 0) && errorMessage(err) === 'invalid gzip data') return false;
      // fflate reports "unexpected EOF" for a truncated stream and "invalid ..." for corrupt data.
      throw new RuawatchError(format === 'deflate' ? 'E_ZIP' : 'E_GZIP', `corrupt ${format} data: ${errorMessage(err)}`, { cause: err });
    }
  };
  try {
    let more = true;
    read: for await (const chunk of src) {
      for (let i = 0; i < chunk.length; i += INFLATE_SLICE) {
        const slice = chunk.subarray(i, Math.min(i + INFLATE_SLICE, chunk.length));
        fed += slice.length;
        more = push(slice, false);
        yield* drain();
        if (!more) break read;
      }
    }
    if (more) push(new Uint8Array(0), true);
    yield* drain();
  } finally {
    out = [];
  }
  if (guard.total === 0 && format !== 'deflate') throw new RuawatchError('E_GZIP', `${what}: ${format} stream holds no data`);
}

/** Counts decompressed bytes and refuses past the size cap, an implausible ratio or the input's budget. */
class SizeGuard {
  total = 0;
  constructor(
    private readonly limits: Limits,
    private readonly what: string,
    private readonly budget?: InputBudget,
  ) {}
  add(n: number, compressedSoFar: number): void {
    this.total += n;
    const { maxDecompressedBytes, maxCompressionRatio, ratioCheckAfterBytes } = this.limits;
    if (this.total > maxDecompressedBytes) {
      throw overLimit(
        'maxDecompressedBytes',
        `${this.what} decompresses to more than ${formatBytes(maxDecompressedBytes)}; refused as a possible decompression bomb`,
      );
    }
    if (this.total >= ratioCheckAfterBytes && compressedSoFar > 0 && this.total / compressedSoFar > maxCompressionRatio) {
      throw overLimit(
        'maxCompressionRatio',
        `${this.what} expands more than ${maxCompressionRatio}:1; refused as a possible decompression bomb`,
      );
    }
    this.budget?.addBytes(n);
  }
}

export interface ZipEntry {
  /** Path inside the archive, as stored. */
  path: string;
  /** Decompressed bytes, streamed and counted against the caps. */
  open(): ByteStream;
}

/**
 * Lists a zip archive's file entries from its central directory (directories skipped), refusing
 * archives with more entries than allowed before anything is decompressed. The entries' bytes
 * count against `budget`, when given.
 *
 * Fast path (ARCHITECTURE.md, "Fast paths"): a central-directory reader (APPNOTE 4.3.12-4.3.16,
 * ZIP64 4.5.3) in place of a zip library: unzipper, used at first, was slower per archive and its
 * entry streams could not be capped slice by slice (docs/performance.md, "Zip"). It is no longer a
 * dependency, so the reader is held to real archives and to APPNOTE rather than to a library.
 * Invariant: every entry of a sound archive, by name, with its bytes through `inflateSliced`'s caps;
 * anything else refused with E_ZIP or E_LIMIT, never read past the buffer.
 * Held by: test/unit/fixtures.test.ts (the zip fixtures from real reporters),
 * test/unit/hostile.test.ts (ZIP64, truncated and corrupt archives, entry count, declared sizes).
 */
export function listZip(buf: Buffer, limits: Limits, what: string, budget?: InputBudget): ZipEntry[] {
  const bad = (why: string) => new RuawatchError('E_ZIP', `${what}: not a readable zip archive: ${why}`);
  let files: ZipFile[];
  try {
    const dir = readCentralDirectory(buf, bad);
    if (dir.total > limits.maxZipEntries) {
      throw overLimit('maxZipEntries', `${what}: zip archive has ${dir.total} entries, more than ${limits.maxZipEntries}`);
    }
    files = parseEntries(buf, dir, bad).filter((f) => !f.name.endsWith('/'));
  } catch (err) {
    // A field pointing past the end of the buffer.
    throw err instanceof RuawatchError ? err : bad(errorMessage(err));
  }
  // Some writers store an entry without a name; such an entry is named by its position.
  return files.map((f, i) => {
    const name = f.name || String(i + 1);
    return { path: name, open: () => zipEntryStream(buf, f, limits, `${what}#${name}`, budget) };
  });
}

interface ZipFile {
  name: string;
  flags: number;
  method: number;
  compressedSize: number;
  uncompressedSize: number;
  localHeader: number;
}

const U32 = 0xffffffff;

/**
 * The end of central directory record (APPNOTE 4.3.16), found by scanning back over the archive
 * comment, and its ZIP64 counterpart (4.3.14) when the 32-bit fields overflow.
 */
function readCentralDirectory(buf: Buffer, bad: (why: string) => RuawatchError): { offset: number; size: number; total: number } {
  const floor = Math.max(0, buf.length - 22 - 0xffff);
  let eocd = -1;
  for (let i = buf.length - 22; i >= floor; i--) {
    if (buf.readUInt32LE(i) === 0x06054b50) {
      eocd = i;
      break;
    }
  }
  if (eocd < 0) throw bad('no end of central directory record');
  let total = buf.readUInt16LE(eocd + 10);
  let size = buf.readUInt32LE(eocd + 12);
  let offset = buf.readUInt32LE(eocd + 16);
  if ((total === 0xffff || offset === U32 || size === U32) && eocd >= 20 && buf.readUInt32LE(eocd - 20) === 0x07064b50) {
    const at = Number(buf.readBigUInt64LE(eocd - 12));
    if (at + 56 > buf.length || buf.readUInt32LE(at) !== 0x06064b50) throw bad('corrupt ZIP64 end of central directory');
    total = Number(buf.readBigUInt64LE(at + 32));
    size = Number(buf.readBigUInt64LE(at + 40));
    offset = Number(buf.readBigUInt64LE(at + 48));
  }
  if (offset + size > buf.length) throw bad('the central directory lies outside the archive');
  return { offset, size, total };
}

/** Central directory file headers (APPNOTE 4.3.12), with ZIP64 extra fields (4.5.3) applied. */
function parseEntries(buf: Buffer, dir: { offset: number; size: number; total: number }, bad: (why: string) => RuawatchError): ZipFile[] {
  const out: ZipFile[] = [];
  let p = dir.offset;
  for (let n = 0; n < dir.total; n++) {
    if (p + 46 > buf.length || buf.readUInt32LE(p) !== 0x02014b50) throw bad(`corrupt central directory entry ${n + 1}`);
    const flags = buf.readUInt16LE(p + 8);
    const nameLen = buf.readUInt16LE(p + 28);
    const extraLen = buf.readUInt16LE(p + 30);
    const commentLen = buf.readUInt16LE(p + 32);
    const file: ZipFile = {
      // Bit 11: the name is UTF-8; otherwise code page 437, read here as Latin-1.
      name: buf.toString(flags & 0x800 ? 'utf8' : 'latin1', p + 46, p + 46 + nameLen),
      flags,
      method: buf.readUInt16LE(p + 10),
      compressedSize: buf.readUInt32LE(p + 20),
      uncompressedSize: buf.readUInt32LE(p + 24),
      localHeader: buf.readUInt32LE(p + 42),
    };
    for (let e = p + 46 + nameLen; e + 4 <= p + 46 + nameLen + extraLen;) {
      const id = buf.readUInt16LE(e);
      const len = buf.readUInt16LE(e + 2);
      if (id === 0x0001) {
        let q = e + 4;
        const next = () => {
          const v = Number(buf.readBigUInt64LE(q));
          q += 8;
          return v;
        };
        if (file.uncompressedSize === U32) file.uncompressedSize = next();
        if (file.compressedSize === U32) file.compressedSize = next();
        if (file.localHeader === U32) file.localHeader = next();
      }
      e += 4 + len;
    }
    out.push(file);
    p += 46 + nameLen + extraLen + commentLen;
  }
  return out;
}

/**
 * An entry's bytes, cut straight from the archive in memory (APPNOTE 4.3.7: the local header, 30
 * bytes plus name and extra field, precedes the data) and inflated like gzip, in capped slices.
 */
async function* zipEntryStream(buf: Buffer, file: ZipFile, limits: Limits, what: string, budget?: InputBudget): ByteStream {
  // The declared size can lie, so it only refuses early; inflate() counts the real bytes.
  if (file.uncompressedSize > limits.maxDecompressedBytes) {
    throw overLimit(
      'maxDecompressedBytes',
      `${what} declares ${formatBytes(file.uncompressedSize)} uncompressed, more than ${formatBytes(limits.maxDecompressedBytes)}; refused as a possible decompression bomb`,
    );
  }
  if (file.flags & 0x01) throw new RuawatchError('E_ZIP', `${what}: the entry is encrypted`);
  const at = file.localHeader;
  if (at + 30 > buf.length || buf.readUInt32LE(at) !== 0x04034b50)
    throw new RuawatchError('E_ZIP', `${what}: corrupt zip entry (no local header)`);
  const start = at + 30 + buf.readUInt16LE(at + 26) + buf.readUInt16LE(at + 28);
  const data = buf.subarray(start, start + file.compressedSize);
  if (data.length !== file.compressedSize) throw new RuawatchError('E_ZIP', `${what}: corrupt zip entry (data cut short)`);
  if (file.method === 0) {
    new SizeGuard(limits, what, budget).add(data.length, data.length);
    yield data;
  } else if (file.method === 8) {
    yield* inflate(fromBuffer(data), 'deflate', limits, what, budget);
  } else {
    throw new RuawatchError('E_ZIP', `${what}: unsupported zip compression method ${file.method}`);
  }
}
