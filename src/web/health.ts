import type { WorkerState } from '../worker/worker.js';

/**
 * /healthz answers without authentication (container health checks, uptime monitors), so it says
 * whether the worker is healthy and why in general terms only: no mailbox names, users, hosts or
 * error texts, which may name all of those. The details are on /api/status, behind the auth.
 */
export interface Health {
  /** "stuck": a poll has been running past its deadline; "failing": the latest poll failed. */
  status: 'ok' | 'starting' | 'failing' | 'stuck';
  reasons: string[];
  last_poll: string | null;
  last_success: string | null;
  last_error: { at: string | null; message: string } | null;
  consecutive_failures: number;
  polling: boolean;
  /** When the poll under way started and when it is past its deadline ([schedule] poll_timeout_seconds). */
  poll_started: string | null;
  poll_deadline: string | null;
  /** Seconds the poll under way has been running, or null. */
  poll_running_seconds: number | null;
  warnings: string[];
}

export interface HealthOptions {
  now: number;
  warnings: readonly string[];
}

export function healthOf(state: WorkerState, opts: HealthOptions): { code: number; body: Health } {
  const reasons: string[] = [];
  if (state.consecutiveFailures > 0) {
    reasons.push(state.consecutiveFailures === 1 ? 'the last poll failed' : `the last ${state.consecutiveFailures} polls failed`);
  }
  const started = state.polling ? (state.pollStartedAt ?? state.lastPollAt) : null;
  const running = started === null ? null : Math.max(0, opts.now - started);
  // A poll running past its deadline is hung (a server that stopped answering in a way the
  // timeouts did not catch): the pass stops itself at the deadline. No deadline (0): never stuck.
  const stuck = state.polling && state.pollDeadlineAt !== null && opts.now > state.pollDeadlineAt;
  if (stuck) reasons.push(`a poll has been running for ${running} s, past its deadline`);
  const iso = (t: number | null) => (t === null ? null : new Date(t * 1000).toISOString());
  const body: Health = {
    status: stuck ? 'stuck' : reasons.length ? 'failing' : state.lastSuccessAt === null ? 'starting' : 'ok',
    reasons,
    last_poll: iso(state.lastPollAt),
    last_success: iso(state.lastSuccessAt),
    last_error: state.lastError ? { at: iso(state.lastError.at), message: 'the poll failed; details on /api/status' } : null,
    consecutive_failures: state.consecutiveFailures,
    polling: state.polling,
    poll_started: iso(state.polling ? state.pollStartedAt : null),
    poll_deadline: iso(state.polling ? state.pollDeadlineAt : null),
    poll_running_seconds: running,
    warnings: [...opts.warnings],
  };
  return { code: reasons.length ? 503 : 200, body };
}
