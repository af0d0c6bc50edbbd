import fs from 'node:fs';
import path from 'node:path';
import { RuawatchError } from '../errors.js';
import type { IngestInput } from '../pipeline/ingest.js';
import { readFile } from '../unpack/read-file.js';

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
