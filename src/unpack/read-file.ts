import fs from 'node:fs';
import { RuawatchError } from '../errors.js';
import type { ByteStream } from './bytes.js';
import { formatBytes, overLimit } from './limits.js';

const READ_CHUNK = 256 * 1024;
const SMALL_FILE = 1024 * 1024;

/**
 * Reads a file in chunks. Files up to SMALL_FILE bytes (nearly every report) are read in one
 * synchronous call: three thread-pool round trips per file cost more than the read itself.
 */
export async function* readFile(file: string, maxBytes: number): ByteStream {
  const tooBig = () => overLimit('maxReportBytes', `${file} is larger than ${formatBytes(maxBytes)}`);
  const ioError = (err: unknown) => new RuawatchError('E_IO', `cannot read ${file}: ${(err as Error).message}`, { cause: err });
  let small: Buffer | null = null;
  try {
    const fd = fs.openSync(file, 'r');
    try {
      const size = fs.fstatSync(fd).size;
      if (size > maxBytes) throw tooBig();
      if (size <= SMALL_FILE) {
        small = Buffer.allocUnsafe(size);
        let got = 0;
        for (let n = 1; got < size && n > 0; got += n) n = fs.readSync(fd, small, got, size - got, got);
        small = small.subarray(0, got);
      }
    } finally {
      fs.closeSync(fd);
    }
  } catch (err) {
    throw err instanceof RuawatchError ? err : ioError(err);
  }
  if (small) {
    yield small;
    return;
  }
  let total = 0;
  const stream = fs.createReadStream(file, { highWaterMark: READ_CHUNK });
  try {
    for await (const chunk of stream as AsyncIterable<Buffer>) {
      total += chunk.length;
      // The file may grow while it is read.
      if (total > maxBytes) throw tooBig();
      yield chunk;
    }
  } catch (err) {
    throw err instanceof RuawatchError ? err : ioError(err);
  } finally {
    stream.destroy();
  }
}
