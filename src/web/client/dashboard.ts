/// <reference lib="dom" />
/**
 * The dashboard's script, run in the browser (served as /assets/dashboard.js). Everything from a
 * report is attacker-controlled (a spoofer chooses its header_from), so data only ever reaches
 * the page through textContent, never as HTML.
 */
import type uPlotType from 'uplot';

declare const uPlot: typeof uPlotType;

interface Span {
  from: string;
  to: string;
  days: number;
}

interface Overview {
  generated_at: string;
  days: number;
  /** The whole days the charts cover, and the alerts' recent days the sources table covers. */
  period: Span;
  recent: Span;
  /** The first and last day with data in the database. */
  data: { dmarc: { first: string; last: string } | null; tls: { first: string; last: string } | null };
  domain: string | null;
  domain_count: number;
  /** Lists are cut to these lengths; `truncated` says which were. */
  limits: { sources: number; reports: number };
  truncated: { sources: boolean; reports: boolean };
  domains: { domain: string; days: { day: string; messages: number; pass_rate: number | null }[] }[];
  all_domains: { domain: string; days: { day: string; messages: number; pass_rate: number | null }[] } | null;
  tls: { domain: string; days: { day: string; successful: number; failed: number }[] }[];
  sources: ({
    domain: string;
    ip: string;
    name: string | null;
    messages: number;
    pass_rate: number | null;
    previous_pass_rate: number | null;
    dkim_aligned_pass: number;
    spf_aligned_pass: number;
    reporters: number;
  } & Who)[];
  /** Whether sources carry who they are (asn, as_org, country, service, service_type), and why not. */
  enrichment?: { on: boolean; error?: string | null };
  alerts: { open: AlertRow[]; recent: AlertRow[] };
  notifications: { channels: ChannelRow[]; parked: ParkedRow[] };
  reports: {
    id: number;
    kind: string;
    reporter: string;
    report_id: string;
    policy_domain: string;
    begin: number;
    end: number;
    record_count: number;
    message_count: number;
  }[];
}

/** Who a source is, when enrichment is on (docs/enrichment.md). */
interface Who {
  asn?: number | null;
  as_org?: string | null;
  country?: string | null;
  service?: string | null;
  service_type?: string | null;
}

/** store/alerts.ts ChannelStatus and ParkedNotification, as /api/overview sends them. */
interface ChannelRow {
  channel: string;
  pending: number;
  parked: number;
  last_delivered_at: number | null;
  failing_since: number | null;
  held: boolean;
  last_error: string | null;
}

interface ParkedRow {
  channel: string;
  event: string;
  title: string;
  parked_at: number;
  reason: string;
  attempts: number;
}

interface AlertRow {
  key: string;
  kind: string;
  severity: string;
  domain: string;
  source_ip: string | null;
  summary: string;
  first_seen: number;
  last_seen: number;
  resolved_at: number | null;
}

const state: {
  charts: Record<string, uPlotType>;
  ticks: Record<string, number[]>;
  overview: Overview | null;
  detail: unknown;
  /** The sources table's service filter: '' all, NO_SERVICE sources of no known service. */
  service: string;
} = {
  charts: {},
  ticks: {},
  overview: null,
  detail: null,
  service: '',
};
(window as unknown as { ruawatch: typeof state }).ruawatch = state;

const COLOURS = ['#1976d2', '#d32f2f', '#2e7d32', '#f9a825', '#6a1b9a', '#00838f', '#5d4037', '#c2185b'];

function el<K extends keyof HTMLElementTagNameMap>(tag: K, text?: string | number | null, cls?: string): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

const pct = (r: number | null) => (r === null ? '-' : `${(r * 100).toFixed(1)}%`);
const int = (n: number) => Math.round(n).toLocaleString('en-US');
const date = (t: number) => new Date(t * 1000).toISOString().slice(0, 10);
const time = (t: number) => new Date(t * 1000).toISOString().slice(0, 16).replace('T', ' ');
const epochDay = (day: string) => Date.parse(`${day}T00:00:00Z`) / 1000;

function table(head: string[], rows: (string | number | null | Node)[][], onRow?: (i: number) => void): HTMLTableElement {
  const t = el('table');
  const tr = el('tr');
  for (const h of head) tr.append(el('th', h));
  t.append(el('thead'));
  t.tHead!.append(tr);
  const body = el('tbody');
  rows.forEach((cells, i) => {
    const r = el('tr');
    for (const c of cells) {
      const td = el('td');
      if (c instanceof Node) td.append(c);
      else td.textContent = c === null ? '-' : String(c);
      r.append(td);
    }
    if (onRow) {
      r.classList.add('clickable');
      r.tabIndex = 0;
      r.addEventListener('click', () => onRow(i));
      r.addEventListener('keydown', (e) => e.key === 'Enter' && onRow(i));
    }
    body.append(r);
  });
  t.append(body);
  return t;
}

const DAY = 86_400;

/** Every day from `from` to `to` (YYYY-MM-DD, inclusive): days without data are gaps, not skipped. */
function daysOf(span: Span): string[] {
  const out: string[] = [];
  for (let t = epochDay(span.from); t <= epochDay(span.to); t += DAY) out.push(date(t));
  return out;
}

/** Ticks on UTC midnights, every 1, 2, 7, 14... days, as many as fit. */
function dayTicks(id: string) {
  return {
    splits: (u: uPlotType, _axis: number, min: number, max: number) => {
      const room = Math.max(2, Math.floor(u.bbox.width / devicePixelRatio / 90));
      const step = [1, 2, 7, 14, 28, 91, 182, 364].find((n) => (max - min) / (n * DAY) <= room) ?? 364;
      const out: number[] = [];
      for (let t = Math.ceil(min / DAY) * DAY; t <= max; t += DAY) if (Math.round(t / DAY) % step === 0) out.push(t);
      state.ticks[id] = out;
      return out;
    },
    values: (_u: uPlotType, splits: number[]) => splits.map((t) => date(t)),
  };
}

function chart(
  id: string,
  title: string,
  days: string[],
  series: { label: string; values: (number | null)[]; colour: string }[],
  yLabel: string,
  empty: string | null,
  range?: [number, number],
): void {
  const box = document.getElementById(id)!;
  box.replaceChildren(el('h3', title, 'chart-title'));
  state.charts[id]?.destroy();
  delete state.charts[id];
  if (empty !== null) {
    box.append(el('p', empty, 'empty'));
    return;
  }
  const width = Math.max(320, box.clientWidth || 800);
  const opts: uPlotType.Options = {
    width,
    height: 260,
    scales: { x: { time: true }, y: range ? { range } : {} },
    axes: [dayTicks(id), { label: yLabel }],
    series: [
      {},
      ...series.map((s) => ({ label: s.label, stroke: s.colour, width: 2, spanGaps: false, points: { show: days.length < 60 } })),
    ],
  };
  const data = [days.map(epochDay), ...series.map((s) => s.values)] as uPlotType.AlignedData;
  state.charts[id] = new uPlot(opts, data, box);
}

/** What an empty chart says: the period it shows, and the period the database has data for. */
function emptyText(kind: string, o: Overview, extent: { first: string; last: string } | null): string {
  const stored = extent ? `The database has them from ${extent.first} to ${extent.last}.` : 'None are stored yet.';
  return `No ${kind} from ${o.period.from} to ${o.period.to}. ${stored}`;
}

function renderCharts(o: Overview): void {
  const days = daysOf(o.period);
  const lines = o.domains.map((d, i) => {
    const by = new Map(d.days.map((x) => [x.day, x.pass_rate === null ? null : x.pass_rate * 100]));
    return { label: d.domain, values: days.map((x) => by.get(x) ?? null), colour: COLOURS[i % COLOURS.length]! };
  });
  if (o.all_domains && o.domain_count > o.domains.length) {
    const by = new Map(o.all_domains.days.map((x) => [x.day, x.pass_rate === null ? null : x.pass_rate * 100]));
    lines.push({ label: `all ${o.domain_count} domains`, values: days.map((x) => by.get(x) ?? null), colour: '#000000' });
  }
  const hasDmarc = lines.some((l) => l.values.some((v) => v !== null));
  chart(
    'pass-chart',
    o.domain_count > o.domains.length
      ? `DMARC pass rate: the ${o.domains.length} domains with the most mail, of ${o.domain_count}`
      : 'DMARC pass rate per domain',
    days,
    lines,
    '% passing',
    hasDmarc ? null : emptyText('aggregate reports', o, o.data.dmarc),
    [0, 100],
  );
  const tlsDays = new Map<string, { successful: number; failed: number }>();
  for (const d of o.tls) {
    for (const x of d.days) {
      const t = tlsDays.get(x.day) ?? { successful: 0, failed: 0 };
      t.successful += x.successful;
      t.failed += x.failed;
      tlsDays.set(x.day, t);
    }
  }
  chart(
    'tls-chart',
    o.domain ? `TLS sessions (${o.domain})` : 'TLS sessions (all policy domains)',
    days,
    [
      { label: 'successful', values: days.map((x) => tlsDays.get(x)?.successful ?? null), colour: '#2e7d32' },
      { label: 'failed', values: days.map((x) => tlsDays.get(x)?.failed ?? null), colour: '#d32f2f' },
    ],
    'sessions',
    tlsDays.size ? null : emptyText('TLS reports', o, o.data.tls),
  );
}

function trend(s: Overview['sources'][number]): Node {
  if (s.pass_rate === null || s.previous_pass_rate === null) return el('span', s.previous_pass_rate === null ? 'new' : '-', 'trend-new');
  const d = (s.pass_rate - s.previous_pass_rate) * 100;
  if (Math.abs(d) < 0.5) return el('span', '=', 'trend-flat');
  return el('span', `${d > 0 ? '▲' : '▼'} ${Math.abs(d).toFixed(1)} pt`, d > 0 ? 'trend-up' : 'trend-down');
}

const NO_SERVICE = '\u0000none';
const network = (w: Who) => (w.asn === null || w.asn === undefined ? null : `AS${w.asn}${w.as_org ? ` ${w.as_org}` : ''}`);
const serviceText = (w: Who) => (w.service ? `${w.service}${w.service_type ? ` (${w.service_type})` : ''}` : null);

function renderSources(o: Overview): void {
  const who = o.enrichment?.on === true;
  const shown = o.sources
    .slice(0, 200)
    .filter((s) => !who || state.service === '' || (state.service === NO_SERVICE ? !s.service : s.service === state.service));
  const rows = shown.map((s) => [
    s.domain,
    s.ip,
    s.name,
    ...(who ? [network(s), s.country ?? null, serviceText(s)] : []),
    int(s.messages),
    pct(s.pass_rate),
    trend(s),
    pct(s.messages ? s.dkim_aligned_pass / s.messages : null),
    pct(s.messages ? s.spf_aligned_pass / s.messages : null),
    s.reporters,
  ]);
  const head = [
    'Domain',
    'Source IP',
    'Reverse DNS',
    ...(who ? ['Network', 'Country', 'Service'] : []),
    'Messages',
    'Pass rate',
    'Trend',
    'DKIM aligned',
    'SPF aligned',
    'Reporters',
  ];
  const parts: Node[] = [];
  if (who) parts.push(serviceFilter(o));
  parts.push(
    rows.length
      ? table(head, rows)
      : el(
          'p',
          o.sources.length ? 'No source of this service.' : emptyText('aggregate reports', { ...o, period: o.recent }, o.data.dmarc),
          'empty',
        ),
  );
  if (who) parts.push(attribution());
  else if (o.enrichment?.error) parts.push(el('p', `Who is sending is not shown: ${o.enrichment.error}`, 'empty'));
  document.getElementById('sources')!.replaceChildren(...parts);
  document.getElementById('sources-title')!.textContent =
    `Sources, ${o.recent.from} to ${o.recent.to} (the ${o.recent.days} days the alerts judge), trend against the ${o.recent.days} days before`;
  const note = `The ${o.limits.sources} sources with the most messages.`;
  if (o.truncated.sources) document.getElementById('sources')!.prepend(el('p', note, 'empty'));
}

/** A choice of the services among the sources, most messages first; choosing one redraws the table. */
function serviceFilter(o: Overview): Node {
  const messages = new Map<string, number>();
  for (const s of o.sources) {
    const k = s.service ?? NO_SERVICE;
    messages.set(k, (messages.get(k) ?? 0) + s.messages);
  }
  const select = el('select');
  select.id = 'service-filter';
  const option = (value: string, text: string) => {
    const opt = el('option', text);
    opt.value = value;
    opt.selected = value === state.service;
    return opt;
  };
  select.append(option('', 'All services'));
  for (const [k, n] of [...messages].sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]))) {
    select.append(option(k, `${k === NO_SERVICE ? 'No known service' : k} (${int(n)} messages)`));
  }
  select.addEventListener('change', () => {
    state.service = select.value;
    renderSources(o);
  });
  const label = el('label', 'Service: ');
  label.append(select);
  return label;
}

/** DB-IP's terms ask a page that shows its data to link to it (docs/enrichment.md, "Licences"). */
function attribution(): Node {
  const p = el('p', 'Networks: ip-location-db, from RouteViews, NRO and ', 'empty');
  const a = el('a', 'IP Geolocation by DB-IP');
  a.href = 'https://db-ip.com';
  p.append(a, ' (CC BY 4.0).');
  return p;
}

function renderAlerts(o: Overview): void {
  const sev = (s: string) => el('span', s, `sev sev-${s}`);
  const open = o.alerts.open.map((a) => [sev(a.severity), a.kind, a.summary, time(a.first_seen)]);
  const recent = o.alerts.recent
    .filter((a) => a.resolved_at !== null)
    .map((a) => [sev(a.severity), a.kind, a.summary, `${time(a.first_seen)} – ${time(a.resolved_at!)}`]);
  document
    .getElementById('alerts-open')!
    .replaceChildren(open.length ? table(['Severity', 'Kind', 'Summary', 'Since'], open) : el('p', 'No open alerts.', 'empty'));
  document
    .getElementById('alerts-recent')!
    .replaceChildren(recent.length ? table(['Severity', 'Kind', 'Summary', 'Open'], recent) : el('p', 'None resolved recently.', 'empty'));
}

/**
 * Delivery: a line per channel that has anything undelivered or is failing, and the messages
 * parked for good with the reason their receiver gave (`ruawatch notify status` says the same).
 */
function renderNotifications(o: Overview): void {
  const box = document.getElementById('notifications')!;
  const troubled = o.notifications.channels.filter((c) => c.pending || c.parked || c.failing_since !== null || c.held);
  if (!troubled.length) {
    box.replaceChildren(el('p', 'Every notification was delivered.', 'empty'));
    return;
  }
  const state = (c: ChannelRow) =>
    c.held ? 'held: every message would fail' : c.failing_since !== null ? `failing since ${time(c.failing_since)}` : 'delivering';
  const parts: Node[] = [
    table(
      ['Channel', 'State', 'Waiting', 'Parked', 'Last delivered', 'Last error'],
      troubled.map((c) => [
        c.channel,
        state(c),
        c.pending,
        c.parked,
        c.last_delivered_at === null ? '-' : time(c.last_delivered_at),
        c.last_error ?? '-',
      ]),
    ),
  ];
  if (o.notifications.parked.length) {
    parts.push(el('p', 'Parked for good (not retried; a short notice was sent in their place where the channel took it):'));
    parts.push(
      table(
        ['Parked', 'Channel', 'Message', 'Reason', 'Attempts'],
        o.notifications.parked.map((n) => [time(n.parked_at), n.channel, `${n.event}: ${n.title}`, n.reason, n.attempts]),
      ),
    );
  }
  box.replaceChildren(...parts);
}

function renderReports(o: Overview): void {
  const rows = o.reports.map((r) => [
    date(r.begin),
    r.kind,
    r.reporter,
    r.policy_domain,
    r.kind === 'dmarc' ? int(r.record_count) : '-',
    r.kind === 'dmarc' ? int(r.message_count) : '-',
    r.report_id,
  ]);
  document
    .getElementById('reports')!
    .replaceChildren(
      rows.length
        ? table(
            ['Day', 'Kind', 'Reporter', 'Policy domain', 'Records', 'Messages', 'Report id'],
            rows,
            (i) => void openReport(o.reports[i]!.id),
          )
        : el('p', 'No reports yet.', 'empty'),
    );
}

type Json = Record<string, unknown>;

async function openReport(id: number): Promise<void> {
  const box = document.getElementById('detail')!;
  box.replaceChildren(el('p', 'Loading…'));
  const res = await fetch(`api/reports/${id}`);
  if (!res.ok) {
    box.replaceChildren(el('p', `Could not load report ${id}: ${res.status}`, 'error'));
    return;
  }
  const d = (await res.json()) as {
    report: Json;
    policy?: Json | null;
    records?: Json[];
    policies?: Json[];
    failure?: Json | null;
    limits?: Record<string, number>;
    truncated?: Record<string, boolean>;
  };
  state.detail = d;
  const r = d.report;
  const head = el('h3', `${String(r.kind)} report ${String(r.report_id)} from ${String(r.reporter)}`);
  const meta = el(
    'p',
    `${String(r.policy_domain)}, ${time(Number(r.begin_ts))} to ${time(Number(r.end_ts))} UTC, received as ${String(r.input)}`,
  );
  const parts: Node[] = [head, meta];
  const cut = Object.entries(d.truncated ?? {}).filter(([, v]) => v);
  if (cut.length) {
    const what = cut.map(([k]) => `${d.limits?.[k] ?? '?'} ${k === 'failures' ? 'failure details per policy' : k}`).join(' and ');
    parts.push(el('p', `This report is long: only the first ${what} are shown.`, 'empty'));
  }
  if (r.pruned_at !== null && r.pruned_at !== undefined) {
    parts.push(
      el(
        'p',
        `Its records were deleted on ${date(Number(r.pruned_at))} under [retention]; the daily totals they made keep counting in the charts.`,
        'empty',
      ),
    );
  }
  if (d.policy) {
    const p = d.policy;
    parts.push(
      el(
        'p',
        `Published policy: p=${String(p.p ?? '-')} sp=${String(p.sp ?? '-')} pct=${String(p.pct ?? '-')} adkim=${String(p.adkim ?? '-')} aspf=${String(p.aspf ?? '-')}`,
      ),
    );
  }
  if (d.records) {
    // Records carry who their source is when enrichment is on.
    const who = d.records.some((x) => 'service' in x);
    const results = (list: unknown, key: string) =>
      (list as Json[]).map((x) => `${String(x.domain ?? '?')}${x[key] ? `/${String(x[key])}` : ''}: ${String(x.result ?? '?')}`).join(', ');
    parts.push(
      table(
        [
          'Source IP',
          ...(who ? ['Who'] : []),
          'Messages',
          'Disposition',
          'DKIM aligned',
          'SPF aligned',
          'Header from',
          'DKIM results',
          'SPF results',
          'Reasons',
        ],
        d.records.map((x) => [
          String(x.source_ip),
          ...(who ? [serviceText(x as Who) ?? ([network(x as Who), (x as Who).country].filter(Boolean).join(', ') || null)] : []),
          int(Number(x.count)),
          x.disposition as string,
          x.dkim_aligned as string,
          x.spf_aligned as string,
          x.header_from as string,
          results(x.dkim_results, 'selector'),
          results(x.spf_results, 'scope'),
          (x.reasons as Json[]).map((y) => String(y.type)).join(', '),
        ]),
      ),
    );
  }
  if (d.policies) {
    for (const p of d.policies) {
      parts.push(
        el(
          'p',
          `${String(p.policy_type)} policy for ${String(p.policy_domain ?? '-')} (MX: ${(p.mx_hosts as string[]).join(', ') || '-'}): ${int(Number(p.successful))} successful, ${int(Number(p.failed))} failed sessions`,
        ),
      );
      const failures = p.failures as Json[];
      if (failures.length) {
        parts.push(
          table(
            ['Result', 'Sending MTA', 'Receiving MX', 'Receiving IP', 'Sessions', 'Details'],
            failures.map((f) => [
              f.result_type as string,
              f.sending_mta_ip as string,
              f.receiving_mx_hostname as string,
              f.receiving_ip as string,
              int(Number(f.failed_sessions)),
              (f.additional_information ?? f.failure_reason_code) as string,
            ]),
          ),
        );
      }
    }
  }
  if (d.failure) {
    const f = d.failure;
    parts.push(
      table(
        ['Field', 'Value'],
        [
          'feedback_type',
          'source_ip',
          'reported_domain',
          'header_from',
          'auth_failure',
          'dkim_domain',
          'dkim_selector',
          'delivery_result',
        ].map((k) => [k, f[k] as string]),
      ),
    );
  }
  const close = el('button', 'Close');
  close.addEventListener('click', () => box.replaceChildren());
  parts.push(close);
  box.replaceChildren(...parts);
  box.scrollIntoView({ block: 'nearest' });
}

async function load(): Promise<void> {
  const status = document.getElementById('status')!;
  try {
    const res = await fetch(`api/overview${location.search}`);
    if (!res.ok) throw new Error(`${res.status} ${res.statusText}`);
    const o = (await res.json()) as Overview;
    state.overview = o;
    renderCharts(o);
    renderSources(o);
    renderAlerts(o);
    renderNotifications(o);
    renderReports(o);
    const more =
      o.domain_count > o.domains.length
        ? ` Showing the ${o.domains.length} domains with the most mail of ${o.domain_count}; add ?domain=NAME for one.`
        : '';
    status.textContent = `${o.domain ? `${o.domain}: ` : ''}${o.period.from} to ${o.period.to} (the last ${o.days} whole UTC days), as of ${o.generated_at.slice(0, 16).replace('T', ' ')} UTC.${more}`;
    document.body.dataset.loaded = 'true';
  } catch (err) {
    status.textContent = `Could not load the data: ${err instanceof Error ? err.message : String(err)}`;
    status.className = 'error';
  }
}

void load();
