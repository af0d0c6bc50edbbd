import { windowsAt } from './rollups.js';
import { dkimFindings, passRateFindings, policyFindings, silenceFindings, tlsFindings } from './rules.js';
import type { AnalysisInput, AnalysisSettings, Finding, Severity } from './types.js';

export { dailyRollups, dayShares, windowsAt, DAY, isoDay } from './rollups.js';
export * from './types.js';

const SEVERITY_ORDER: Record<Severity, number> = { critical: 0, warning: 1, info: 2 };

/**
 * Every finding as of `now` (epoch seconds). Pure: the same rows, clock and settings always give
 * the same findings in the same order (severity, then key).
 */
export function analyse(input: AnalysisInput, now: number, settings: AnalysisSettings): Finding[] {
  const w = windowsAt(now, settings);
  const visible = {
    ...input,
    // Rows from after `now` (evaluating the past with --at) do not exist yet.
    records: input.records.filter((r) => r.begin < now),
    tls: input.tls.filter((r) => r.begin < now),
    policies: input.policies.filter((r) => r.begin < now),
  };
  const findings = [
    ...passRateFindings(visible, w, settings),
    ...dkimFindings(visible, w, settings),
    ...tlsFindings(visible, w, settings),
    ...silenceFindings(visible, now, w, settings),
    ...policyFindings(visible, w),
  ];
  return findings.sort((a, b) => SEVERITY_ORDER[a.severity] - SEVERITY_ORDER[b.severity] || a.key.localeCompare(b.key));
}

/** Kinds whose findings close silently when they clear (an event, not a fault). */
export const CLOSES_SILENTLY = new Set(['policy_changed']);
