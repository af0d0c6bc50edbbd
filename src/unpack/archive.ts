import { Gunzip, Inflate, Unzlib } from 'fflate';
import type unzipper from 'unzipper';
import { RuawatchError, errorMessage } from '../errors.js';
import { fromBuffer, type ByteStream } from './bytes.js';
import { formatBytes, type Limits } from './limits.js';

/**
 * Compressed input is fed to the inflater in small slices: deflate expands at most ~1032:1, so a
 * 1 KiB slice yields at most ~1 MiB, and the size cap is checked after every slice. A bomb is
 * therefore refused after holding at most one slice's output, never followed to its end. (With
 * 8 KiB slices, the garbage of 8 MiB outputs let peak RSS grow with the amount streamed; with
 * 1 KiB it stays flat: test "streams a bomb of well-formed XML...".)
 */
const INFLATE_SLICE = 1024;

/**
 * Streams the decompressed bytes of a gzip (RFC 1952, several members allowed), zlib (RFC 1950)
 * or raw deflate (RFC 1951, a zip entry) stream.
 */
export async function* inflate(src: ByteStream, format: 'gzip' | 'zlib' | 'deflate', limits: Limits, what: string): ByteStream {
  let out: Uint8Array[] = [];
  const inflater = format === 'gzip' ? new Gunzip() : format === 'zlib' ? new Unzlib() : new Inflate();
  inflater.ondata = (chunk) => {
    if (chunk.length) out.push(chunk);
  };
  const guard = new SizeGuard(limits, what);
  let fed = 0;
  const drain = function* (): Generator<Uint8Array> {
    const ready = out;
    out = [];
    for (const c of ready) {
      guard.add(c.length, fed);
      yield c;
    }
  };
  try {
    for await (const chunk of src) {
      for (let i = 0; i < chunk.length; i += INFLATE_SLICE) {
        const slice = chunk.subarray(i, Math.min(i + INFLATE_SLICE, chunk.length));
        fed += slice.length;
        pushChecked(inflater, slice, false, format);
        yield* drain();
      }
    }
    pushChecked(inflater, new Uint8Array(0), true, format);
    yield* drain();
  } finally {
    out = [];
  }
  if (guard.total === 0 && format !== 'deflate') throw new RuawatchError('E_GZIP', `${what}: ${format} stream holds no data`);
}

function pushChecked(inflater: Gunzip | Unzlib | Inflate, data: Uint8Array, final: boolean, format: string): void {
  try {
    inflater.push(data, final);
  } catch (err) {
    // fflate reports "unexpected EOF" for a truncated stream and "invalid ..." for corrupt data.
    throw new RuawatchError(format === 'deflate' ? 'E_ZIP' : 'E_GZIP', `corrupt ${format} data: ${errorMessage(err)}`, { cause: err });
  }
}

/** Counts decompressed bytes and refuses past the size cap or an implausible ratio. */
export class SizeGuard {
  total = 0;
  constructor(
    private readonly limits: Limits,
    private readonly what: string,
  ) {}
  add(n: number, compressedSoFar: number): void {
    this.total += n;
    const { maxDecompressedBytes, maxCompressionRatio, ratioCheckAfterBytes } = this.limits;
    if (this.total > maxDecompressedBytes) {
      throw new RuawatchError(
        'E_LIMIT',
        `${this.what} decompresses to more than ${formatBytes(maxDecompressedBytes)} (limit maxDecompressedBytes); refused as a possible decompression bomb`,
      );
    }
    if (this.total >= ratioCheckAfterBytes && compressedSoFar > 0 && this.total / compressedSoFar > maxCompressionRatio) {
      throw new RuawatchError(
        'E_LIMIT',
        `${this.what} expands more than ${maxCompressionRatio}:1 (limit maxCompressionRatio); refused as a possible decompression bomb`,
      );
    }
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
 * archives with more entries than allowed before anything is decompressed.
 */
export async function listZip(buf: Buffer, limits: Limits, what: string): Promise<ZipEntry[]> {
  let dir: unzipper.CentralDirectory;
  try {
    // Loaded on first use: most reports are gzip. Only the central directory is read with it.
    const { Open } = (await import('unzipper')).default;
    dir = await Open.buffer(buf);
  } catch (err) {
    throw new RuawatchError('E_ZIP', `${what}: not a readable zip archive: ${errorMessage(err)}`, { cause: err });
  }
  if (dir.files.length > limits.maxZipEntries) {
    throw new RuawatchError(
      'E_LIMIT',
      `${what}: zip archive has ${dir.files.length} entries, more than the limit of ${limits.maxZipEntries} (maxZipEntries)`,
    );
  }
  const files = dir.files.filter((f) => f.type === 'File' && !f.path.endsWith('/'));
  // Some writers store an entry without a name; such an entry is named by its position.
  return files.map((f, i) => {
    const name = f.path || String(i + 1);
    return { path: name, open: () => zipEntryStream(buf, f as ZipFile, limits, `${what}#${name}`) };
  });
}

/** The central-directory fields unzipper reads but does not declare. */
type ZipFile = unzipper.File & { offsetToLocalFileHeader: number; compressionMethod: number; flags: number };

/**
 * An entry's bytes, cut straight from the archive in memory (APPNOTE 4.3.7: the local header, 30
 * bytes plus name and extra field, precedes the data) and inflated like gzip, in capped slices.
 */
async function* zipEntryStream(buf: Buffer, file: ZipFile, limits: Limits, what: string): ByteStream {
  // The declared size can lie, so it only refuses early; inflate() counts the real bytes.
  if (file.uncompressedSize > limits.maxDecompressedBytes) {
    throw new RuawatchError(
      'E_LIMIT',
      `${what} declares ${formatBytes(file.uncompressedSize)} uncompressed, more than ${formatBytes(limits.maxDecompressedBytes)} (limit maxDecompressedBytes); refused as a possible decompression bomb`,
    );
  }
  if (file.flags & 0x01) throw new RuawatchError('E_ZIP', `${what}: the entry is encrypted`);
  const at = file.offsetToLocalFileHeader;
  if (at + 30 > buf.length || buf.readUInt32LE(at) !== 0x04034b50) throw new RuawatchError('E_ZIP', `${what}: corrupt zip entry (no local header)`);
  const start = at + 30 + buf.readUInt16LE(at + 26) + buf.readUInt16LE(at + 28);
  const data = buf.subarray(start, start + file.compressedSize);
  if (data.length !== file.compressedSize) throw new RuawatchError('E_ZIP', `${what}: corrupt zip entry (data cut short)`);
  if (file.compressionMethod === 0) {
    new SizeGuard(limits, what).add(data.length, data.length);
    yield data;
  } else if (file.compressionMethod === 8) {
    yield* inflate(fromBuffer(data), 'deflate', limits, what);
  } else {
    throw new RuawatchError('E_ZIP', `${what}: unsupported zip compression method ${file.compressionMethod}`);
  }
}
