import { TextDecoder } from 'node:util';
import { RuawatchError, errorMessage } from '../errors.js';
import { overLimit, type Limits } from '../unpack/limits.js';
import { clean, emailDomain, normaliseDomain, normaliseMxHost, normaliseWord } from './normalise.js';
import { checkDateRange, checkText, checkTotal, nowSeconds, quote, readCount, readIp } from './plausible.js';
import type { TlsFailure, TlsPolicy, TlsReport } from './types.js';

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };
type Obj = { [k: string]: Json };

export interface TlsParseOptions {
  limits: Limits;
  fallbackReporterEmail?: string | null;
  /** The ingest clock in epoch seconds, which the date range is judged by (default: now). */
  now?: number;
}

/**
 * Parses an SMTP TLS report (RFC 8460 section 4). Lenient where reporters are sloppy (counts as
 * strings, mx-host as a string, "failure-error-code" from the drafts, missing optional fields,
 * unknown result types kept as sent), strict where a report would be meaningless without it.
 *
 * Implausible content refuses the whole report (plausible.ts): a control character or a broken
 * Unicode character in any string (E_TEXT), a date range that cannot be a report's
 * (E_DATE_RANGE), a count that is not a whole number up to [limits] max_message_count or session
 * counts that add up past it (E_COUNT), an IP address field that is not an IP address (E_ADDRESS).
 */
export function parseTlsReport(bytes: Uint8Array, opts: TlsParseOptions): TlsReport {
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    throw new RuawatchError('E_ENCODING', 'the JSON is not valid UTF-8 (RFC 8259 section 8.1)');
  }
  let doc: Json;
  try {
    doc = JSON.parse(text) as Json;
  } catch (err) {
    throw new RuawatchError('E_JSON', `not valid JSON: ${errorMessage(err)}`);
  }
  if (!isObj(doc) || !Array.isArray(doc.policies)) {
    throw new RuawatchError('E_NOT_REPORT', 'JSON with no "policies" array: not an SMTP TLS report (RFC 8460)');
  }
  checkStrings(doc, '');
  const range = isObj(doc['date-range']) ? doc['date-range'] : {};
  const begin = parseTime(range['start-datetime'], 'start-datetime');
  const end = parseTime(range['end-datetime'], 'end-datetime');
  if (begin === null || end === null) {
    throw new RuawatchError('E_REPORT', 'the TLS report has no "date-range" (start-datetime / end-datetime)');
  }
  checkDateRange(begin, end, nowSeconds(opts.now), opts.limits, 'the TLS report');
  const reportId = str(doc['report-id']);
  if (!reportId) throw new RuawatchError('E_REPORT', 'the TLS report has no "report-id"');
  const contactInfo = str(doc['contact-info']);
  const reporter = str(doc['organization-name']) ?? emailDomain(contactInfo) ?? emailDomain(opts.fallbackReporterEmail ?? null);
  if (!reporter) throw new RuawatchError('E_REPORT', 'the TLS report names no reporter ("organization-name" is empty)');

  let entries = 0;
  const countEntry = () => {
    if (++entries > opts.limits.maxTlsEntries) {
      throw overLimit('maxTlsEntries', `the TLS report has more than ${opts.limits.maxTlsEntries} policies and failure details`);
    }
  };
  const policies = doc.policies.map((p, i) => {
    countEntry();
    return parsePolicy(p, i, countEntry, opts.limits);
  });
  let sessions = 0;
  for (const p of policies) sessions += p.successful + p.failed;
  checkTotal(sessions, 'the session counts of the TLS report', opts.limits);
  const policyDomain = policies.find((p) => p.policyDomain)?.policyDomain ?? '';
  return { kind: 'tlsrpt', reporter, reportId, policyDomain, begin, end, contactInfo, policies };
}

function parsePolicy(entry: Json, index: number, countEntry: () => void, limits: Limits): TlsPolicy {
  if (!isObj(entry)) throw new RuawatchError('E_REPORT', `policies[${index}] is not an object`);
  const policy = isObj(entry.policy) ? entry.policy : {};
  const summary = isObj(entry.summary) ? entry.summary : {};
  const details = Array.isArray(entry['failure-details']) ? entry['failure-details'] : [];
  const at = `policies[${index}]`;
  const failures: TlsFailure[] = details.filter(isObj).map((d, k) => {
    countEntry();
    const here = `${at}.failure-details[${k}]`;
    return {
      resultType: normaliseWord(str(d['result-type'])) ?? 'unknown',
      sendingMtaIp: ip(d['sending-mta-ip'], `${here}.sending-mta-ip`),
      receivingMxHostname: normaliseMxHost(str(d['receiving-mx-hostname'])),
      receivingMxHelo: clean(str(d['receiving-mx-helo'])),
      receivingIp: ip(d['receiving-ip'], `${here}.receiving-ip`),
      // A failure detail without a count still stands for at least one failed session.
      failedSessions: count(d['failed-session-count'], `${here}.failed-session-count`, limits) ?? 1,
      additionalInformation: str(d['additional-information']),
      failureReasonCode: str(d['failure-reason-code']) ?? str(d['failure-error-code']),
    };
  });
  return {
    policyType: normaliseWord(str(policy['policy-type'])) ?? 'unknown',
    policyDomain: normaliseDomain(str(policy['policy-domain'])),
    policyStrings: strings(policy['policy-string']),
    // Some reporters repeat the policy line ("mx: mx1.example.com") in mx-host.
    mxHosts: strings(policy['mx-host']).flatMap((h) => normaliseMxHost(h.replace(/^\s*mx:\s*/i, '')) ?? []),
    successful: count(summary['total-successful-session-count'], `${at}.summary.total-successful-session-count`, limits) ?? 0,
    failed: count(summary['total-failure-session-count'], `${at}.summary.total-failure-session-count`, limits) ?? 0,
    failures,
  };
}

function isObj(v: Json | undefined): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function str(v: Json | undefined): string | null {
  if (typeof v === 'string') return clean(v);
  if (typeof v === 'number') return String(v);
  return null;
}

function strings(v: Json | undefined): string[] {
  if (Array.isArray(v)) return v.map((x) => str(x)).filter((x): x is string => x !== null);
  const s = str(v);
  return s === null ? [] : [s];
}

/** A count (absent: null); anything but a whole number up to the limit is refused (E_COUNT). */
function count(v: Json | undefined, what: string, limits: Limits): number | null {
  if (v === undefined || v === null) return null;
  if (typeof v === 'number' || typeof v === 'string') return readCount(v, `"${what}"`, limits);
  throw new RuawatchError('E_COUNT', `"${what}" is ${quote(JSON.stringify(v))}, not a whole number`);
}

/** An IP address field (absent: null); text that is not an IP address is refused (E_ADDRESS). */
function ip(v: Json | undefined, what: string): string | null {
  const s = str(v);
  return s === null ? null : readIp(s, `"${what}"`);
}

/**
 * RFC 3339 date-time (RFC 8460 section 4.4) to epoch seconds; null when absent. A value that is
 * not one (a year of five digits, a bare number) is refused (E_DATE_RANGE).
 */
function parseTime(v: Json | undefined, what: string): number | null {
  const s = str(v);
  if (s === null) return null;
  const ms = /^\d{4}-\d{2}-\d{2}/.test(s) ? Date.parse(s) : NaN;
  if (!Number.isFinite(ms)) throw new RuawatchError('E_DATE_RANGE', `the TLS report's "${what}" ${quote(s)} is not an RFC 3339 date-time`);
  return Math.floor(ms / 1000);
}

/** Every string in the document, keys included, is held to checkText (E_TEXT). */
function checkStrings(v: Json, path: string): void {
  if (typeof v === 'string') checkText(v, `the TLS report's "${path || '(root)'}"`);
  else if (Array.isArray(v)) v.forEach((x, i) => checkStrings(x, `${path}[${i}]`));
  else if (isObj(v)) {
    for (const [k, x] of Object.entries(v)) {
      checkText(k, `a key in the TLS report's "${path || '(root)'}"`);
      checkStrings(x, path ? `${path}.${k}` : k);
    }
  }
}
