import { RuawatchError, errorCode, isDatabaseError } from '../errors.js';
import { LEASE_RENEW_SECONDS, leaseHolder, type Lease } from '../store/mailboxes.js';
import { addToSummary, emptySummary, type IngestSummary } from './ingest.js';
import { mailboxFailure, readMailbox, type Mailbox, type MailboxPassOptions } from './mailbox.js';

export interface FetchAllResult {
  summary: IngestSummary;
  /** Mailboxes that could not be read at all (unreachable, login refused, the database failing). */
  mailboxErrors: { mailbox: string; error: string; code: string }[];
  /** Mailboxes skipped because another ruawatch process was reading them. */
  busy: { mailbox: string; lease: Lease }[];
  /** The pass stopped at its deadline. */
  timedOut: boolean;
}

export interface FetchAllOptions extends Omit<MailboxPassOptions, 'onResult' | 'onPlan' | 'kill' | 'holdsLease'> {
  /** "fetch" or "run": recorded with the lease, shown to a process that finds the mailbox busy. */
  command: string;
  /**
   * The pass's deadline in milliseconds (0: none). At the deadline the pass stops as on shutdown
   * (the message under way is finished, what is committed is acknowledged); a server that does not
   * answer then is disconnected as long again later, at most KILL_GRACE_MS.
   */
  timeoutMs?: number;
  /** Default KILL_GRACE_MS. */
  killGraceMs?: number;
  onPlan?(box: Mailbox, count: number): void;
  onResult?(): void;
  onMailboxDone?(box: Mailbox): void;
}

/** After the deadline, the longest the pass may take to acknowledge what it committed before it is cut off. */
export const KILL_GRACE_MS = 10_000;

/**
 * One pass over every mailbox, for `ruawatch fetch` and the worker alike. A mailbox that cannot
 * be read is listed under `failed` and in `mailboxErrors`; the others are still read, unless the
 * failure was the database's own (full, locked, read-only): that stops the pass. A mailbox that
 * another process is reading (its lease is held) is skipped and listed under `skipped` and `busy`.
 */
export async function fetchAll(mailboxes: Mailbox[], opts: FetchAllOptions): Promise<FetchAllResult> {
  const summary = emptySummary();
  const result: FetchAllResult = { summary, mailboxErrors: [], busy: [], timedOut: false };
  const fail = (box: Mailbox, err: unknown) => {
    const f = mailboxFailure(box.name, err);
    summary.failed.push({ input: box.name, error: f.error, code: f.code });
    result.mailboxErrors.push({ mailbox: box.name, error: f.error, code: f.code });
    // Reported by the caller: fetch's summary lists it, run logs the poll as failed with it.
    opts.log.info({ mailbox: box.name, code: f.code, err: f.error }, 'mailbox failed');
  };

  // Stop (shutdown or deadline) and cut off (a server that does not answer after the deadline).
  const stop = new AbortController();
  const kill = new AbortController();
  const onShutdown = () => stop.abort();
  if (opts.signal?.aborted) stop.abort();
  opts.signal?.addEventListener('abort', onShutdown);
  const timers: NodeJS.Timeout[] = [];
  if (opts.timeoutMs) {
    timers.push(
      setTimeout(() => {
        result.timedOut = true;
        // Info: every mailbox it cuts short is reported as failed (fetch's summary, run's poll failed).
        opts.log.info({ timeoutSeconds: opts.timeoutMs! / 1000 }, 'the pass reached its deadline; stopping');
        stop.abort();
      }, opts.timeoutMs),
      setTimeout(() => kill.abort(), opts.timeoutMs + (opts.killGraceMs ?? Math.min(KILL_GRACE_MS, opts.timeoutMs))),
    );
  }
  const deadlineError = (box: Mailbox, cause?: unknown) =>
    new RuawatchError(
      'E_TIMEOUT',
      `mailbox ${box.name}: the pass stopped at its deadline ([schedule] poll_timeout_seconds = ${opts.timeoutMs! / 1000}); the rest is read next time${
        cause ? ` (${mailboxFailure(box.name, cause).error})` : ''
      }`,
      { cause },
    );

  const holder = leaseHolder(opts.command);
  try {
    for (const box of mailboxes) {
      if (stop.signal.aborted) {
        if (result.timedOut) fail(box, deadlineError(box));
        continue;
      }
      let lease;
      try {
        lease = opts.positions.takeLease(box.name, holder);
      } catch (err) {
        fail(box, err);
        break;
      }
      if (!lease.held) {
        const by = lease.by;
        const since = new Date(by.acquiredAt * 1000).toISOString();
        const reason = `not read: another ruawatch (${by.command}, pid ${by.pid} on ${by.host.split(' ')[0]}) has been reading this mailbox since ${since}`;
        summary.skipped.push({ input: box.name, reason });
        result.busy.push({ mailbox: box.name, lease: by });
        // fetch lists it under skipped, run warns of it.
        opts.log.info({ mailbox: box.name, holder: { command: by.command, pid: by.pid, host: by.host, since } }, 'mailbox busy; skipped');
        opts.onMailboxDone?.(box);
        continue;
      }
      // Renewed on a timer while the pass works, and before each acknowledgement (holdsLease).
      const renew = setInterval(() => {
        try {
          if (!opts.positions.renewLease(box.name, holder.id)) opts.log.warn({ mailbox: box.name }, 'lease lost to another process');
        } catch (err) {
          opts.log.warn({ mailbox: box.name, err: mailboxFailure(box.name, err).error }, 'cannot renew the lease');
        }
      }, LEASE_RENEW_SECONDS * 1000);
      renew.unref();
      let failure: unknown = null;
      try {
        await readMailbox(box, {
          ...opts,
          signal: stop.signal,
          kill: kill.signal,
          holdsLease: () => opts.positions.renewLease(box.name, holder.id),
          onPlan: (n) => opts.onPlan?.(box, n),
          onResult: (r) => {
            addToSummary(summary, r);
            opts.onResult?.();
          },
        });
      } catch (err) {
        failure = err;
      } finally {
        clearInterval(renew);
        // With the database failing (a lock would cost another busy timeout), the lease is left to
        // expire: it is stale at once for a later process on this host, and for this one.
        if (failure === null || !isDatabaseError(errorCode(failure))) {
          try {
            opts.positions.releaseLease(box.name, holder.id);
          } catch {
            // expires by itself
          }
        }
        opts.onMailboxDone?.(box);
      }
      if (result.timedOut) fail(box, deadlineError(box, failure ?? undefined));
      else if (failure !== null) fail(box, failure);
      // The other mailboxes write to the same database.
      if (failure !== null && isDatabaseError(errorCode(failure))) break;
    }
  } finally {
    for (const t of timers) clearTimeout(t);
    opts.signal?.removeEventListener('abort', onShutdown);
  }
  return result;
}
