import fs from 'node:fs';
import path from 'node:path';
import { RuawatchError } from '../errors.js';
import type { IngestInput } from '../pipeline/ingest.js';
import type { ByteStream } from '../unpack/bytes.js';
import { formatBytes, overLimit } from '../unpack/limits.js';

const READ_CHUNK = 256 * 1024;
const SMALL_FILE = 1024 * 1024;

/**
 * Turns command-line paths into inputs: a file as itself, a folder walked recursively (sorted, so
 * runs are repeatable; dot-files skipped), "-" for standard input. What each file holds is decided
 * later from its bytes.
 */
export async function* expandPaths(paths: string[], maxBytes: number): AsyncGenerator<IngestInput> {
  for (const p of paths) {
    if (p === '-') {
      yield stdinInput();
      continue;
    }
    let stat: fs.Stats;
    try {
      stat = await fs.promises.stat(p);
    } catch (err) {
      yield brokenInput(
        p,
        new RuawatchError(
          'E_IO',
          `cannot read ${p}: ${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file or folder' : (err as Error).message}`,
        ),
      );
      continue;
    }
    if (stat.isDirectory()) yield* walk(p, maxBytes);
    else yield fileInput(p, maxBytes);
  }
}

/**
 * Counts the inputs paths expand to, without reading any file, stopping once `upTo` are found
 * (a folder need not be walked to the end to know it holds more than one).
 */
export async function countPaths(paths: string[], upTo = Infinity): Promise<number> {
  let n = 0;
  for await (const _ of expandPaths(paths, Number.MAX_SAFE_INTEGER)) if (++n >= upTo) break;
  return n;
}

async function* walk(dir: string, maxBytes: number): AsyncGenerator<IngestInput> {
  let entries: fs.Dirent[];
  try {
    entries = await fs.promises.readdir(dir, { withFileTypes: true });
  } catch (err) {
    yield brokenInput(dir, new RuawatchError('E_IO', `cannot read folder ${dir}: ${(err as Error).message}`));
    return;
  }
  entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  for (const e of entries) {
    if (e.name.startsWith('.')) continue;
    const full = path.join(dir, e.name);
    if (e.isDirectory()) yield* walk(full, maxBytes);
    else if (e.isFile()) yield fileInput(full, maxBytes);
  }
}

export function fileInput(file: string, maxBytes: number): IngestInput {
  return {
    name: file,
    open: () => readFile(file, maxBytes),
    portable: { name: file, file, maxBytes },
  };
}

/**
 * Reads a file in chunks. Files up to SMALL_FILE bytes (nearly every report) are read in one
 * synchronous call: three thread-pool round trips per file cost more than the read itself.
 */
async function* readFile(file: string, maxBytes: number): ByteStream {
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

function stdinInput(): IngestInput {
  let used = false;
  return {
    name: '-',
    open: () => {
      if (used) throw new RuawatchError('E_IO', 'standard input can be read only once');
      used = true;
      return process.stdin as AsyncIterable<Buffer>;
    },
  };
}

function brokenInput(name: string, err: RuawatchError): IngestInput {
  return {
    name,
    open: () => {
      throw err;
    },
    portable: { name, error: { code: err.code, message: err.message } },
  };
}
