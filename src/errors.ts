/**
 * Every error ruawatch raises carries a stable `code` from ERROR_CODES, so scripts, logs and the
 * ingest_failures table can tell a zip bomb from a typo without parsing English. Whether trying
 * again may succeed is the error's `retryable` property, never its class. Errors of the libraries
 * underneath (SQLite's `SQLITE_BUSY`, a socket's `ECONNRESET`) keep their own code where they pass
 * through as they are (errorCode); test/unit/errors.test.ts holds this list and the codes raised in
 * src/ equal, both ways.
 */
export const ERROR_CODES = {
  // The input: it fails (or is skipped), the others go on.
  E_EMPTY: 'zero bytes',
  E_LIMIT: 'a cap from unpack/limits.ts was exceeded',
  E_GZIP: 'corrupt gzip or zlib stream',
  E_ZIP: 'corrupt or unreadable zip archive',
  E_MAIL: 'a mail that could not be parsed',
  E_ENCODING: 'bytes that do not decode in the declared character set',
  E_XML: 'not well-formed XML',
  E_XML_DOCTYPE: 'a DOCTYPE (entities, XXE) was present; refused',
  E_JSON: 'not valid JSON',
  E_NOT_REPORT: 'no report in it (a mail without attachment, a PDF, XML or JSON that is not a report): skipped, not failed',
  E_REPORT: 'a report missing a field it cannot be stored without',
  E_DATE_RANGE: "a report's dates are implausible (begin after end, before 2000, in the future, too long a span)",
  E_COUNT: 'a message or session count that is not a plausible whole number',
  E_ADDRESS: 'a source IP (or another IP address field) that is not an IP address',
  E_TEXT: 'text holding NUL or other control characters, or broken Unicode',
  E_IO: 'the input could not be read',
  // The operator's side.
  E_CONFIG: 'configuration problem',
  E_USAGE: 'command-line usage',
  E_ENRICH: 'an enrichment data file ([enrich]) is missing, unreadable or malformed',
  // Infrastructure: the same input can succeed later (isInfrastructure).
  E_DB: 'database problem (full, locked, read-only, corrupt)',
  E_WORKER: 'an ingest worker thread stopped',
  // Mailboxes and channels.
  E_IMAP: 'the mail server refused or failed',
  E_GRAPH: 'Microsoft Graph refused or failed (a [[mailbox]] of kind "graph")',
  E_NETWORK: 'an HTTP service (a token endpoint, Microsoft Graph) gave no complete answer; the caller reports it as E_AUTH or E_GRAPH',
  E_AUTH: 'no OAuth2 access token could be had for a mailbox (the token endpoint refused, a token command failed)',
  E_BUSY: 'the mailbox is being read, or the channel queue delivered, by another ruawatch process (store/leases.ts)',
  E_TIMEOUT: 'a pass ran past its deadline ([schedule] poll_timeout_seconds)',
  E_DELIVERY: 'a notification channel refused or failed a send or a probe (notify/: DeliveryError, with its scope)',
  // ruawatch itself.
  E_UNAVAILABLE: "the web server's query thread is saturated or stopping (answered 503 when retryable)",
  E_INTERNAL: 'a defect of ruawatch: an invariant of its own code did not hold',
} as const;

export type ErrorCode = keyof typeof ERROR_CODES;

export function isErrorCode(code: string): code is ErrorCode {
  return Object.hasOwn(ERROR_CODES, code);
}

export interface RuawatchErrorOptions {
  cause?: unknown;
  /**
   * Trying again may succeed: a mailbox connection that was established and then dropped, a
   * channel's network failure. Errors of a connection that never succeeded, of the input or of
   * the configuration are not.
   */
  retryable?: boolean;
  /** What to check (a wrong port, TLS against a plain port...), shown after the message (messageWithHint). */
  hint?: string | null;
}

export class RuawatchError extends Error {
  readonly code: ErrorCode;
  readonly retryable: boolean;
  readonly hint: string | null;
  constructor(code: ErrorCode, message: string, options?: RuawatchErrorOptions) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'RuawatchError';
    this.code = code;
    this.retryable = options?.retryable ?? false;
    this.hint = options?.hint ?? null;
  }
}

/** The code of any error: ours, a library's own (`SQLITE_BUSY`, `ECONNRESET`), else E_INTERNAL. */
export function errorCode(err: unknown): string {
  if (err && typeof err === 'object' && 'code' in err && typeof err.code === 'string') return err.code;
  return 'E_INTERNAL';
}

/** The code of any error as one of ours: a database's own as E_DB, anything unknown as E_INTERNAL. */
export function ownCode(err: unknown): ErrorCode {
  return asOwnCode(errorCode(err));
}

export function asOwnCode(code: string): ErrorCode {
  if (isErrorCode(code)) return code;
  return isDatabaseError(code) ? 'E_DB' : 'E_INTERNAL';
}

/** Whether trying again may succeed: the error says so (`retryable: true`), whatever its class. */
export function isRetryable(err: unknown): boolean {
  return !!err && typeof err === 'object' && 'retryable' in err && err.retryable === true;
}

/** The error's hint, if it carries one (see RuawatchErrorOptions). */
export function hintOf(err: unknown): string | null {
  return err && typeof err === 'object' && 'hint' in err && typeof err.hint === 'string' && err.hint ? err.hint : null;
}

export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** The message and, when there is one, the hint: "…: connect ECONNREFUSED; nothing accepts connections on port 143…". */
export function messageWithHint(err: unknown): string {
  const hint = hintOf(err);
  return hint ? `${errorMessage(err)}; ${hint}` : errorMessage(err);
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
  const code = errorCode(err);
  if (err instanceof RuawatchError && (code === 'E_DB' || code === 'E_BUSY')) return err;
  return new RuawatchError('E_DB', `database ${file}: ${errorMessage(err)}${code.startsWith('SQLITE_') ? ` [${code}]` : ''}`, {
    cause: err,
  });
}
