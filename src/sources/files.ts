import fs from 'node:fs';
import path from 'node:path';
import { RuawatchError } from '../errors.js';
import type { IngestInput } from '../pipeline/ingest.js';
import type { ByteStream } from '../unpack/bytes.js';
import { formatBytes } from '../unpack/limits.js';

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
      yield brokenInput(p, new RuawatchError('E_IO', `cannot read ${p}: ${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file or folder' : (err as Error).message}`));
      continue;
    }
    if (stat.isDirectory()) yield* walk(p, maxBytes);
    else yield fileInput(p, maxBytes);
  }
}

/** Counts the inputs paths expand to (for a progress bar), without reading any file. */
export async function countPaths(paths: string[]): Promise<number> {
  let n = 0;
  for await (const _ of expandPaths(paths, Number.MAX_SAFE_INTEGER)) n++;
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
  };
}

/**
 * Reads a file in chunks. Files up to SMALL_FILE bytes (nearly every report) are read in one
 * synchronous call: three thread-pool round trips per file cost more than the read itself.
 */
async function* readFile(file: string, maxBytes: number): ByteStream {
  let fd: number;
  try {
    fd = fs.openSync(file, 'r');
  } catch (err) {
    throw new RuawatchError('E_IO', `cannot read ${file}: ${(err as Error).message}`, { cause: err });
  }
  try {
    const size = fs.fstatSync(fd).size;
    if (size > maxBytes) throw new RuawatchError('E_LIMIT', `${file} is larger than ${formatBytes(maxBytes)} (limit maxReportBytes)`);
    if (size <= SMALL_FILE) {
      const buf = Buffer.allocUnsafe(size);
      let got = 0;
      while (got < size) {
        const n = fs.readSync(fd, buf, got, size - got, got);
        if (n === 0) break;
        got += n;
      }
      yield buf.subarray(0, got);
      return;
    }
    let total = 0;
    const stream = fs.createReadStream(file, { fd, autoClose: false, start: 0, highWaterMark: READ_CHUNK });
    try {
      for await (const chunk of stream as AsyncIterable<Buffer>) {
        total += chunk.length;
        // The file may grow while it is read.
        if (total > maxBytes) throw new RuawatchError('E_LIMIT', `${file} is larger than ${formatBytes(maxBytes)} (limit maxReportBytes)`);
        yield chunk;
      }
    } finally {
      stream.destroy();
    }
  } catch (err) {
    if (err instanceof RuawatchError) throw err;
    throw new RuawatchError('E_IO', `cannot read ${file}: ${(err as Error).message}`, { cause: err });
  } finally {
    fs.closeSync(fd);
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
  };
}
