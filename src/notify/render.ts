import os from 'node:os';
import type { FindingKind, Severity } from '../analyse/types.js';
import type { Message, NotificationEvent } from './types.js';

export const KIND_TITLES: Record<FindingKind, string> = {
  pass_rate_drop: 'DMARC pass rate dropped',
  new_failing_source: 'New failing source',
  dkim_selector_broken: 'DKIM selector broken',
  tls_failures: 'TLS failures',
  reporter_silent: 'Reporter silent',
  policy_changed: 'DMARC policy changed',
};

/** What render needs from an alert row (store/alerts.ts). */
export interface AlertView {
  key: string;
  kind: FindingKind;
  severity: Severity;
  domain: string;
  source_ip: string | null;
  source_name: string | null;
  reporter: string | null;
  summary: string;
  first_seen: number;
}

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
        ? `Open since ${isoTime(a.first_seen)}.`
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

function durationText(seconds: number): string {
  const h = Math.round(seconds / 3600);
  return h < 48 ? `${h} h` : `${Math.round(h / 24)} days`;
}
