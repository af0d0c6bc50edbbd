import { analyseUnnamed, nameFindings, sortFindings, windowsAt } from '../analyse/index.js';
import { DAY, emptyTally, inWindow, judged, mergeTally, parsePolicyKey, passRate, type Tally, type Windows } from '../analyse/rollups.js';
import { exemptTally, forwarderExemptions } from '../analyse/senders.js';
import type {
  AnalysisInput,
  AnalysisSettings,
  CoverageDay,
  DkimDay,
  FailureDay,
  Finding,
  OpenAlert,
  PolicyDay,
  SourceDay,
  NewFailingSum,
  SourceRest,
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
 *
 * A domain with more than `maxSourceRows` such rows of sources or of DKIM signatures (anyone can
 * send a report of two million records, each from its own source, or of thousands of sources with
 * a hundred signatures each) is read in two parts: the sources a per-source rule can judge
 * (enough messages in a window to reach a rule's threshold, an open alert, a failure report) one by
 * one, as above, and the others summed (AnalysisInput.rest) while SQLite streams them, so the memory
 * an evaluation needs does not grow with sources that no rule judges one by one.
 */
export class AnalysisReader {
  readonly from: number;
  readonly to: number;
  private readonly recent: number;
  private readonly daily: number;
  private readonly w: Windows;
  private readonly q: ReturnType<typeof statements>;
  /**
   * The domains of the last load() whose small sources are still to be summed (summarise()), and
   * whether a run of new failing sources is open for each as one finding.
   */
  private unsummed: { domain: string; held: string[]; folded: boolean }[] = [];

  constructor(
    private readonly db: Db,
    now: number,
    private readonly settings: AnalysisSettings,
    private readonly maxSourceRows = MAX_SOURCE_ROWS,
    private readonly maxHeldSources = MAX_HELD_SOURCES,
  ) {
    const w = windowsAt(now, settings);
    this.w = w;
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

  /**
   * The rollups of some policy domains over the windows. For a domain with more source rows than
   * are held, only the sources a per-source rule can judge come in `sources` (and their DKIM rows,
   * with those of the signatures that passed in the baseline, which dkim_selector_broken judges);
   * summarise() adds the others, summed, once the sources' facts (input.senders) are known.
   */
  load(domains: string[], open?: Map<string, OpenAlert>): AnalysisInput {
    const p = { domains: JSON.stringify(domains), from: this.from, to: this.to, recent: this.recent, daily: this.daily };
    const counts = new Map<string, number>();
    const large = new Set<string>();
    let sources: SourceDay[] = [];
    for (const r of this.q.sources.iterate(p) as IterableIterator<SourceRow>) {
      if (large.has(r[0])) continue;
      const n = (counts.get(r[0]) ?? 0) + 1;
      counts.set(r[0], n);
      if (n > this.maxSourceRows) large.add(r[0]);
      else sources.push(sourceDay(r));
    }
    const failures = this.q.failures.all({ domains: p.domains, from: this.to - 1, to: this.to }) as FailureDay[];
    const mine = open ? openOf(open, domains) : undefined;
    // A domain with more DKIM rows than are held is large too: a few thousand sources, each with a
    // hundred signatures in a stranger's report, would otherwise come in one by one.
    let dkim: DkimDay[] = [];
    counts.clear();
    const small = large.size ? { ...p, domains: JSON.stringify(domains.filter((d) => !large.has(d))) } : p;
    for (const r of this.q.dkim.iterate(small) as IterableIterator<DkimDay>) {
      if (large.has(r.domain)) continue;
      const n = (counts.get(r.domain) ?? 0) + 1;
      counts.set(r.domain, n);
      if (n > this.maxSourceRows) large.add(r.domain);
      else dkim.push(r);
    }
    this.unsummed = [];
    if (large.size > 0) {
      sources = sources.filter((r) => !large.has(r.domain));
      dkim = dkim.filter((r) => !large.has(r.domain));
      for (const domain of large) {
        const held = this.heldSources(domain, failures, mine);
        const q = { ...p, domain, held: JSON.stringify(held) };
        for (const r of this.q.heldSources.iterate(q) as IterableIterator<SourceRow>) sources.push(sourceDay(r));
        const signers = new Set(this.q.signers.pluck().all({ ...q, cap: this.maxHeldSources }) as string[]);
        this.heldDkim(q, new Set(held), signers, dkim);
        this.unsummed.push({ domain, held, folded: mine?.has(`new_failing_source:${domain}`) === true });
      }
    }
    return {
      sources,
      dkim,
      tls: this.q.tls.all(p) as TlsDay[],
      tlsFailures: this.q.tlsFailures.all(p) as TlsFailureDay[],
      coverage: this.q.coverage.all(p) as CoverageDay[],
      policies: policyDays(this.q.policies.all(p) as Omit<PolicyDay, 'published'>[]),
      failures,
      ...(mine ? { open: mine } : {}),
    };
  }

  /**
   * The sources of a large domain a per-source rule can judge: with enough messages in the baseline
   * (pass_rate_drop, a known source) or, failing, the recent days (new_failing_source), named by an open alert
   * or a failure report; while a run of new failing sources is open as one finding, every source
   * failing over the last days (the finding counts them). Of those, at most maxHeldSources shared
   * out as MAX_HELD_SOURCES says: a stranger's reports can give any number of sources enough
   * (120,000 failing sources, two 540 KB gzips, had `alerts` peak at 762 MiB). The others are
   * summed with the sources no rule judges alone; summarise() counts the new failing ones apart.
   */
  private heldSources(domain: string, failures: FailureDay[], open: Map<string, OpenAlert> | undefined): string[] {
    const s = this.settings;
    const folded = open?.has(`new_failing_source:${domain}`) === true;
    const ranked = this.q.held.all({
      domain,
      from: this.from,
      to: this.to,
      recent: this.recent,
      quiet: this.w.quiet.from,
      baseMin: Math.min(s.dropMinMessages, s.knownMinPassing),
      recentMin: s.newSourceMinMessages,
      folded: folded ? 1 : 0,
      cap: this.maxHeldSources,
    }) as [string, number][];
    const known = ranked.filter((r) => r[1] === 1).map((r) => r[0]);
    const fresh = ranked.filter((r) => r[1] !== 1).map((r) => r[0]);
    const cap = this.maxHeldSources;
    const freshPlaces = Math.min(fresh.length, Math.max(Math.ceil(cap * FRESH_HELD_SHARE), cap - known.length));
    const held = new Set([...known.slice(0, cap - freshPlaces), ...fresh.slice(0, freshPlaces)]);
    for (const f of failures) if (f.domain === domain && f.sourceIp) held.add(f.sourceIp);
    for (const a of open?.values() ?? []) {
      if (a.domain !== domain) continue;
      for (const kind of ['pass_rate_drop', 'new_failing_source']) {
        const prefix = `${kind}:${domain}:`;
        if (a.key.startsWith(prefix)) held.add(a.key.slice(prefix.length));
      }
      const known = a.baseline.known_sources;
      if (Array.isArray(known)) for (const ip of known) if (typeof ip === 'string') held.add(ip);
    }
    return [...held].sort();
  }

  /**
   * The DKIM rows of a large domain that a rule reads: every row of the held sources, and of the
   * `signers` (the maxHeldSources sources with the most mail signed by a signature that passed in
   * the baseline) the rows of each signature (domain, selector) that passed for them then
   * (dkim_selector_broken judges a selector on the sources it passed for); of each source at most
   * MAX_SOURCE_SIGNATURES signatures that passed and as many that did not. A stranger's reports
   * dated in the baseline can name any number of sources whose signatures passed: 360,000 of them,
   * three 540 KB gzips, had `alerts` peak at 677 MiB when every one was held.
   */
  private heldDkim(q: Record<string, unknown>, held: ReadonlySet<string>, signers: ReadonlySet<string>, out: DkimDay[]): void {
    let pair: DkimDay[] = [];
    let passed = false;
    // Signatures kept of the current source: at most MAX_SOURCE_SIGNATURES that passed in the
    // baseline (the ones dkim_selector_broken judges) and as many others, the first in key order.
    let source: string | null = null;
    const kept = [0, 0];
    const flush = () => {
      const ip = pair[0]?.sourceIp;
      if (ip !== undefined && ((passed && signers.has(ip)) || held.has(ip))) {
        if (ip !== source) [source, kept[0], kept[1]] = [ip, 0, 0];
        if (kept[passed ? 0 : 1]!++ < MAX_SOURCE_SIGNATURES) for (const r of pair) out.push(r);
      }
      pair = [];
      passed = false;
    };
    for (const r of this.q.largeDkim.iterate(q) as IterableIterator<DkimDay>) {
      const last = pair[0];
      if (last && (last.sourceIp !== r.sourceIp || last.signingDomain !== r.signingDomain || last.selector !== r.selector)) flush();
      pair.push(r);
      if (r.result === 'pass' && r.day < this.recent && r.messages > 0) passed = true;
    }
    flush();
  }

  /**
   * Adds to `input` (loaded by the last load()) the sources of its large domains that were not
   * held, summed per day as the rules sum a source, with the forwarder exemption applied (its
   * lookups through input.senders, as the rules make them). SQLite hands them over one source at
   * a time: what is kept is a tally per day, the most failing sources and the services of passing
   * ones, whatever their number.
   */
  summarise(input: AnalysisInput): void {
    const w = this.w;
    const s = this.settings;
    for (const { domain, held, folded } of this.unsummed) {
      const days = new Map<number, Tally & { day: number }>();
      const top: [string, number][] = [];
      const services = new Set<string>();
      let failing = 0;
      const fresh: NewFailingSum = { sources: 0, messages: 0, rejected: 0, quarantined: 0, top: [], days: [], failingTop: [] };
      const freshDays = new Map<number, Tally & { day: number }>();
      let rows: SourceDay[] = [];
      const flush = () => {
        const ip = rows[0]?.sourceIp;
        if (ip === undefined) return;
        const fails = rows.some((r) => r.messages - r.dmarcPass - r.forwarded > 0);
        const exempt = fails && forwarderExemptions(input.senders, [ip]).has(ip);
        const base = emptyTally();
        const recent = emptyTally();
        const quiet = emptyTally();
        const own: (Tally & { day: number })[] = [];
        for (const row of rows) {
          const r = exempt ? exemptTally(row) : row;
          const inBase = inWindow(r.day, w.baseline);
          const inRecent = inWindow(r.day, w.recent);
          if (!inBase && !inRecent) continue;
          if (inBase) mergeTally(base, r);
          else mergeTally(recent, r);
          if (inWindow(r.day, w.quiet)) mergeTally(quiet, r);
          own.push(r);
        }
        // What new_failing_source judges a source by (analyse/rules.ts passRateFindings: a new one
        // opens a finding; while a run is open, any source not known and failing lately carries
        // it): such a source is counted apart, its figures rounded as a finding of its own rounds
        // them, and its rows kept apart: the rules leave them out of the domain's sums when they
        // judge it, as a flagged source's, and add them back when they do not.
        const rate = passRate(recent);
        const carries = base.dmarcPass < s.knownMinPassing && judged(quiet) - quiet.dmarcPass >= 1 && rate !== null;
        const isNew = carries && (folded || (rate <= s.newSourceMaxPassRate && judged(recent) >= s.newSourceMinMessages));
        if (isNew) {
          fresh.sources++;
          fresh.messages += Math.round(judged(recent));
          fresh.rejected += Math.round(recent.reject);
          fresh.quarantined += Math.round(recent.quarantine);
          keepTop(fresh.top, ip, Math.round(judged(recent)));
          const failed = judged(recent) - recent.dmarcPass;
          if (failed > 0) keepTop(fresh.failingTop, ip, failed);
        }
        for (const r of own) {
          const into = isNew ? freshDays : days;
          let t = into.get(r.day);
          if (!t) into.set(r.day, (t = { day: r.day, ...emptyTally() }));
          mergeTally(t, r);
        }
        if (isNew) {
          rows = [];
          return;
        }
        const failed = judged(recent) - recent.dmarcPass;
        if (failed > 0) {
          failing++;
          keepTop(top, ip, failed);
        }
        const pass = base.dmarcPass + recent.dmarcPass;
        const all = judged(base) + judged(recent);
        if (input.senders && all > 0 && pass * 2 >= all) {
          const f = input.senders.byAddress ? input.senders.byAddress(ip) : input.senders.get(ip);
          if (f?.service_id) services.add(f.service_id);
        }
        rows = [];
      };
      const q = { from: this.from, to: this.to, recent: this.recent, daily: this.daily, domain, held: JSON.stringify(held) };
      for (const r of this.q.restSources.iterate(q) as IterableIterator<SourceRow>) {
        if (rows.length && rows[0]!.sourceIp !== r[2]) flush();
        rows.push(sourceDay(r));
      }
      flush();
      (input.rest ??= []).push({
        domain,
        days: [...days.values()],
        failing,
        top,
        services: [...services].sort(),
        ...(fresh.sources > 0 ? { newFailing: { ...fresh, days: [...freshDays.values()] } } : {}),
      } satisfies SourceRest);
    }
    this.unsummed = [];
  }
}

/**
 * Rows of one domain's sources (or of their DKIM signatures) held one by one, past which its
 * sources no rule judges alone are summed.
 */
export const MAX_SOURCE_ROWS = 20_000;

/**
 * Sources of a large domain held one by one for the per-source rules: a large domain of a real
 * provider has hundreds or a few thousand that send enough to be judged. The known ones (mail in
 * the baseline) by their mail that passed there, and the new ones by their failing mail of the
 * recent days, share the places (FRESH_HELD_SHARE): anyone can send reports naming sources with
 * any volume, and sources that only appeared lately must not push the domain's own senders out to
 * the sums, nor thousands of its own a spoofer (new failing sources summed are still counted,
 * SourceRest.newFailing). Reports dated back into the baseline can still make forged sources
 * known: nothing tells them from the domain's own.
 */
export const MAX_HELD_SOURCES = 5_000;

/**
 * The share of MAX_HELD_SOURCES kept for sources new in the recent days, the rest for the known
 * ones, when there are that many of each (either kind takes the places the other does not need):
 * a domain with thousands of senders of its own still has a lone spoofer judged alone, and a
 * flood of new sources leaves four fifths of the places to the domain's own.
 */
const FRESH_HELD_SHARE = 0.2;

/**
 * DKIM signatures (signing domain, selector) of one source of a large domain held for the rules,
 * of those that passed in the baseline and of the others each: mail from one server carries one
 * to a few; a stranger's report can list a hundred per record.
 */
export const MAX_SOURCE_SIGNATURES = 16;

/** How many of a domain's summed failing sources are named (the domain-wide finding lists 20). */
const TOP_FAILING = 20;

/** Keeps `top` the TOP_FAILING most failing sources, most first, ties by IP (as the rules sort them). */
function keepTop(top: [string, number][], ip: string, failed: number): void {
  const before = (a: [string, number]) => failed > a[1] || (failed === a[1] && ip.localeCompare(a[0]) < 0);
  if (top.length >= TOP_FAILING && !before(top[top.length - 1]!)) return;
  let i = top.length;
  while (i > 0 && before(top[i - 1]!)) i--;
  top.splice(i, 0, [ip, failed]);
  if (top.length > TOP_FAILING) top.pop();
}

function sourceDay(r: SourceRow): SourceDay {
  return {
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
  };
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
  const tally = `SUM(messages) AS messages, SUM(dmarc_pass) AS dmarcPass, SUM(dkim_aligned_pass) AS dkimAlignedPass,
              SUM(spf_aligned_pass) AS spfAlignedPass, SUM(forwarded) AS forwarded, SUM(quarantine) AS quarantine, SUM(reject) AS reject`;
  const one = 'domain = @domain AND day >= @from AND day < @to';
  const held = 'source_ip IN (SELECT value FROM json_each(@held))';
  return {
    domains: db.prepare(`SELECT DISTINCT domain FROM domain_daily WHERE day >= ? AND day < ? ORDER BY domain`),
    sources: db
      .prepare(
        `SELECT domain, ${window} AS day, source_ip AS sourceIp, header_from AS headerFrom, ${tally}
         FROM dmarc_daily WHERE ${range} GROUP BY domain, 2, source_ip, header_from`,
      )
      .raw(true),
    // A large domain (AnalysisReader.load): the sources a per-source rule can judge, their rows, the others' rows by source.
    // Known ones (mail in the baseline) ranked by the mail that passed there (a drop is judged from it); new ones only
    // with failing mail lately (no rule judges a new source that passes), ranked by it.
    held: db
      .prepare(
        `SELECT source_ip, known FROM (
           SELECT source_ip, known, row_number() OVER (PARTITION BY known ORDER BY CASE WHEN known THEN passed ELSE failing END DESC,
                    mail DESC, source_ip) AS rank
             FROM (SELECT source_ip, SUM(CASE WHEN day < @recent THEN messages ELSE 0 END) >= @baseMin AS known,
                          SUM(CASE WHEN day < @recent THEN dmarc_pass ELSE 0 END) AS passed,
                          SUM(CASE WHEN day >= @recent THEN messages - dmarc_pass - forwarded ELSE 0 END) AS failing, SUM(messages) AS mail
                     FROM dmarc_daily WHERE ${one} GROUP BY source_ip
                   HAVING known
                       OR (SUM(CASE WHEN day >= @recent THEN messages ELSE 0 END) >= @recentMin AND failing > 0)
                       OR (@folded AND SUM(CASE WHEN day >= @quiet THEN messages - dmarc_pass - forwarded ELSE 0 END) > 0)))
          WHERE rank <= @cap ORDER BY known DESC, rank`,
      )
      .raw(true),
    heldSources: db
      .prepare(
        `SELECT domain, ${window} AS day, source_ip AS sourceIp, header_from AS headerFrom, ${tally}
         FROM dmarc_daily WHERE ${one} AND ${held} GROUP BY 2, source_ip, header_from`,
      )
      .raw(true),
    restSources: db
      .prepare(
        `SELECT domain, ${window} AS day, source_ip AS sourceIp, header_from AS headerFrom, ${tally}
         FROM dmarc_daily WHERE ${one} AND source_ip NOT IN (SELECT value FROM json_each(@held))
         GROUP BY source_ip, 2, header_from ORDER BY source_ip`,
      )
      .raw(true),
    // A large domain's sources with the most mail signed by a signature that passed in the baseline.
    signers: db.prepare(
      `SELECT source_ip FROM dkim_daily WHERE ${one} AND day < @recent AND result = 'pass' AND messages > 0 AND NOT ${held}
         GROUP BY source_ip ORDER BY SUM(messages) DESC, source_ip LIMIT @cap`,
    ),
    largeDkim: db.prepare(
      `SELECT domain, ${window} AS day, source_ip AS sourceIp, signing_domain AS signingDomain, selector, result, SUM(messages) AS messages
         FROM dkim_daily WHERE ${one} GROUP BY source_ip, signing_domain, selector, 2, result ORDER BY source_ip, signing_domain, selector`,
    ),
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
  /** A domain's source rows held one by one (AnalysisReader): past this its sources no rule judges alone are summed. */
  maxSourceRows?: number;
  /** The sources of such a domain a rule could judge held one by one, at most (MAX_HELD_SOURCES). */
  maxHeldSources?: number;
};

/**
 * Every finding as of `now`, evaluated a group of policy domains at a time (or only the domains
 * given), in the order analyse() gives. A generator: it yields after each group, so a caller can
 * let other work run between them (evaluateRulesInTurns).
 */
function* evaluationSteps(db: Db, now: number, settings: AnalysisSettings, opts: EvaluateOptions): Generator<void, Finding[]> {
  const reader = new AnalysisReader(db, now, settings, opts.maxSourceRows, opts.maxHeldSources);
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
    reader.summarise(input);
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
