import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Reader, type Response } from 'mmdb-lib';
import { RuawatchError, errorMessage } from '../errors.js';
import type { Address } from './ip.js';
import { RangeTable, TABLE_MAGIC, type RangeValue, type TableKind } from './ranges.js';

/** One data file, opened: answers for the addresses it covers, null for the others. */
export interface DataSource {
  kind: TableKind;
  file: string;
  format: 'table' | 'csv' | 'mmdb';
  /** How old the data is, when the file says (ISO date), else null. */
  built: string | null;
  /** Where the answer came from, for `whois`: "ip-location-db asn 2.3.2026061719" and the like. */
  description: string;
  lookup(addr: Address): RangeValue | null;
}

/** The data bundled with ruawatch: compiled at build time into dist/src/enrich/data/. */
export const BUNDLED_DIR = fileURLToPath(new URL('./data/', import.meta.url));
export const BUNDLED_ASN = path.join(BUNDLED_DIR, 'asn.rwrt');
export const BUNDLED_COUNTRY = path.join(BUNDLED_DIR, 'country.mmdb');

/** MaxMind DB files end with their metadata, after this marker (MaxMind DB File Format, "Database Metadata"). */
const MMDB_MARKER = Buffer.from([0xab, 0xcd, 0xef, ...Buffer.from('MaxMind.com')]);
const MMDB_METADATA_MAX = 128 * 1024;

/**
 * Opens a data file of any format it may be in, told apart by its bytes, not its name: a compiled
 * range table ("RWRT" header), a MaxMind DB (its metadata marker near the end), else CSV text. A
 * CSV file is compiled once and the table cached in `cacheDir` (when given), keyed by the file's
 * path and checked against its size and modification time, so a newer file is compiled again.
 */
export function openDataFile(kind: TableKind, file: string, cacheDir: string | null, description?: string): DataSource {
  const source = openAnyFormat(kind, file, cacheDir);
  return description ? { ...source, description } : source;
}

/** What the build step recorded about the bundled files: package names and versions. */
export function bundledDescriptions(): Partial<Record<TableKind, string>> {
  try {
    return JSON.parse(fs.readFileSync(path.join(BUNDLED_DIR, 'SOURCES.json'), 'utf8')) as Partial<Record<TableKind, string>>;
  } catch {
    return {};
  }
}

function openAnyFormat(kind: TableKind, file: string, cacheDir: string | null): DataSource {
  const fail = (err: unknown): never => {
    throw new RuawatchError('E_ENRICH', `cannot read the ${kind} data file ${file}: ${errorMessage(err)}`);
  };
  // The first bytes and the last 128 KiB tell the format; a CSV whose table is cached is not read at all.
  let head: Buffer;
  let tail: Buffer;
  try {
    const fd = fs.openSync(file, 'r');
    try {
      const size = fs.fstatSync(fd).size;
      head = Buffer.alloc(Math.min(4, size));
      fs.readSync(fd, head, 0, head.length, 0);
      tail = Buffer.alloc(Math.min(MMDB_METADATA_MAX, size));
      fs.readSync(fd, tail, 0, tail.length, size - tail.length);
    } finally {
      fs.closeSync(fd);
    }
  } catch (err) {
    return fail(err);
  }
  const whole = () => {
    try {
      return fs.readFileSync(file);
    } catch (err) {
      return fail(err);
    }
  };
  if (head.toString('latin1') === TABLE_MAGIC) return tableSource(RangeTable.deserialize(whole(), file), file, 'table');
  if (tail.lastIndexOf(MMDB_MARKER) >= 0) return mmdbSource(kind, file, whole());
  return tableSource(compileCached(kind, file, whole, cacheDir), file, 'csv');
}

function tableSource(table: RangeTable, file: string, format: 'table' | 'csv'): DataSource {
  const m = table.meta;
  const built = typeof m.built === 'string' ? m.built : null;
  return {
    kind: table.kind,
    file,
    format,
    built,
    description: typeof m.source === 'string' ? m.source : path.basename(file),
    lookup: (addr) => table.lookup(addr),
  };
}

type MmdbRecord = Record<string, unknown>;

function mmdbSource(kind: TableKind, file: string, bytes: Buffer): DataSource {
  let reader: Reader<Response>;
  try {
    reader = new Reader<Response>(bytes);
  } catch (err) {
    throw new RuawatchError('E_ENRICH', `${file} is not a readable MaxMind DB: ${errorMessage(err)}`);
  }
  const md = reader.metadata;
  const description = `${md.databaseType} (${path.basename(file)})`;
  const built = md.buildEpoch instanceof Date && !Number.isNaN(md.buildEpoch.getTime()) ? md.buildEpoch.toISOString().slice(0, 10) : null;
  const read = kind === 'asn' ? asnOf : countryOf;
  return {
    kind,
    file,
    format: 'mmdb',
    built,
    description,
    lookup: (addr) => {
      // An IPv6 address in an IPv4-only database has no answer (the reader would throw).
      if (addr.family === 6 && md.ipVersion === 4) return null;
      const rec = reader.get(addr.text) as MmdbRecord | null;
      return rec ? read(rec) : null;
    },
  };
}

/** GeoLite2-ASN and ip-location-db's ASN databases: autonomous_system_number / _organization. */
function asnOf(rec: MmdbRecord): RangeValue | null {
  const num = rec.autonomous_system_number;
  if (typeof num !== 'number' || !Number.isInteger(num) || num < 0) return null;
  const org = rec.autonomous_system_organization;
  return { num, text: typeof org === 'string' ? org : '' };
}

/** ip-location-db's country databases (country_code), or GeoLite2's (country.iso_code, else registered_country). */
function countryOf(rec: MmdbRecord): RangeValue | null {
  const nested = (k: string) => {
    const v = rec[k];
    return v && typeof v === 'object' ? (v as Record<string, unknown>).iso_code : undefined;
  };
  const code = rec.country_code ?? nested('country') ?? nested('registered_country');
  return typeof code === 'string' && /^[A-Za-z0-9]{2}$/.test(code) ? { num: 0, text: code.toUpperCase() } : null;
}

/** The compiled table of a CSV file, from the cache when it is still that file's. */
function compileCached(kind: TableKind, file: string, read: () => Buffer, cacheDir: string | null): RangeTable {
  const stat = fs.statSync(file);
  const abs = path.resolve(file);
  const stamp = { source: path.basename(file), path: abs, size: stat.size, mtime: Math.floor(stat.mtimeMs) };
  const cache = cacheDir
    ? path.join(cacheDir, `enrich-${kind}-${crypto.createHash('sha256').update(abs).digest('hex').slice(0, 16)}.rwrt`)
    : null;
  if (cache) {
    try {
      const cached = RangeTable.deserialize(fs.readFileSync(cache), cache);
      const m = cached.meta;
      if (cached.kind === kind && m.path === stamp.path && m.size === stamp.size && m.mtime === stamp.mtime) return cached;
    } catch {
      // Missing, stale or damaged: compiled again below and rewritten.
    }
  }
  const table = RangeTable.compile(kind, [{ name: file, bytes: read() }], { ...stamp, built: stat.mtime.toISOString().slice(0, 10) });
  if (cache) {
    // Written beside and renamed, so a reader never sees half a file. A cache that cannot be
    // written costs the compile again next time, nothing else.
    const tmp = `${cache}.${process.pid}.tmp`;
    try {
      fs.mkdirSync(path.dirname(cache), { recursive: true });
      fs.writeFileSync(tmp, table.serialize());
      fs.renameSync(tmp, cache);
    } catch {
      fs.rmSync(tmp, { force: true });
    }
  }
  return table;
}
