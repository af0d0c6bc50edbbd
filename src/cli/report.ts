import { RuawatchError } from '../errors.js';
import { enrichTotals } from '../pipeline/senders.js';
import { reportTotals, type ReportTotals, type SourceTotals } from '../store/summary.js';
import { queuedReports } from '../store/rollups.js';
import { configFlag, dbFlag, defineCommand, jsonFlag } from './command.js';
import { appFor, EXIT_OK, formatInt, formatRate, parseDay, plural } from './common.js';

const TABLE_SOURCES = 15;

export const reportCommand = defineCommand(
  {
    name: 'report',
    summary: 'totals by policy domain and source IP, TLS results, failure reports',
    flags: {
      db: dbFlag,
      config: configFlag,
      domain: { type: 'string', value: 'D', help: 'only this policy domain' },
      since: { type: 'string', value: 'YYYY-MM-DD', help: 'only reports whose date range reaches this UTC day or later' },
      until: { type: 'string', value: 'YYYY-MM-DD', help: 'only reports whose date range starts on or before this UTC day (inclusive)' },
      enrich: {
        type: 'boolean',
        default: false,
        help: 'name who each source is: network, country, known service (loads the enrichment data)',
      },
      json: jsonFlag,
    },
    about: `Totals of the stored reports: per policy domain the messages and how many passed DMARC (DKIM or
SPF pass in policy_evaluated), per source IP the same with DKIM and SPF alignment; TLS sessions
and failures by result type per policy domain; failure reports per domain. The table lists the 15
sources with most messages per domain; --json lists all. Reads the database only.

--enrich adds, per source, its AS number and organisation, country and known service (with
--json: asn, as_org, country, service, service_type), from the data of [enrich]. Off by default:
reading that data costs a one-shot command about half a second and 40 MiB (docs/enrichment.md).`,
    examples: ['ruawatch report --config /etc/ruawatch.toml --domain example.com --since 2026-03-01 --until 2026-03-31'],
  },
  async ({ values }, io) => {
    const since = parseDay('--since', values.since);
    const untilDay = parseDay('--until', values.until);
    const app = appFor(values, io, { level: 'warn', mustExist: true });
    try {
      const db = app.db;
      // --until names the last day included.
      const filter = { domain: values.domain, since, until: untilDay === undefined ? undefined : untilDay + 86400 };
      const totals = reportTotals(db, filter);
      if (values.enrich) {
        const enricher = await app.enricher();
        if (!enricher) throw new RuawatchError('E_CONFIG', 'enrichment is switched off ([enrich] enabled = false)');
        enrichTotals(db, totals, filter, enricher);
      }
      io.stdout.write(values.json ? `${JSON.stringify(totals)}\n` : formatTotals(totals, values.enrich));
      // This command only reads: reports stored but not yet in the rollups are left out, and said so.
      const queued = queuedReports(db);
      if (queued > 0) {
        io.stderr.write(
          `ruawatch: ${plural(queued, 'aggregate report')} stored but not yet in these totals (an ingest under way, or one cut short); the next ingest, fetch, alerts or prune adds them\n`,
        );
      }
      return EXIT_OK;
    } finally {
      await app.close();
    }
  },
);

/** Who a source is, in a table cell: "Google Workspace / Gmail (email provider)", "AS64500 Example Hosting, DE". */
export function whoCell(s: SourceTotals): string {
  if (s.service && s.service_type && s.service_type !== 'hosting' && s.service_type !== 'isp') return `${s.service} (${s.service_type})`;
  const net = s.asn === null || s.asn === undefined ? '-' : `AS${s.asn}${s.as_org ? ` ${s.as_org}` : ''}`;
  return `${net}${s.country ? `, ${s.country}` : ''}`;
}

export function formatTotals(t: ReportTotals, who = false): string {
  const out: string[] = [];
  if (t.domains.length === 0 && t.tlsrpt.length === 0 && t.failure_reports.length === 0) return 'no reports in this range\n';
  for (const d of t.domains) {
    out.push(
      `${d.domain}: ${plural(d.messages, 'message')} in ${plural(d.reports, 'aggregate report')}, DMARC pass ${formatRate(d.pass_rate)}`,
    );
    out.push(
      `  ${'source IP'.padEnd(39)} ${'messages'.padStart(10)} ${'DMARC pass'.padStart(10)} ${'DKIM align'.padStart(10)} ${'SPF align'.padStart(10)}${who ? '  who' : ''}`,
    );
    for (const s of d.sources.slice(0, TABLE_SOURCES)) {
      out.push(
        `  ${s.ip.padEnd(39)} ${formatInt(s.messages).padStart(10)} ${formatRate(s.pass_rate).padStart(10)} ${formatRate(s.messages ? s.dkim_aligned_pass / s.messages : null).padStart(10)} ${formatRate(s.messages ? s.spf_aligned_pass / s.messages : null).padStart(10)}${who ? `  ${whoCell(s)}` : ''}`,
      );
    }
    if (d.sources.length > TABLE_SOURCES) out.push(`  ... and ${d.sources.length - TABLE_SOURCES} more sources (--json lists all)`);
    out.push('');
  }
  if (t.tlsrpt.length) {
    out.push('TLS reports (RFC 8460)');
    out.push(`  ${'policy domain'.padEnd(32)} ${'successful'.padStart(10)} ${'failed'.padStart(8)}  failures`);
    for (const x of t.tlsrpt) {
      const f = x.failures.map((y) => `${y.result_type} ${formatInt(y.count)}`).join(', ');
      out.push(`  ${x.policy_domain.padEnd(32)} ${formatInt(x.successful).padStart(10)} ${formatInt(x.failed).padStart(8)}  ${f || '-'}`);
    }
    out.push('');
  }
  if (t.failure_reports.length) {
    out.push('DMARC failure reports');
    for (const x of t.failure_reports)
      out.push(`  ${x.domain.padEnd(32)} ${plural(x.count, 'report')} from ${plural(x.source_ips, 'source IP')}`);
    out.push('');
  }
  return out.join('\n');
}
