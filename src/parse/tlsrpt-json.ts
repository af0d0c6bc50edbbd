import { TextDecoder } from 'node:util';
import { RuawatchError, errorMessage } from '../errors.js';
import { overLimit, type Limits } from '../unpack/limits.js';
import { canonicalIp, clean, emailDomain, normaliseDomain, normaliseWord, parseCount } from './normalise.js';
import type { TlsFailure, TlsPolicy, TlsReport } from './types.js';

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };
type Obj = { [k: string]: Json };

export interface TlsParseOptions {
  limits: Limits;
  fallbackReporterEmail?: string | null;
}

/**
 * Parses an SMTP TLS report (RFC 8460 section 4). Lenient where reporters are sloppy (counts as
 * strings, mx-host as a string, "failure-error-code" from the drafts, missing optional fields,
 * unknown result types kept as sent), strict where a report would be meaningless without it.
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
    throw new RuawatchError('E_NOT_REPORT', 'the JSON has no "policies" array: not an SMTP TLS report (RFC 8460)');
  }
  const range = isObj(doc['date-range']) ? doc['date-range'] : {};
  const begin = parseTime(range['start-datetime']);
  const end = parseTime(range['end-datetime']);
  if (begin === null || end === null) {
    throw new RuawatchError('E_REPORT', 'the TLS report has no valid "date-range" (start-datetime / end-datetime)');
  }
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
    return parsePolicy(p, i, countEntry);
  });
  const policyDomain = policies.find((p) => p.policyDomain)?.policyDomain ?? '';
  return { kind: 'tlsrpt', reporter, reportId, policyDomain, begin, end, contactInfo, policies };
}

function parsePolicy(entry: Json, index: number, countEntry: () => void): TlsPolicy {
  if (!isObj(entry)) throw new RuawatchError('E_REPORT', `policies[${index}] is not an object`);
  const policy = isObj(entry.policy) ? entry.policy : {};
  const summary = isObj(entry.summary) ? entry.summary : {};
  const details = Array.isArray(entry['failure-details']) ? entry['failure-details'] : [];
  const failures: TlsFailure[] = details.filter(isObj).map((d) => {
    countEntry();
    return {
      resultType: normaliseWord(str(d['result-type'])) ?? 'unknown',
      sendingMtaIp: ip(d['sending-mta-ip']),
      receivingMxHostname: normaliseDomain(str(d['receiving-mx-hostname'])),
      receivingMxHelo: clean(str(d['receiving-mx-helo'])),
      receivingIp: ip(d['receiving-ip']),
      // A failure detail without a count still stands for at least one failed session.
      failedSessions: count(d['failed-session-count']) ?? 1,
      additionalInformation: str(d['additional-information']),
      failureReasonCode: str(d['failure-reason-code']) ?? str(d['failure-error-code']),
    };
  });
  return {
    policyType: normaliseWord(str(policy['policy-type'])) ?? 'unknown',
    policyDomain: normaliseDomain(str(policy['policy-domain'])),
    policyStrings: strings(policy['policy-string']),
    // Some reporters repeat the policy line ("mx: mx1.example.com") in mx-host.
    mxHosts: strings(policy['mx-host']).map((h) => h.replace(/^mx:\s*/i, '').toLowerCase()),
    successful: count(summary['total-successful-session-count']) ?? 0,
    failed: count(summary['total-failure-session-count']) ?? 0,
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

function count(v: Json | undefined): number | null {
  return typeof v === 'number' || typeof v === 'string' ? parseCount(v) : null;
}

function ip(v: Json | undefined): string | null {
  const s = str(v);
  return s === null ? null : (canonicalIp(s) ?? s.toLowerCase());
}

/** RFC 3339 date-time (RFC 8460 section 4.4) to epoch seconds. */
function parseTime(v: Json | undefined): number | null {
  const s = str(v);
  if (!s || !/^\d{4}-\d{2}-\d{2}/.test(s)) return null;
  const ms = Date.parse(s);
  return Number.isFinite(ms) ? Math.floor(ms / 1000) : null;
}
