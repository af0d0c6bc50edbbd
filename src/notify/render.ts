import os from 'node:os';
import type { SourceFields } from '../analyse/senders.js';
import type { FindingKind, Severity } from '../analyse/types.js';
import type { AlertRenderer, AlertView, Message, NotificationEvent } from './types.js';

export type { AlertView } from './types.js';

export const KIND_TITLES: Record<FindingKind, string> = {
  pass_rate_drop: 'DMARC pass rate dropped',
  new_failing_source: 'New failing source',
  dkim_selector_broken: 'DKIM selector broken',
  tls_failures: 'TLS failures',
  reporter_silent: 'Reporter silent',
  policy_changed: 'DMARC policy changed',
};

export function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
}

export function isoTime(t: number): string {
  return `${new Date(t * 1000).toISOString().slice(0, 16).replace('T', ' ')} UTC`;
}

export function renderAlert(a: AlertView, event: Exclude<NotificationEvent, 'digest' | 'test'>, now: number): Message {
  const what = `${KIND_TITLES[a.kind]}: ${a.domain}${a.source_ip ? ` ${a.source_ip}` : ''}`;
  const label = event === 'resolved' ? 'RESOLVED' : a.severity.toUpperCase();
  const title = `[${label}] ${event === 'reminder' ? 'still open: ' : ''}${what}`;
  const lead =
    event === 'resolved'
      ? `No longer seen after ${durationText(now - a.first_seen)} (open since ${isoTime(a.first_seen)}). Last seen:`
      : event === 'reminder'
        ? `Open since ${isoTime(a.first_seen)}.${a.change ? ` ${a.change}` : ''}`
        : null;
  const source = a.source_ip ? (a.source_name ? `${a.source_ip} (${a.source_name})` : a.source_ip) : null;
  const fields = [
    { name: 'Kind', value: a.kind },
    { name: 'Domain', value: a.domain },
    ...(source ? [{ name: 'Source', value: source }] : []),
    ...(a.reporter ? [{ name: 'Reporter', value: a.reporter }] : []),
    { name: 'First seen', value: isoTime(a.first_seen) },
  ];
  const text = [lead, a.summary, '', `key: ${a.key}`].filter((l) => l !== null).join('\n');
  const html =
    `<p><strong>${escapeHtml(title)}</strong></p>` +
    (lead ? `<p>${escapeHtml(lead)}</p>` : '') +
    `<p>${escapeHtml(a.summary)}</p>` +
    `<p><small>${fields.map((f) => `${escapeHtml(f.name)}: ${escapeHtml(f.value)}`).join(' · ')}<br>key: <code>${escapeHtml(a.key)}</code></small></p>`;
  return { event, tone: event === 'resolved' ? 'resolved' : a.severity, title, text, html, fields, at: now };
}

export function renderTest(channel: string, now: number): Message {
  const text = `A test message from ruawatch on ${os.hostname()}: the ${channel} channel works.`;
  return {
    event: 'test',
    tone: 'info',
    title: 'ruawatch test message',
    text,
    html: `<p><strong>ruawatch test message</strong></p><p>${escapeHtml(text)}</p>`,
    fields: [],
    at: now,
  };
}

/**
 * The short plain notice that stands for a message a channel refused for good. It carries nothing
 * from the reports but the alert's kind and policy domain (and the domain only when it looks like
 * one), so whatever made the receiver refuse the message is not in it.
 */
export function renderFallback(
  alert: { kind: FindingKind; domain: string } | null,
  event: NotificationEvent,
  status: string | null,
  now: number,
  how: 'refused' | 'deferred' = 'refused',
): Message {
  const kind = alert && alert.kind in KIND_TITLES ? alert.kind : null;
  const domain = alert && /^[a-z0-9](?:[a-z0-9.-]{0,251}[a-z0-9])?$/i.test(alert.domain) ? alert.domain.toLowerCase() : null;
  const what =
    event === 'digest'
      ? 'The digest'
      : `An alert${event === 'resolved' ? ' (resolved)' : event === 'reminder' ? ' (reminder)' : ''}${kind ? ` of kind ${kind}` : ''}${domain ? ` for ${domain}` : ''}`;
  const title = event === 'digest' ? 'ruawatch: a digest could not be delivered' : 'ruawatch: an alert could not be delivered';
  const text =
    (how === 'refused'
      ? `${what} could not be delivered in full: this channel refused it${status ? ` (${status})` : ''}. `
      : `${what} could not be delivered: this channel kept deferring it${status ? ` (${status})` : ''} while it took other messages. `) +
    'It is kept as parked; the dashboard and "ruawatch notify status" show it.';
  const fields = [...(kind ? [{ name: 'Kind', value: kind }] : []), ...(domain ? [{ name: 'Domain', value: domain }] : [])];
  return {
    event,
    tone: 'warning',
    title,
    text,
    html: `<p><strong>${escapeHtml(title)}</strong></p><p>${escapeHtml(text)}</p>`,
    fields,
    at: now,
  };
}

function durationText(seconds: number): string {
  const h = Math.round(seconds / 3600);
  return h < 48 ? `${h} h` : `${Math.round(h / 24)} days`;
}

export interface DigestData {
  period: 'daily' | 'weekly';
  from: number; // epoch seconds, inclusive
  to: number; // exclusive
  domains: {
    domain: string;
    messages: number;
    pass_rate: number | null;
    previous_pass_rate: number | null;
    reports: number;
    /** `who` and the fields of analyse/senders.ts when enrichment is on. */
    failing: ({ ip: string; name: string | null; failed: number; messages: number; who?: string } & Partial<SourceFields>)[];
  }[];
  tls: { policy_domain: string; successful: number; failed: number; failures: { result_type: string; count: number }[] }[];
  open_alerts: { severity: Severity; kind: FindingKind; summary: string; first_seen: number }[];
}

const pctText = (r: number | null) => (r === null ? '-' : `${(r * 100).toFixed(1)}%`);
const intText = (n: number) => Math.round(n).toLocaleString('en-US');

/** The daily or weekly digest: pass rates per domain, top failing sources, TLS results, open alerts. */
export function renderDigest(d: DigestData, now: number): Message {
  const day = (t: number) => new Date(t * 1000).toISOString().slice(0, 10);
  const span = d.period === 'daily' ? day(d.from) : `${day(d.from)} to ${day(d.to - 1)}`;
  const title = `ruawatch ${d.period} digest: ${span}`;
  const text: string[] = [];
  const html: string[] = [`<p><strong>${escapeHtml(title)}</strong></p>`];

  text.push('DMARC');
  html.push('<p><strong>DMARC</strong></p><ul>');
  if (d.domains.length === 0) {
    text.push('  no aggregate reports in this period');
    html.push('<li>no aggregate reports in this period</li>');
  }
  for (const x of d.domains) {
    const trend = x.previous_pass_rate === null ? '' : ` (before: ${pctText(x.previous_pass_rate)})`;
    const line = `${x.domain}: ${intText(x.messages)} messages, ${pctText(x.pass_rate)} passing DMARC${trend}, ${x.reports} reports`;
    text.push(`  ${line}`);
    const failing = x.failing.map((f) => {
      const about = [f.name, f.who].filter(Boolean).join('; ');
      return `${f.ip}${about ? ` (${about})` : ''}: ${intText(f.failed)} of ${intText(f.messages)} failing`;
    });
    for (const f of failing) text.push(`    ${f}`);
    html.push(
      `<li>${escapeHtml(line)}${failing.length ? `<ul>${failing.map((f) => `<li>${escapeHtml(f)}</li>`).join('')}</ul>` : ''}</li>`,
    );
  }
  html.push('</ul>');

  text.push('', 'TLS');
  html.push('<p><strong>TLS</strong></p><ul>');
  if (d.tls.length === 0) {
    text.push('  no TLS reports in this period');
    html.push('<li>no TLS reports in this period</li>');
  }
  for (const t of d.tls) {
    const total = t.successful + t.failed;
    const kinds = t.failures.map((f) => `${f.result_type} ${intText(f.count)}`).join(', ');
    const line = `${t.policy_domain}: ${intText(t.failed)} of ${intText(total)} sessions failed${kinds ? ` (${kinds})` : ''}`;
    text.push(`  ${line}`);
    html.push(`<li>${escapeHtml(line)}</li>`);
  }
  html.push('</ul>');

  text.push('', `Open alerts: ${d.open_alerts.length}`);
  html.push(`<p><strong>Open alerts: ${d.open_alerts.length}</strong></p><ul>`);
  for (const a of d.open_alerts) {
    const line = `[${a.severity}] ${a.summary} (since ${isoTime(a.first_seen)})`;
    text.push(`  ${line}`);
    html.push(`<li>${escapeHtml(line)}</li>`);
  }
  html.push('</ul>');

  const worst = d.open_alerts.some((a) => a.severity === 'critical') ? 'critical' : d.open_alerts.length ? 'warning' : 'info';
  const fields = d.domains.slice(0, 20).map((x) => ({ name: x.domain, value: `${pctText(x.pass_rate)} of ${intText(x.messages)}` }));
  return { event: 'digest', tone: worst, title, text: text.join('\n'), html: html.join(''), fields, at: now };
}

/** The renderer the alert store queues messages with. */
export const alertRenderer: AlertRenderer = { alert: renderAlert, fallback: renderFallback };
