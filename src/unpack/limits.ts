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
  /** DKIM and SPF results and policy override reasons listed in one record, together. */
  maxRecordResults: number;
  /** Policies and failure-detail entries in one TLS report. */
  maxTlsEntries: number;
  // Budgets over the whole tree of one input (a file, a mail, one message of an mbox), not per
  // level: within max_nesting and max_zip_entries, zips of zips can still multiply their content
  // (4 levels of 100 entries make 10^8 leaves from under 1 MB), and one mail can carry 10,000
  // report parts. Past a budget the input fails with E_LIMIT and nothing more of it is read.
  /** Bytes out of every decompressor in the tree together. */
  maxInputDecompressedBytes: number;
  /** Archive entries and mail parts found in the tree together, counted as soon as they are listed. */
  maxInputLeaves: number;
  /** Reports (stored, duplicate or failed) found in the tree together. */
  maxInputReports: number;
  /** Longest period one report may cover, in days (its end minus its begin). */
  maxReportDays: number;
  /** Largest message or TLS session count one record, policy, failure detail or whole report may state. */
  maxMessageCount: number;
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
  // A record lists the DKIM signatures and SPF checks of its messages and why a policy was
  // overridden: one to four entries in real reports. Nothing else bounds the lists but the size of
  // the report: one record of 400,000 DKIM results (a 1 MB gzip) held 1.4 GiB and took 73 s to store.
  maxRecordResults: 100,
  maxTlsEntries: 100_000,
  // A report mail carries one report (Google, Microsoft, Yahoo...); a few is the most seen (three in
  // one zip, fixtures/dmarc-aggregate/kimon_multi-report.zip). The budgets leave a wide margin
  // above that while allowing one zip as large as max_zip_entries:
  // four reports at the per-report decompression cap;
  maxInputDecompressedBytes: 200 * MiB,
  // one full zip (100 entries) and the parts of the mails around it, twice over;
  maxInputLeaves: 200,
  // one report per entry of a full zip.
  maxInputReports: 100,
  // Reports cover a day (RFC 7489 section 7.2: 86400 s by default, RFC 8460 section 4.1: a UTC
  // day); weekly ones are seen; a month is the longest interval a reporter could sensibly choose.
  maxReportDays: 31,
  // All the mail the world sends is some 3.5 * 10^11 messages a day; no reporter sees 10^12 of it
  // for one domain in one report. The bound also keeps every sum far below 2^53.
  maxMessageCount: 1_000_000_000_000,
});

export function formatBytes(n: number): string {
  if (n >= MiB) return `${(n / MiB).toFixed(n % MiB === 0 ? 0 : 1)} MiB`;
  if (n >= 1024) return `${(n / 1024).toFixed(n % 1024 === 0 ? 0 : 1)} KiB`;
  return `${n} bytes`;
}

/** A camelCase name in snake case, as a type: `maxXmlDepth` -> `max_xml_depth`. */
export type SnakeCase<S extends string> = S extends `${infer C}${infer Rest}`
  ? `${C extends Lowercase<C> ? C : `_${Lowercase<C>}`}${SnakeCase<Rest>}`
  : S;

/** The keys of the [limits] config section, one per cap. */
export type LimitSetting = SnakeCase<keyof Limits>;

/** Every cap's name, in the order of defaultLimits. */
export const LIMIT_NAMES = Object.freeze(Object.keys(defaultLimits) as (keyof Limits)[]);

/** The [limits] key a user sets for a cap: maxDecompressedBytes -> max_decompressed_bytes. */
export function limitSetting<K extends keyof Limits>(key: K): SnakeCase<K> {
  return key.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`) as SnakeCase<K>;
}

/** The error for input past a cap, naming the setting that raises it. */
export function overLimit(key: keyof Limits, what: string): RuawatchError {
  return new RuawatchError('E_LIMIT', `${what} (limit: [limits] ${limitSetting(key)})`);
}

/**
 * An input's budget ran out. It stops the whole input, not only the piece being read: the
 * siblings of that piece are part of the same amplification.
 */
export class BudgetExceeded extends RuawatchError {
  constructor(key: keyof Limits, what: string) {
    super('E_LIMIT', `${what} (limit: [limits] ${limitSetting(key)})`);
  }
}

/**
 * What one input has used of its budgets (see Limits). Leaves are counted when a zip is listed or
 * a mail is parsed, before any of them is opened; bytes as they come out of a decompressor;
 * reports before each is stored. So a budget is found exceeded after at most one archive listing,
 * one slice of decompressed output or one report too many.
 */
export class InputBudget {
  bytes = 0;
  leaves = 0;
  reports = 0;
  /** Rollup rows its reports make (analyse/rollups.ts INPUT_SPREAD_ROWS): not a cap, a share. */
  rollupRows = 0;

  constructor(private readonly limits: Limits) {}

  addBytes(n: number): void {
    this.bytes += n;
    const max = this.limits.maxInputDecompressedBytes;
    if (this.bytes > max) {
      throw new BudgetExceeded(
        'maxInputDecompressedBytes',
        `the input decompresses to more than ${formatBytes(max)} in all; refused as a possible decompression bomb`,
      );
    }
  }

  addLeaves(n: number, what: string): void {
    this.leaves += n;
    const max = this.limits.maxInputLeaves;
    if (this.leaves > max) {
      throw new BudgetExceeded(
        'maxInputLeaves',
        `the input holds more than ${max} archive entries and mail parts in all (${what} brings it to ${this.leaves}); refused as a possible amplification`,
      );
    }
  }

  addReport(): void {
    const max = this.limits.maxInputReports;
    if (++this.reports > max) {
      throw new BudgetExceeded('maxInputReports', `the input holds more than ${max} reports; refused as a possible amplification`);
    }
  }
}
