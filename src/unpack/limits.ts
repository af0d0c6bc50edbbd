/**
 * Every input-size cap in one place. Reports come from strangers on the internet; each cap
 * turns a hostile or broken input into a clear E_LIMIT error instead of an exhausted process.
 */
import { RuawatchError } from '../errors.js';

export interface Limits {
  /** Largest mail (RFC 5322 message) read into memory, in bytes. */
  maxMessageBytes: number;
  /** Largest compressed archive (zip) read into memory to find its central directory. */
  maxArchiveBytes: number;
  /** Largest decompressed output of one gzip/zlib stream or zip entry (one report). */
  maxDecompressedBytes: number;
  /** Decompressed/compressed ratio refused once at least `ratioCheckAfterBytes` came out. */
  maxCompressionRatio: number;
  ratioCheckAfterBytes: number;
  /** Entries in one zip archive. */
  maxZipEntries: number;
  /** Containers within containers (gzip in zip in mail...). */
  maxNesting: number;
  /** Largest plain (uncompressed) report file; XML is streamed, so this only bounds time. */
  maxReportBytes: number;
  /** Largest JSON document (TLS reports are parsed whole). */
  maxJsonBytes: number;
  /** Element nesting depth in a DMARC XML document. */
  maxXmlDepth: number;
  /** Characters of text in one XML element. */
  maxXmlTextChars: number;
  /** <record> elements in one aggregate report. */
  maxRecordsPerReport: number;
  /** Policies and failure-detail entries in one TLS report. */
  maxTlsEntries: number;
}

const MiB = 1024 * 1024;

export const defaultLimits: Readonly<Limits> = Object.freeze({
  maxMessageBytes: 64 * MiB,
  maxArchiveBytes: 64 * MiB,
  maxDecompressedBytes: 50 * MiB,
  maxCompressionRatio: 500,
  ratioCheckAfterBytes: 1 * MiB,
  maxZipEntries: 100,
  maxNesting: 4,
  maxReportBytes: 1024 * MiB,
  maxJsonBytes: 50 * MiB,
  maxXmlDepth: 32,
  maxXmlTextChars: 64 * 1024,
  maxRecordsPerReport: 2_000_000,
  maxTlsEntries: 100_000,
});

export function formatBytes(n: number): string {
  if (n >= MiB) return `${(n / MiB).toFixed(n % MiB === 0 ? 0 : 1)} MiB`;
  if (n >= 1024) return `${(n / 1024).toFixed(n % 1024 === 0 ? 0 : 1)} KiB`;
  return `${n} bytes`;
}

/** The [limits] key a user sets for a cap: maxDecompressedBytes -> max_decompressed_bytes. */
export function limitSetting(key: keyof Limits): string {
  return key.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
}

/** The error for input past a cap, naming the setting that raises it. */
export function overLimit(key: keyof Limits, what: string): RuawatchError {
  return new RuawatchError('E_LIMIT', `${what} (limit: [limits] ${limitSetting(key)})`);
}
