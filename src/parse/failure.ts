import { createHash } from 'node:crypto';
import type { Mail } from '../unpack/mime.js';
import { clean, emailDomain, normaliseDomain, normaliseReportId, normaliseSelector, normaliseWord } from './normalise.js';
import { checkTime, nowSeconds, readIp } from './plausible.js';
import type { FailureReport } from './types.js';

export type FailureParse = { report: FailureReport } | { notFailure: string } | null;

export interface FailureParseOptions {
  /** The ingest clock in epoch seconds, which the arrival time is judged by (default: now). */
  now?: number;
}

/**
 * Recognises a DMARC failure report (RFC 9991, using the ARF format of RFC 5965 with the
 * auth-failure extension of RFC 6591) or the plain-text kind some MTAs (Exim) send, and keeps a
 * summary: who reported, which source IP, which domain, what failed, when. Message bodies and the
 * reported headers are not kept. Returns null when the mail is not a feedback report at all.
 *
 * As with aggregate reports (plausible.ts), a source IP that is not an IP address (E_ADDRESS) or
 * an arrival time before 2000 or more than two days ahead (E_DATE_RANGE) refuses the report.
 */
export function parseFailureReport(mail: Mail, opts: FailureParseOptions = {}): FailureParse {
  const arf = mail.parts.find((p) => p.contentType === 'message/feedback-report');
  const parsed = arf ? fromArf(mail, arf.content.toString('utf8')) : fromText(mail);
  if (parsed && 'report' in parsed) checkTime(parsed.report.begin, nowSeconds(opts.now), "the failure report's arrival time");
  return parsed;
}

function fromArf(mail: Mail, body: string): FailureParse {
  const fields = parseFields(body);
  const one = (k: string) => clean(fields.get(k)?.[0]);
  const feedbackType = normaliseWord(one('feedback-type')) ?? 'unknown';
  if (feedbackType !== 'auth-failure') {
    return { notFailure: `an ARF feedback report of type "${feedbackType}", not a DMARC failure report (auth-failure)` };
  }
  const headers = reportedHeaders(mail);
  const reportedDomain =
    normaliseDomain(one('reported-domain')) ?? emailDomain(headers.get('from')?.[0]) ?? emailDomain(one('original-mail-from'));
  if (!reportedDomain) return { notFailure: 'an auth-failure report that names no Reported-Domain' };
  const arrival = parseDate(one('arrival-date')) ?? parseDate(one('received-date')) ?? mailTime(mail);
  return {
    report: {
      ...keyFor(mail, reportedDomain, arrival, body),
      format: 'arf',
      feedbackType,
      sourceIp: ipOf(one('source-ip')),
      reportedDomain,
      originalMailFrom: stripAngles(one('original-mail-from')),
      originalRcptTo: stripAngles(one('original-rcpt-to')),
      headerFrom: emailDomain(headers.get('from')?.[0]),
      authFailure: normaliseWord(one('auth-failure')),
      deliveryResult: normaliseWord(one('delivery-result')),
      dkimDomain: normaliseDomain(one('dkim-domain')),
      dkimSelector: normaliseSelector(one('dkim-selector')),
      spfDns: one('spf-dns'),
      identityAlignment: normaliseWord(one('identity-alignment')),
      authenticationResults:
        fields
          .get('authentication-results')
          ?.map((v) => v.trim())
          .join('\n') || null,
    },
  };
}

/** Exim's report: "A message claiming to be from you has failed the published DMARC policy". */
function fromText(mail: Mail): FailureParse {
  const text = mail.text;
  if (!/failed the published DMARC policy/i.test(text) && !/^\s*Sender Domain:/im.test(text)) return null;
  const field = (label: string) => clean(new RegExp(`^\\s*${label}:[ \\t]*(.*)$`, 'im').exec(text)?.[1]);
  const reportedDomain = normaliseDomain(field('Sender Domain'));
  if (!reportedDomain) return null;
  const arrival = parseDate(field('Received date')) ?? mailTime(mail);
  const spf = normaliseWord(field('SPF Alignment'));
  const dkim = normaliseWord(field('DKIM Alignment'));
  const alignment = [spf === 'yes' ? 'spf' : null, dkim === 'yes' ? 'dkim' : null].filter(Boolean).join(',') || 'none';
  return {
    report: {
      ...keyFor(mail, reportedDomain, arrival, text),
      format: 'text',
      feedbackType: 'auth-failure',
      sourceIp: ipOf(field('Sender IP Address')),
      reportedDomain,
      originalMailFrom: null,
      originalRcptTo: null,
      headerFrom: reportedDomain,
      authFailure: 'dmarc',
      deliveryResult: normaliseWord(field('DMARC Results')),
      dkimDomain: null,
      dkimSelector: null,
      spfDns: null,
      identityAlignment: alignment,
      authenticationResults: null,
    },
  };
}

function keyFor(mail: Mail, domain: string, arrival: number, body: string) {
  const reporter = emailDomain(mail.fromAddress) ?? 'unknown';
  // The report mail's Message-ID identifies it; without one, the report's own text does.
  const reportId = normaliseReportId(mail.messageId) ?? `sha256:${createHash('sha256').update(body).digest('hex')}`;
  return {
    kind: 'failure' as const,
    reporter,
    reporterEmail: mail.fromAddress,
    reportId,
    policyDomain: domain,
    begin: arrival,
    end: arrival,
  };
}

/** "Name: value" fields with folded continuation lines (RFC 5322 section 2.2.3); repeated names kept. */
export function parseFields(body: string): Map<string, string[]> {
  const out = new Map<string, string[]>();
  let last: { name: string; value: string } | null = null;
  const flush = () => {
    if (!last) return;
    const list = out.get(last.name) ?? [];
    list.push(last.value);
    out.set(last.name, list);
  };
  for (const line of body.split(/\r?\n/)) {
    if (/^[ \t]/.test(line) && last) {
      last.value += ' ' + line.trim();
      continue;
    }
    const m = /^([!-9;-~]+):[ \t]*(.*)$/.exec(line);
    flush();
    last = m ? { name: m[1]!.toLowerCase(), value: m[2]! } : null;
  }
  flush();
  return out;
}

/** Headers of the reported message (message/rfc822 or text/rfc822-headers part). */
function reportedHeaders(mail: Mail): Map<string, string[]> {
  const part = mail.parts.find((p) => p.contentType === 'message/rfc822' || p.contentType === 'text/rfc822-headers');
  if (!part) return new Map();
  const text = part.content.toString('latin1');
  const end = text.search(/\r?\n\r?\n/);
  return parseFields(end >= 0 ? text.slice(0, end) : text);
}

/** The address in a Source-IP field ("192.0.2.1 (mail.example.com)"); E_ADDRESS when it is not one. */
function ipOf(v: string | null): string | null {
  const first = clean(v)?.split(/[\s(]/)[0];
  return first ? readIp(first, "the failure report's Source-IP") : null;
}

function stripAngles(v: string | null): string | null {
  return v === null ? null : v.replace(/^<|>$/g, '').trim() || null;
}

function parseDate(v: string | null): number | null {
  if (!v) return null;
  const ms = Date.parse(v.replace(/\s*\([^)]*\)\s*$/, ''));
  return Number.isFinite(ms) ? Math.floor(ms / 1000) : null;
}

function mailTime(mail: Mail): number {
  return Math.floor((mail.date?.getTime() ?? Date.now()) / 1000);
}
