import { reportTotals, type ReportTotals } from '../store/summary.js';
import {
  EXIT_OK,
  formatInt,
  formatRate,
  loggerFor,
  openConfig,
  openDatabase,
  parseDay,
  parseFlags,
  plural,
  storeFlags,
  type Io,
} from './common.js';

export const reportUsage = `usage: ruawatch report [--db FILE] [--config FILE] [--domain D] [--since YYYY-MM-DD] [--until YYYY-MM-DD] [--json]`;

const TABLE_SOURCES = 15;

export async function reportCommand(args: string[], io: Io): Promise<number> {
  const { values } = parseFlags(
    args,
    { ...storeFlags, domain: { type: 'string' }, since: { type: 'string' }, until: { type: 'string' } },
    false,
  );
  const since = parseDay('--since', values.since);
  const untilDay = parseDay('--until', values.until);
  const loaded = openConfig(values.config, io);
  const { db } = openDatabase(values.db, loaded, loggerFor(loaded, 'warn'), { mustExist: true });
  try {
    // --until names the last day included.
    const totals = reportTotals(db, { domain: values.domain, since, until: untilDay === undefined ? undefined : untilDay + 86400 });
    io.stdout.write(values.json ? `${JSON.stringify(totals)}\n` : formatTotals(totals));
    return EXIT_OK;
  } finally {
    db.close();
  }
}

export function formatTotals(t: ReportTotals): string {
  const out: string[] = [];
  if (t.domains.length === 0 && t.tlsrpt.length === 0 && t.failure_reports.length === 0) return 'no reports in this range\n';
  for (const d of t.domains) {
    out.push(
      `${d.domain}: ${plural(d.messages, 'message')} in ${plural(d.reports, 'aggregate report')}, DMARC pass ${formatRate(d.pass_rate)}`,
    );
    out.push(
      `  ${'source IP'.padEnd(39)} ${'messages'.padStart(10)} ${'DMARC pass'.padStart(10)} ${'DKIM align'.padStart(10)} ${'SPF align'.padStart(10)}`,
    );
    for (const s of d.sources.slice(0, TABLE_SOURCES)) {
      out.push(
        `  ${s.ip.padEnd(39)} ${formatInt(s.messages).padStart(10)} ${formatRate(s.pass_rate).padStart(10)} ${formatRate(s.messages ? s.dkim_aligned_pass / s.messages : null).padStart(10)} ${formatRate(s.messages ? s.spf_aligned_pass / s.messages : null).padStart(10)}`,
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
