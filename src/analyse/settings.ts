/**
 * The thresholds of the drift rules, stated once. Each entry gives the name the rules read
 * (camelCase), the key of the `[analysis]` config section, its unit and its default as a user
 * writes it, and what it does. The config schema (config/schema.ts) builds its `[analysis]`
 * section from this table, and `settingsFrom` turns a section into the `AnalysisSettings` the
 * rules take: a percent is written 0..100 and read by the rules as a share, 0..1. docs/findings.md
 * and docs/configuration.md explain each setting at length.
 *
 * Nothing here knows the config's schema library: the table is plain data.
 */

/** `count`: a whole number above zero (days, messages, sessions...). `percent`: 0..100, read as 0..1. */
export type SettingUnit = 'count' | 'percent';

export interface SettingSpec {
  readonly key: string;
  readonly unit: SettingUnit;
  readonly default: number;
  readonly doc: string;
}

export const ANALYSIS_SETTINGS = {
  recentDays: { key: 'recent_days', unit: 'count', default: 7, doc: 'The window judged, in whole UTC days before today.' },
  baselineDays: { key: 'baseline_days', unit: 'count', default: 28, doc: 'The days before the recent window that it is judged against.' },
  latestDays: {
    key: 'latest_days',
    unit: 'count',
    default: 2,
    doc: 'The window for TLS failures, for the policy reporters see now, and for an open alert to be back to normal on.',
  },
  dropMinMessages: { key: 'drop_min_messages', unit: 'count', default: 50, doc: 'pass_rate_drop: messages needed in each window.' },
  dropMinBaselineRate: {
    key: 'drop_min_baseline_pass_rate',
    unit: 'percent',
    default: 90,
    doc: 'pass_rate_drop: only sources and domains that used to pass at least this well.',
  },
  dropPoints: {
    key: 'drop_points',
    unit: 'percent',
    default: 20,
    doc: 'pass_rate_drop: the fall in pass rate, in points, that raises a finding.',
  },
  newSourceMinMessages: {
    key: 'new_source_min_messages',
    unit: 'count',
    default: 20,
    doc: 'new_failing_source: messages from the new source in the recent window.',
  },
  newSourceMaxPassRate: {
    key: 'new_source_max_pass_rate',
    unit: 'percent',
    default: 50,
    doc: 'new_failing_source: passing DMARC at most this.',
  },
  newSourceMaxFindings: {
    key: 'new_source_max_findings',
    unit: 'count',
    default: 10,
    doc: 'new_failing_source: more new failing sources than this for a domain become one finding for the domain.',
  },
  dkimMinSignatures: {
    key: 'dkim_min_signatures',
    unit: 'count',
    default: 20,
    doc: 'dkim_selector_broken: signatures needed in each window.',
  },
  dkimMinBaselineRate: {
    key: 'dkim_min_baseline_pass_rate',
    unit: 'percent',
    default: 90,
    doc: 'dkim_selector_broken: the selector used to pass at least this well...',
  },
  dkimMaxPassRate: {
    key: 'dkim_max_pass_rate',
    unit: 'percent',
    default: 50,
    doc: 'dkim_selector_broken: ...and now passes at most this.',
  },
  tlsMinFailedSessions: {
    key: 'tls_min_failed_sessions',
    unit: 'count',
    default: 10,
    doc: 'tls_failures: failed sessions to one MX in the latest window.',
  },
  tlsMinFailureRate: { key: 'tls_min_failure_rate', unit: 'percent', default: 5, doc: "tls_failures: their share of that MX's sessions." },
  silentDays: { key: 'silent_days', unit: 'count', default: 3, doc: 'reporter_silent: days without a report.' },
  silentActiveShare: {
    key: 'silent_active_share',
    unit: 'percent',
    default: 75,
    doc: 'reporter_silent: only reporters that reported on at least this share of the baseline days.',
  },
  fastMaxPassRate: {
    key: 'fast_max_pass_rate',
    unit: 'percent',
    default: 25,
    doc: 'A known source or selector passing at most this on the last whole day opens an alert at once.',
  },
  recoverPoints: {
    key: 'recover_points',
    unit: 'percent',
    default: 5,
    doc: 'An open alert resolves when the latest days are back within this many points of its baseline.',
  },
  quietDays: {
    key: 'quiet_days',
    unit: 'count',
    default: 3,
    doc: 'An open alert whose source (or selector, or failing mail) has not been seen for this many days resolves.',
  },
  knownMinPassing: {
    key: 'known_min_passing',
    unit: 'count',
    default: 20,
    doc: 'A source is known (not "new") once it sent this many messages passing DMARC in the baseline.',
  },
  failureMinReports: {
    key: 'failure_min_reports',
    unit: 'count',
    default: 5,
    doc: 'Failure reports about one known source (or selector) within the latest day that open an alert.',
  },
} as const satisfies Record<string, SettingSpec>;

export type AnalysisSettingName = keyof typeof ANALYSIS_SETTINGS;

/** What the rules read: every threshold by its camelCase name, a percent as a share 0..1. */
export type AnalysisSettings = { [K in AnalysisSettingName]: number };

/** The `[analysis]` keys of the table, as a user writes them. */
export type AnalysisKey = (typeof ANALYSIS_SETTINGS)[AnalysisSettingName]['key'];

/** The thresholds of an `[analysis]` section, by config key, a percent as written (0..100). */
export type AnalysisSection = { [K in AnalysisSettingName as (typeof ANALYSIS_SETTINGS)[K]['key']]: number };

/** The table's entries with their names, in its order (the order of the config section). */
export const analysisSettingEntries: readonly (readonly [AnalysisSettingName, SettingSpec])[] = Object.entries(ANALYSIS_SETTINGS).map(
  ([name, spec]) => [name as AnalysisSettingName, spec] as const,
);

/** The settings the rules read from an `[analysis]` section (other keys in it, such as reverse_dns, are ignored). */
export function settingsFrom(section: AnalysisSection): AnalysisSettings {
  const out = {} as AnalysisSettings;
  for (const [name, spec] of analysisSettingEntries) {
    const value = section[spec.key as AnalysisKey];
    out[name] = spec.unit === 'percent' ? value / 100 : value;
  }
  return out;
}

/** The `[analysis]` section as it is when nothing is set. */
export const defaultSection: AnalysisSection = Object.fromEntries(
  analysisSettingEntries.map(([, spec]) => [spec.key, spec.default]),
) as AnalysisSection;

/** The thresholds when nothing is configured. */
export const defaultSettings: AnalysisSettings = settingsFrom(defaultSection);
