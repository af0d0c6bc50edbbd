import { analyseUnnamed, nameFindings, sortFindings, windowsAt } from '../analyse/index.js';
import { DAY, parsePolicyKey } from '../analyse/rollups.js';
import type {
  AnalysisInput,
  AnalysisSettings,
  CoverageDay,
  DkimDay,
  FailureDay,
  Finding,
  OpenAlert,
  PolicyDay,
  TlsDay,
  TlsFailureDay,
} from '../analyse/types.js';
import type { Db } from './db.js';

/**
 * What the drift rules read: the daily rollups (migrations/0004) of the days the windows cover,
 * one policy domain at a time. Every rule judges one domain, so an evaluation holds the rows of a
 * single domain at once, and costs (domains x sources x days), whatever the number of records.
 *
 * Per-source rows (sources, DKIM) are summed by SQLite over each window the rules compare them on:
 * the baseline's days come as one row dated with the baseline's first day, the recent days as one
 * row dated with the recent window's first day (the rules only ask which window a row's day falls
 * in), except the last few days (Windows.daily on), which come one row per day for fast detection
 * and recovery. That is about 5 rows per source instead of 35, which a domain with hundreds of
 * sources needs. TLS, policy and coverage rows, one per domain and day or so, come by day; failure
 * reports for the last whole day and the current one.
 */
export class AnalysisReader {
  readonly from: number;
  readonly to: number;
  private readonly recent: number;
  private readonly daily: number;
  private readonly q: ReturnType<typeof statements>;

  constructor(
    private readonly db: Db,
    now: number,
    settings: AnalysisSettings,
  ) {
    const w = windowsAt(now, settings);
    this.from = Math.min(w.baseline.from, w.recent.from, w.latest.from);
    this.to = Math.floor(now / DAY);
    this.recent = w.recent.from;
    this.daily = w.daily;
    this.q = statements(db);
  }

  /** The policy domains with any report over the windows, in order. */
  domains(): string[] {
    return (this.q.domains.all(this.from, this.to) as { domain: string }[]).map((r) => r.domain);
  }

  /** The rollups of some policy domains over the windows. */
  load(domains: string[], open?: Map<string, OpenAlert>): AnalysisInput {
    const p = { domains: JSON.stringify(domains), from: this.from, to: this.to, recent: this.recent, daily: this.daily };
    return {
      sources: (this.q.sources.all(p) as SourceRow[]).map((r) => ({
        domain: r[0],
        day: r[1],
        sourceIp: r[2],
        headerFrom: r[3],
        messages: r[4],
        dmarcPass: r[5],
        dkimAlignedPass: r[6],
        spfAlignedPass: r[7],
        forwarded: r[8],
        quarantine: r[9],
        reject: r[10],
        none: r[4] - r[9] - r[10],
      })),
      dkim: this.q.dkim.all(p) as DkimDay[],
      tls: this.q.tls.all(p) as TlsDay[],
      tlsFailures: this.q.tlsFailures.all(p) as TlsFailureDay[],
      coverage: this.q.coverage.all(p) as CoverageDay[],
      policies: policyDays(this.q.policies.all(p) as Omit<PolicyDay, 'published'>[]),
      failures: this.q.failures.all({ domains: p.domains, from: this.to - 1, to: this.to }) as FailureDay[],
      ...(open ? { open: openOf(open, domains) } : {}),
    };
  }
}

/** The open alerts of these domains only: a rule that walks the open alerts sees each in one group. */
function openOf(open: Map<string, OpenAlert>, domains: string[]): Map<string, OpenAlert> {
  const wanted = new Set(domains);
  const out = new Map<string, OpenAlert>();
  for (const [key, a] of open) if (wanted.has(a.domain)) out.set(key, a);
  return out;
}

type SourceRow = [string, number, string, string, number, number, number, number, number, number, number];

function statements(db: Db) {
  // For each domain of the list, its rows of the days in range: the primary keys' order.
  const range = 'domain IN (SELECT value FROM json_each(@domains)) AND day >= @from AND day < @to';
  const window = `CASE WHEN day >= @daily THEN day WHEN day >= @recent THEN @recent ELSE @from END`;
  return {
    domains: db.prepare(`SELECT DISTINCT domain FROM domain_daily WHERE day >= ? AND day < ? ORDER BY domain`),
    sources: db
      .prepare(
        `SELECT domain, ${window} AS day, source_ip AS sourceIp, header_from AS headerFrom, SUM(messages) AS messages,
              SUM(dmarc_pass) AS dmarcPass, SUM(dkim_aligned_pass) AS dkimAlignedPass, SUM(spf_aligned_pass) AS spfAlignedPass,
              SUM(forwarded) AS forwarded, SUM(quarantine) AS quarantine, SUM(reject) AS reject
         FROM dmarc_daily WHERE ${range} GROUP BY domain, 2, source_ip, header_from`,
      )
      .raw(true),
    dkim: db.prepare(
      `SELECT domain, ${window} AS day, source_ip AS sourceIp, signing_domain AS signingDomain, selector, result, SUM(messages) AS messages
         FROM dkim_daily WHERE ${range} GROUP BY domain, 2, source_ip, signing_domain, selector, result`,
    ),
    tls: db.prepare(`SELECT domain, day, mx, successful, failed FROM tls_daily WHERE ${range}`),
    tlsFailures: db.prepare(`SELECT domain, day, mx, result_type AS resultType, reporter, sessions FROM tls_failure_daily WHERE ${range}`),
    coverage: db.prepare(
      `SELECT kind, domain, reporter, day, reports, last_end AS lastEnd FROM report_daily WHERE ${range} AND kind IN ('dmarc', 'tlsrpt')`,
    ),
    policies: db.prepare(`SELECT domain, day, policy, weight, reports FROM policy_daily WHERE ${range}`),
    // The current day too: failure reports come within minutes of the mail they are about.
    failures: db.prepare(
      `SELECT domain, day, source_ip AS sourceIp, dkim_domain AS dkimDomain, dkim_selector AS dkimSelector, reports
         FROM failure_daily WHERE domain IN (SELECT value FROM json_each(@domains)) AND day >= @from AND day <= @to`,
    ),
  };
}

const ROWS_PER_GROUP = 5_000;

export type EvaluateOptions = {
  domains?: Iterable<string>;
  open?: Map<string, OpenAlert>;
  /** Called with each group's rollups before the rules run (pipeline/senders.ts: who the sources are). */
  prepare?: (input: AnalysisInput) => void;
  /** Called with each group's rollups and its findings (not yet named) after the rules ran. */
  examine?: (input: AnalysisInput, findings: readonly Finding[]) => void;
  /**
   * Leave the addresses in the findings' messages as marks, for the caller to name once it has
   * looked up what to show beside them (analyse/names.ts); otherwise they are written bare.
   */
  unnamed?: boolean;
};

/**
 * Every finding as of `now`, evaluated a group of policy domains at a time (or only the domains
 * given), in the order analyse() gives. A generator: it yields after each group, so a caller can
 * let other work run between them (evaluateRulesInTurns).
 */
function* evaluationSteps(db: Db, now: number, settings: AnalysisSettings, opts: EvaluateOptions): Generator<void, Finding[]> {
  const reader = new AnalysisReader(db, now, settings);
  const findings: Finding[] = [];
  let domains = opts.domains ? [...opts.domains] : reader.domains();
  if (!opts.domains && opts.open?.size) {
    // A domain nothing reported on lately still has its open alerts judged (they resolve).
    const more = new Set(domains);
    for (const a of opts.open.values()) more.add(a.domain);
    domains = [...more].sort();
  }
  // Domains go in groups, so the many small ones cost a few queries rather than a few each; the
  // group shrinks when its rows grow, keeping memory to about ROWS_PER_GROUP rows.
  let size = 1;
  for (let i = 0; i < domains.length;) {
    const group = domains.slice(i, i + size);
    i += group.length;
    const input = reader.load(group, opts.open);
    // Who the sources are (pipeline/senders.ts), when enrichment is on.
    opts.prepare?.(input);
    const found = analyseUnnamed(input, now, settings);
    opts.examine?.(input, found);
    for (const f of found) findings.push(f);
    const rows = input.sources.length + input.dkim.length;
    size = rows > ROWS_PER_GROUP ? Math.max(1, size >> 1) : rows < ROWS_PER_GROUP / 4 ? Math.min(256, size * 2) : size;
    yield;
  }
  sortFindings(findings);
  return opts.unnamed ? findings : nameFindings(findings);
}

/** policy_daily rows with their policy as a record; a key policyKey did not write (none should) is left out. */
function policyDays(rows: Omit<PolicyDay, 'published'>[]): PolicyDay[] {
  const out: PolicyDay[] = [];
  for (const r of rows) {
    const published = parsePolicyKey(r.policy);
    if (published) out.push({ ...r, published });
  }
  return out;
}

/** Every finding as of `now`, in one go. */
export function evaluateRules(db: Db, now: number, settings: AnalysisSettings, opts: EvaluateOptions = {}): Finding[] {
  const steps = evaluationSteps(db, now, settings, opts);
  for (;;) {
    const step = steps.next();
    if (step.done) return step.value;
  }
}

/**
 * The same with a turn of the event loop after each group of domains: inside `ruawatch run` an
 * evaluation of 10,000 domains takes seconds, and /healthz, the dashboard and signals must not
 * wait for all of it.
 */
export async function evaluateRulesInTurns(
  db: Db,
  now: number,
  settings: AnalysisSettings,
  opts: EvaluateOptions = {},
): Promise<Finding[]> {
  const steps = evaluationSteps(db, now, settings, opts);
  for (;;) {
    const step = steps.next();
    if (step.done) return step.value;
    await new Promise((resolve) => setImmediate(resolve));
  }
}
