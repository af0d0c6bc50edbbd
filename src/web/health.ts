import type { WorkerState } from '../worker/worker.js';

/**
 * /healthz answers without authentication (container health checks, uptime monitors), so it says
 * whether the worker is healthy and why in general terms only: no mailbox names, users, hosts or
 * error texts, which may name all of those. The details are on /api/status, behind the auth.
 */
export interface Health {
  status: 'ok' | 'starting' | 'failing';
  reasons: string[];
  last_poll: string | null;
  last_success: string | null;
  last_error: { at: string | null; message: string } | null;
  consecutive_failures: number;
  polling: boolean;
  /** Seconds the poll under way has been running, or null. */
  poll_running_seconds: number | null;
  warnings: string[];
}

/**
 * A poll running longer than this is reported as failing, unless the worker states its own
 * deadline; a poll that hangs (a frozen mail server) must not look healthy.
 */
export const DEFAULT_POLL_DEADLINE_SECONDS = 15 * 60;

export interface HealthOptions {
  now: number;
  pollDeadlineSeconds: number;
  warnings: readonly string[];
}

/** Reads a number the worker state may carry (fields are added to it over time). */
function numberField(state: WorkerState, key: string): number | null {
  const v = (state as unknown as Record<string, unknown>)[key];
  return typeof v === 'number' && Number.isFinite(v) ? v : null;
}

export function healthOf(state: WorkerState, opts: HealthOptions): { code: number; body: Health } {
  const reasons: string[] = [];
  if (state.consecutiveFailures > 0) {
    reasons.push(state.consecutiveFailures === 1 ? 'the last poll failed' : `the last ${state.consecutiveFailures} polls failed`);
  }
  // The worker may say when the poll under way began and by when it must end; without that, the
  // poll began at lastPollAt and has the default deadline.
  const started = state.polling ? (numberField(state, 'pollStartedAt') ?? state.lastPollAt) : null;
  const running = started === null ? null : Math.max(0, opts.now - started);
  const deadline = numberField(state, 'pollDeadlineSeconds') ?? opts.pollDeadlineSeconds;
  if (running !== null && running > deadline) {
    reasons.push(`a poll has been running for ${running} s, longer than its deadline of ${deadline} s`);
  }
  const failing = reasons.length > 0;
  const iso = (t: number | null) => (t === null ? null : new Date(t * 1000).toISOString());
  const body: Health = {
    status: failing ? 'failing' : state.lastSuccessAt === null ? 'starting' : 'ok',
    reasons,
    last_poll: iso(state.lastPollAt),
    last_success: iso(state.lastSuccessAt),
    last_error: state.lastError ? { at: iso(state.lastError.at), message: 'the poll failed; details on /api/status' } : null,
    consecutive_failures: state.consecutiveFailures,
    polling: state.polling,
    poll_running_seconds: running,
    warnings: [...opts.warnings],
  };
  return { code: failing ? 503 : 200, body };
}
