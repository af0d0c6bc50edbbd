/**
 * What the drift rules read and what they produce. The rules read daily rollups (the tables of
 * migrations/0004, loaded by store/analysis.ts one policy domain at a time) but nothing here does
 * I/O: analyse(input, now, settings) is a pure function, tested with tables of raw rows rolled up
 * in memory (rollups.ts, rollupInput).
 */

import type { EffectivePolicy, Tally } from './rollups.js';
import type { Senders } from './senders.js';

/** One aggregate-report record with what the rules need from its report (raw; see rollupRecords). */
export interface RecordRow {
  domain: string; // policy domain
  reporter: string;
  begin: number; // report range, UTC epoch seconds
  end: number;
  sourceIp: string;
  headerFrom: string | null;
  count: number;
  disposition: string | null;
  dkimAligned: string | null; // policy_evaluated
  spfAligned: string | null;
  /** Policy override reason types (RFC 7489 section 7.2 PolicyOverrideType). */
  reasons: string[];
  dkim: { domain: string | null; selector: string | null; result: string }[];
  /**
   * Rollup rows its report makes a day: its records and their DKIM signatures past each one's first
   * (a report of very many is shared out over fewer days: reportShares); 1 when not given.
   */
  reportRows?: number;
  /** The rows its report may spread over days (reportShares `spread`); REPORT_SPREAD_ROWS when not given. */
  spreadRows?: number;
}

export interface TlsRow {
  domain: string; // the report's policy domain
  reporter: string;
  begin: number;
  end: number;
  policyType: string;
  mxHosts: string[];
  successful: number;
  failed: number;
  failures: { resultType: string; mx: string | null; sessions: number }[];
  /** Rollup rows its report makes a day, at most (boundTlsReport, reportShares); 1 when not given. */
  reportRows?: number;
  /** As RecordRow.spreadRows. */
  spreadRows?: number;
}

/** One stored report of any kind, for the reporter_silent rule. */
export interface ReportRow {
  kind: 'dmarc' | 'tlsrpt';
  domain: string;
  reporter: string;
  begin: number;
  end: number;
}

/** The policy a reporter saw published (RFC 7489 section 7.2 policy_published). */
export interface PolicyRow {
  domain: string;
  reporter: string;
  begin: number;
  end: number;
  p: string | null;
  sp: string | null;
  np: string | null;
  pct: number | null;
  adkim: string | null;
  aspf: string | null;
  /** Rollup rows the report makes a day, as RecordRow.reportRows; 1 when not given. */
  reportRows?: number;
  /** As RecordRow.spreadRows. */
  spreadRows?: number;
}

/** Per UTC day, policy domain, source IP and header_from ('' when none): the tally of its messages. */
export interface SourceDay extends Tally {
  domain: string;
  day: number; // UTC day number: epoch seconds / 86,400
  sourceIp: string;
  headerFrom: string;
}

/** Per UTC day, policy domain, source IP and DKIM signature: messages, forwarded records left out. */
export interface DkimDay {
  domain: string;
  day: number;
  sourceIp: string;
  signingDomain: string; // '' when the signature named none
  selector: string;
  result: string;
  messages: number;
}

/** Per UTC day, TLS policy domain and MX ('*' when not known): sessions. */
export interface TlsDay {
  domain: string;
  day: number;
  mx: string;
  successful: number;
  failed: number;
}

/** Per UTC day, TLS policy domain, MX, result type and reporter: failed sessions. */
export interface TlsFailureDay {
  domain: string;
  day: number;
  mx: string;
  resultType: string;
  reporter: string;
  sessions: number;
}

/** Per kind, policy domain, reporter and the UTC day reports end on: how many, and how far the latest reached. */
export interface CoverageDay {
  kind: 'dmarc' | 'tlsrpt';
  domain: string;
  reporter: string;
  day: number;
  reports: number;
  lastEnd: number; // epoch seconds
}

/** Per policy domain, UTC day and effective policy (effectivePolicy): the share of reports that saw it. */
export interface PolicyDay {
  domain: string;
  day: number;
  /** Its text (policyKey), the row's key. */
  policy: string;
  /** The same policy as a record, for the rules to compare. */
  published: EffectivePolicy;
  weight: number;
  /** Reports that saw it, counted on the day they end. */
  reports: number;
}

/** Per UTC day, reported domain, source IP and DKIM signature: failure reports (RFC 6591) received. */
export interface FailureDay {
  domain: string;
  day: number;
  sourceIp: string;
  dkimDomain: string;
  dkimSelector: string;
  reports: number;
}

/**
 * An alert that is open as the rules run: what they judge it against. `baseline` holds the
 * finding's numbers as they were when the alert opened (its details then), so an alert is judged
 * against the state before it began, however long it lasts.
 */
export interface OpenAlert {
  key: string;
  domain: string;
  severity: Severity;
  /** When it opened, epoch seconds. */
  firstSeen: number;
  baseline: Record<string, unknown>;
}

/** The daily rollups of one or more policy domains over the days the rules look at. */
export interface AnalysisInput {
  sources: SourceDay[];
  dkim: DkimDay[];
  tls: TlsDay[];
  tlsFailures: TlsFailureDay[];
  coverage: CoverageDay[];
  policies: PolicyDay[];
  /** Failure reports of the latest days, the current one included (they arrive within minutes). */
  failures?: FailureDay[];
  /** The alerts open for these domains, by key. */
  open?: Map<string, OpenAlert>;
  /** What analyse() shows beside source IPs in messages (reverse DNS names), when known; see names.ts. */
  names?: ReadonlyMap<string, string>;
  /** Who the source IPs are (src/enrich), when enrichment is on: see senders.ts for what the rules do with it. */
  senders?: Senders;
  /**
   * Per policy domain with more sources than are held one by one (store/analysis.ts), the sources
   * no per-source rule can judge, summed: `sources` then holds only the others of that domain.
   */
  rest?: SourceRest[];
}

/**
 * The sources of a policy domain that no per-source rule can judge (too few messages in every
 * window, no open alert, no failure report), as the domain-wide rules need them: their tallies
 * summed per day (as SourceDay.day, the forwarder exemption applied as the rules apply it), how
 * many of them fail and which fail most, and the services of those that pass.
 */
export interface SourceRest {
  domain: string;
  days: (Tally & { day: number })[];
  /** Sources of the rest with mail failing DMARC over the recent days (not forwarded, not exempted). */
  failing: number;
  /** The most failing of them: [ip, failed messages over the recent days], most first, ties by IP. */
  top: [string, number][];
  /** SenderFacts.service_id of the sources of the rest that pass DMARC for at least half their mail. */
  services: string[];
  /**
   * Sources that new_failing_source would judge new and failing (not known, enough failing mail in
   * the recent days, failing lately) but that were summed, not judged one by one: past the most a
   * domain holds (store/analysis.ts MAX_HELD_SOURCES). Their mail is left out of `days`, `failing`
   * and `top`, as a flagged source is left out of the domain-wide sums.
   */
  newFailing?: NewFailingSum;
}

/**
 * Summed new failing sources (SourceRest.newFailing): how many, their recent mail (each source's
 * rounded, as its own finding rounds it), the largest; and, for when the rules do not judge them
 * (a domain not watched), their tallies per day and most failing, as SourceRest's.
 */
export interface NewFailingSum {
  sources: number;
  messages: number;
  rejected: number;
  quarantined: number;
  /** The largest: [ip, messages over the recent days], most first, ties by IP. */
  top: [string, number][];
  days: (Tally & { day: number })[];
  /** The most failing: [ip, failed messages over the recent days], as SourceRest.top. */
  failingTop: [string, number][];
}

/** The thresholds the rules read, and their defaults: stated once, in settings.ts. */
export { defaultSettings, type AnalysisSettings } from './settings.js';

export const FINDING_KINDS = [
  'pass_rate_drop',
  'new_failing_source',
  'dkim_selector_broken',
  'tls_failures',
  'reporter_silent',
  'policy_changed',
] as const;
export type FindingKind = (typeof FINDING_KINDS)[number];
export type Severity = 'critical' | 'warning' | 'info';

export interface Finding {
  /** Stable across runs: the same problem always has the same key. */
  key: string;
  kind: FindingKind;
  severity: Severity;
  domain: string;
  source_ip: string | null;
  source_name: string | null;
  reporter: string | null;
  summary: string;
  /** The numbers behind the summary. */
  details: Record<string, string | number | null | string[]>;
  /** Who the source is, for findings about one source IP when enrichment is on (senders.ts, sourceFields). */
  asn?: number | null;
  as_org?: string | null;
  country?: string | null;
  service?: string | null;
  service_type?: string | null;
}
