/**
 * Every error ruawatch raises on purpose carries a stable `code`, so scripts, logs and the
 * ingest_failures table can tell a zip bomb from a typo without parsing English.
 */
export type ErrorCode =
  | 'E_EMPTY' // zero bytes
  | 'E_LIMIT' // a cap from unpack/limits.ts was exceeded
  | 'E_GZIP' // corrupt gzip or zlib stream
  | 'E_ZIP' // corrupt or unreadable zip archive
  | 'E_MAIL' // a mail that could not be parsed
  | 'E_ENCODING' // bytes that do not decode in the declared character set
  | 'E_XML' // not well-formed XML
  | 'E_XML_DOCTYPE' // a DOCTYPE (entities, XXE) was present; refused
  | 'E_JSON' // not valid JSON
  | 'E_NOT_REPORT' // well-formed, but not an aggregate or TLS report
  | 'E_REPORT' // a report missing a field it cannot be stored without
  | 'E_DATE_RANGE' // a report's dates are implausible (begin after end, before 2000, in the future, too long a span)
  | 'E_COUNT' // a message or session count that is not a plausible whole number
  | 'E_ADDRESS' // a source IP (or another IP address field) that is not an IP address
  | 'E_TEXT' // text holding NUL or other control characters, or broken Unicode
  | 'E_IO' // the input could not be read
  | 'E_CONFIG' // configuration problem
  | 'E_USAGE' // command-line usage
  | 'E_DB' // database problem (infrastructure, retry later)
  | 'E_WORKER' // an ingest worker thread stopped (infrastructure, retry later)
  | 'E_ENRICH' // an enrichment data file ([enrich]) is missing, unreadable or malformed
  | 'E_IMAP' // the mail server refused or failed
  | 'E_GRAPH' // Microsoft Graph refused or failed (a [[mailbox]] of kind "graph")
  | 'E_AUTH' // no OAuth2 access token could be had for a mailbox (the token endpoint refused, a token command failed)
  | 'E_BUSY' // the mailbox is being read by another ruawatch process (store/mailboxes.ts lease)
  | 'E_TIMEOUT'; // a pass ran past its deadline ([schedule] poll_timeout_seconds)

export class RuawatchError extends Error {
  readonly code: ErrorCode;
  /**
   * Trying again may succeed: a mailbox connection that was established and then dropped. Errors
   * of a connection that never succeeded, of the input or of the configuration are not.
   */
  readonly retryable: boolean;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown; retryable?: boolean }) {
    super(message, options);
    this.name = 'RuawatchError';
    this.code = code;
    this.retryable = options?.retryable ?? false;
  }
}

export function errorCode(err: unknown): string {
  if (err instanceof RuawatchError) return err.code;
  if (err && typeof err === 'object' && 'code' in err && typeof err.code === 'string') return err.code;
  return 'E_INTERNAL';
}

export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** Errors of the database itself (full, locked, read-only, corrupt): a pass stops at the first. */
export function isDatabaseError(code: string): boolean {
  return code.startsWith('SQLITE_') || code === 'E_DB';
}

/** Failures of our own machinery, not of the input: the same input can succeed later. */
export function isInfrastructure(code: string): boolean {
  return code.startsWith('SQLITE_') || code === 'E_DB' || code === 'E_WORKER';
}

/**
 * A database error as the operator needs it: the database's own message and code, and the file.
 * ("database /var/lib/ruawatch/ruawatch.sqlite: database or disk is full [SQLITE_FULL]"), as store/db.ts
 * names the errors of opening it.
 */
export function databaseError(file: string, err: unknown): RuawatchError {
  if (err instanceof RuawatchError && (err.code === 'E_DB' || err.code === 'E_BUSY')) return err;
  const code = errorCode(err);
  return new RuawatchError('E_DB', `database ${file}: ${errorMessage(err)}${code.startsWith('SQLITE_') ? ` [${code}]` : ''}`, {
    cause: err,
  });
}
