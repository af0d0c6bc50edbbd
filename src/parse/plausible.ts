/**
 * Plausibility checks at the parse boundary. A report is a stranger's statement; one that cannot
 * be true (a date range of 9,000 years, a count of 10^30 messages, a source IP of "<script>") is
 * refused whole with a code of its own, never stored "as given" or quietly turned into 0: a report
 * kept in part would skew every pass rate it feeds without anyone knowing. The reason is recorded
 * and a mail goes to the Invalid folder, where a person can look at it.
 */
import { RuawatchError } from '../errors.js';
import { limitSetting, type Limits } from '../unpack/limits.js';
import { canonicalIp, clean } from './normalise.js';

/** 2000-01-01T00:00:00Z. DMARC (2012) and TLS reporting (2018) are younger: an earlier date is a broken clock. */
export const EARLIEST_REPORT_TIME = 946_684_800;

/**
 * How far past the ingest clock a report may end: reports are sent after their period, so only
 * time zones written wrong and clock skew put an end in the future; a day of each.
 */
export const FUTURE_SLACK_SECONDS = 2 * 86_400;

const DAY = 86_400;

/**
 * What a value is, for an error message; a function when building the text for every value read
 * would cost more than the check (per record of a report of millions).
 */
export type Label = string | (() => string);

function label(what: Label): string {
  return typeof what === 'string' ? what : what();
}

/** The clock a report is judged by, in epoch seconds. */
export function nowSeconds(now?: number): number {
  return now ?? Math.floor(Date.now() / 1000);
}

/**
 * Refuses a date range that cannot be a report's (E_DATE_RANGE): begin after end, before
 * 2000-01-01, ending more than two days after `now`, or longer than [limits] max_report_days.
 */
export function checkDateRange(begin: number, end: number, now: number, limits: Limits, what = 'the report'): void {
  const range = `${formatTime(begin)} to ${formatTime(end)}`;
  const refuse = (why: string) => new RuawatchError('E_DATE_RANGE', `${what} has an implausible date range (${range}): ${why}`);
  if (begin > end) throw refuse('it begins after it ends');
  if (begin < EARLIEST_REPORT_TIME) throw refuse('it begins before 2000-01-01');
  if (end > now + FUTURE_SLACK_SECONDS) throw refuse(`it ends more than 2 days after now (${formatTime(now)})`);
  if (end - begin > limits.maxReportDays * DAY) {
    throw refuse(`it covers more than ${limits.maxReportDays} days (limit: [limits] ${limitSetting('maxReportDays')})`);
  }
}

/** An arrival time (a failure report's): not before 2000-01-01, not more than two days after `now`. */
export function checkTime(t: number, now: number, what: string): void {
  if (t < EARLIEST_REPORT_TIME) throw new RuawatchError('E_DATE_RANGE', `${what} (${formatTime(t)}) is before 2000-01-01`);
  if (t > now + FUTURE_SLACK_SECONDS) {
    throw new RuawatchError('E_DATE_RANGE', `${what} (${formatTime(t)}) is more than 2 days after now (${formatTime(now)})`);
  }
}

/** Digits, with a plus sign and a ".0" tail as some reporters write them. */
const COUNT_TEXT = /^\+?(\d+)(?:\.0*)?$/;

/**
 * A message or session count: null when absent (null, or empty text), else a whole number from 0
 * to [limits] max_message_count. Anything else (negative, a fraction, 1e30, 29 digits, a word) is
 * refused with E_COUNT. Text may carry a plus sign and a ".0" tail, as some reporters write it.
 */
export function readCount(v: string | number | null | undefined, what: Label, limits: Limits): number | null {
  let n: number;
  if (typeof v === 'number') {
    n = v;
    if (!Number.isInteger(n) || n < 0) throw new RuawatchError('E_COUNT', `${label(what)} is ${quote(String(v))}, not a whole number`);
  } else {
    const t = clean(v);
    if (t === null) return null;
    const m = COUNT_TEXT.exec(t);
    if (!m) throw new RuawatchError('E_COUNT', `${label(what)} is ${quote(t)}, not a whole number`);
    n = Number(m[1]);
  }
  if (n > limits.maxMessageCount || !Number.isSafeInteger(n)) {
    throw new RuawatchError(
      'E_COUNT',
      `${label(what)} is ${quote(String(v).trim())}, more than ${limits.maxMessageCount} (limit: [limits] ${limitSetting('maxMessageCount')})`,
    );
  }
  return n;
}

/** Refuses a report whose counts together pass [limits] max_message_count. */
export function checkTotal(total: number, what: string, limits: Limits): void {
  // Past 2^53 a sum is no longer exact, whatever the limit is set to.
  if (total > limits.maxMessageCount || !Number.isSafeInteger(total)) {
    throw new RuawatchError(
      'E_COUNT',
      `${what} add up to more than ${limits.maxMessageCount} (limit: [limits] ${limitSetting('maxMessageCount')})`,
    );
  }
}

/** The canonical form of an IP address, or E_ADDRESS for text that is not one. */
export function readIp(text: string, what: Label): string {
  const ip = canonicalIp(text);
  if (ip === null) throw new RuawatchError('E_ADDRESS', `${label(what)} ${quote(text)} is not an IP address`);
  return ip;
}

/**
 * C0 control characters other than tab, line feed and carriage return, and DEL: the characters
 * XML 1.0 does not allow in a document either (DEL aside), so aggregate and TLS reports are held
 * to one rule.
 */
const CONTROL = /[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f]/;
/** A UTF-16 surrogate without its pair: JSON's \ud800 escapes allow it, Unicode text cannot hold it. */
const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

/** Refuses text holding NUL or another control character, or a lone surrogate (E_TEXT). */
export function checkText(s: string, what: string): void {
  const c = CONTROL.exec(s);
  if (c) {
    const code = c[0].charCodeAt(0).toString(16).toUpperCase().padStart(4, '0');
    throw new RuawatchError('E_TEXT', `${what} holds the control character U+${code} (at character ${c.index + 1})`);
  }
  if (LONE_SURROGATE.test(s)) throw new RuawatchError('E_TEXT', `${what} holds a broken Unicode character (a lone surrogate)`);
}

/** A value from a report, quoted for an error message: clipped, and with anything odd escaped. */
export function quote(s: string, max = 40): string {
  const clipped = s.length > max ? `${s.slice(0, max)}...` : s;
  const body = JSON.stringify(clipped);
  return s.length > max ? `${body} (${s.length} characters)` : body;
}

/** Epoch seconds as an ISO date-time, or the number itself when no Date can hold it. */
function formatTime(t: number): string {
  const d = new Date(t * 1000);
  return Number.isNaN(d.getTime()) ? String(t) : d.toISOString().replace('.000Z', 'Z');
}
