import { nameFindings } from './names.js';
import { windowsAt } from './rollups.js';
import { dkimFindings, foldSelectorDrops, passRateFindings, policyFindings, silenceFindings, tlsFindings } from './rules.js';
import type { AnalysisInput, AnalysisSettings, Finding, Severity } from './types.js';

export {
  countDay,
  dailyRollups,
  dayShares,
  effectivePolicy,
  parsePolicyKey,
  policyKey,
  inWindow,
  isoDay,
  lastDays,
  rollupCoverage,
  rollupInput,
  rollupPolicies,
  rollupRecords,
  reportShares,
  rollupTls,
  windowsAt,
  DAY,
  MAX_REPORT_ROLLUP_ROWS,
  MAX_SHARE_DAYS,
  type EffectivePolicy,
  type Window,
} from './rollups.js';
export * from './types.js';
export {
  ANALYSIS_SETTINGS,
  analysisSettingEntries,
  defaultSection,
  settingsFrom,
  type AnalysisKey,
  type AnalysisSection,
  type AnalysisSettingName,
  type SettingSpec,
  type SettingUnit,
} from './settings.js';
export { mention, mentionedIn, nameFindings, type Naming } from './names.js';

const SEVERITY_ORDER: Record<Severity, number> = { critical: 0, warning: 1, info: 2 };

/** Findings in their one order: severity, then key. */
export function sortFindings(findings: Finding[]): Finding[] {
  return findings.sort((a, b) => SEVERITY_ORDER[a.severity] - SEVERITY_ORDER[b.severity] || a.key.localeCompare(b.key));
}

/**
 * Every finding as of `now` (epoch seconds). Pure: the same rows, clock and settings always give
 * the same findings in the same order (severity, then key). Rows outside the windows, including
 * those of days after `now` (evaluating the past with --at), are not looked at. Addresses in the
 * messages are named from `input.names`, when given.
 */
export function analyse(input: AnalysisInput, now: number, settings: AnalysisSettings): Finding[] {
  const names = input.names;
  return nameFindings(analyseUnnamed(input, now, settings), names ? { label: (ip) => names.get(ip), name: (ip) => names.get(ip) } : {});
}

/**
 * The same, with the addresses in the messages left as marks (names.ts), for a caller that looks
 * up what to show beside them once it knows which the findings name, then calls nameFindings().
 */
export function analyseUnnamed(input: AnalysisInput, now: number, settings: AnalysisSettings): Finding[] {
  const w = windowsAt(now, settings);
  const dkim = dkimFindings(input, w, settings);
  return sortFindings([
    ...foldSelectorDrops(passRateFindings(input, w, settings), dkim, input.open),
    ...dkim,
    ...tlsFindings(input, w, settings),
    ...silenceFindings(input, now, w, settings),
    ...policyFindings(input, w),
  ]);
}

/** Kinds whose findings close silently when they clear (an event, not a fault). */
export const CLOSES_SILENTLY = new Set(['policy_changed']);
