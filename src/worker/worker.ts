import { schedule, type ScheduledTask } from 'node-cron';
import type { App } from '../app.js';
import type { Config } from '../config/schema.js';
import { RuawatchError, asOwnCode, errorMessage } from '../errors.js';
import type { Logger } from '../log.js';
import { buildDigest, runAlerts, sendDigest } from '../pipeline/alerts.js';
import type { Db } from '../store/db.js';
import type { Watcher } from '../pipeline/mailbox.js';
import { pruneInTurns } from '../store/prune.js';

export interface WorkerState {
  startedAt: number;
  polls: { ok: number; failed: number };
  /** Epoch seconds. */
  lastPollAt: number | null;
  lastSuccessAt: number | null;
  lastError: { at: number; message: string } | null;
  consecutiveFailures: number;
  polling: boolean;
  /** Epoch seconds: when the poll under way started, and when it is past its deadline (null: none). */
  pollStartedAt: number | null;
  pollDeadlineAt: number | null;
  ingested: { dmarc: number; tlsrpt: number; failure: number; duplicates: number; failed: number; skipped: number };
}

/** The state of a worker that has not polled yet, started at `startedAt` (epoch seconds). */
export function initialState(startedAt: number): WorkerState {
  return {
    startedAt,
    polls: { ok: 0, failed: 0 },
    lastPollAt: null,
    lastSuccessAt: null,
    lastError: null,
    consecutiveFailures: 0,
    polling: false,
    pollStartedAt: null,
    pollDeadlineAt: null,
    ingested: { dmarc: 0, tlsrpt: 0, failure: 0, duplicates: 0, failed: 0, skipped: 0 },
  };
}

export interface WorkerOptions {
  /** IMAP reconnects within one poll; the schedule's own retries do the rest. */
  reconnects?: number;
}

const now = () => Math.floor(Date.now() / 1000);

/**
 * The long-running worker: polls every mailbox on the [schedule] poll cron, then evaluates the
 * alerts; sends the digest on its own cron. Runs never overlap: a tick that comes while a poll is
 * running is skipped. A failed poll (a mailbox unreachable) is retried after retry_seconds,
 * doubling up to the poll interval's worth, and never ends the process.
 */
export class Worker {
  readonly state: WorkerState = initialState(now());
  private tasks: ScheduledTask[] = [];
  private watchers: Watcher[] = [];
  /** A poll asked for while one was running (new mail announced meanwhile): run it right after. */
  private again = false;
  private current: Promise<void> | null = null;
  /** `current` is the digest or retention (alone()), not a poll. */
  private task = false;
  private retryTimer: NodeJS.Timeout | null = null;
  private readonly abort = new AbortController();
  private readonly config: Config;
  private readonly db: Db;
  private readonly log: Logger;

  /** Everything it works with comes from the App (app.ts): the database, channels, DNS, mailboxes. */
  constructor(
    private readonly app: App,
    private readonly opts: WorkerOptions = {},
  ) {
    this.config = app.config;
    this.db = app.db;
    this.log = app.log;
  }

  start(): void {
    const s = this.config.schedule;
    const options = { timezone: s.timezone, noOverlap: true };
    this.tasks.push(schedule(s.poll, () => this.tick('schedule'), { ...options, name: 'poll' }));
    if (this.config.alerts.digest !== 'off') {
      this.tasks.push(schedule(s.digest, () => this.digest(), { ...options, name: 'digest' }));
    }
    this.tasks.push(schedule(s.prune, () => this.prune(), { ...options, name: 'prune' }));
    if (s.idle) {
      for (const box of this.app.mailboxes()) {
        if (!box.watch) {
          // Microsoft Graph pushes new mail only to a public HTTPS endpoint (sources/graph.ts): polled.
          this.log.info({ mailbox: box.name }, 'this kind of mailbox has no IDLE; it is polled on the schedule');
          continue;
        }
        try {
          this.watchers.push(box.watch(() => void this.tick('idle')));
        } catch (err) {
          // The polls report the same problem on /healthz; the worker keeps running.
          this.log.error({ mailbox: box.name, err: errorMessage(err) }, 'cannot watch the mailbox with IDLE');
        }
      }
    }
    this.log.info(
      { poll: s.poll, digest: this.config.alerts.digest === 'off' ? 'off' : s.digest, timezone: s.timezone, idle: s.idle },
      'schedules started',
    );
    // The first poll runs now rather than at the first tick.
    void this.tick('start');
  }

  /** Starts a poll unless one is running; resolves when that poll is over. */
  tick(reason: string): Promise<void> {
    if (this.abort.signal.aborted) return Promise.resolve();
    if (this.current) {
      // New mail announced during a poll may have come after that poll listed the folder.
      // A scheduled poll that falls during the digest or retention runs right after them.
      if (reason === 'idle' || this.task) this.again = true;
      this.log.debug({ reason }, 'poll still running; tick skipped');
      return this.current;
    }
    if (this.retryTimer) {
      clearTimeout(this.retryTimer);
      this.retryTimer = null;
    }
    this.current = this.poll().finally(() => {
      this.current = null;
      if (this.again) {
        this.again = false;
        void this.tick('idle');
      }
    });
    return this.current;
  }

  private async poll(): Promise<void> {
    const st = this.state;
    const timeout = this.config.schedule.poll_timeout_seconds;
    st.polling = true;
    st.lastPollAt = st.pollStartedAt = now();
    // Past this, /healthz says the poll is stuck. The pass stops itself at the deadline (and cuts a
    // server that does not answer off soon after): one still running then is hung.
    st.pollDeadlineAt = timeout ? st.pollStartedAt + timeout : null;
    const log = this.log.child({ stage: 'poll' });
    try {
      // The pass's own lines bind their own `stage`: it logs through the App's root logger.
      const { summary, mailboxErrors, busy } = await this.app.fetchAll({
        command: 'run',
        signal: this.abort.signal,
        reconnects: this.opts.reconnects ?? 2,
      });
      st.ingested.dmarc += summary.reports.dmarc;
      st.ingested.tlsrpt += summary.reports.tlsrpt;
      st.ingested.failure += summary.reports.failure;
      st.ingested.duplicates += summary.duplicates;
      st.ingested.failed += summary.failed.length - mailboxErrors.length;
      st.ingested.skipped += summary.skipped.length - busy.length;
      // What a one-shot command's summary would list, run says here.
      const lost = new Set(mailboxErrors.map((e) => e.mailbox));
      for (const f of summary.failed) if (!lost.has(f.input)) log.warn({ input: f.input, code: f.code, err: f.error }, 'input failed');
      for (const c of summary.conflicts) {
        log.warn(
          { input: c.input, storedInput: c.stored_input, kind: c.kind, reporter: c.reporter, reportId: c.report_id },
          'a different report with the same key is already stored; this one is not stored',
        );
      }
      for (const b of busy)
        log.warn(
          { mailbox: b.mailbox, holder: { command: b.lease.command, pid: b.lease.pid, host: b.lease.host } },
          'mailbox busy; skipped',
        );
      // One mailbox that cannot be read (a wrong password on tlsrpt@) must not silence the alerts
      // on what the others brought: evaluate first, then count the poll as failed.
      if (!this.abort.signal.aborted) {
        const run = await runAlerts(this.db, this.config, {
          now: now(),
          dryRun: false,
          channels: this.app.channels(),
          lookup: this.app.lookup,
          enricher: await this.app.enricher({ orNone: true }),
          log,
        });
        if (run.deliveries.failed.length) log.warn({ failed: run.deliveries.failed }, 'some notifications wait for the next poll');
      }
      if (mailboxErrors.length) throw new RuawatchError(asOwnCode(mailboxErrors[0]!.code), mailboxErrors.map((e) => e.error).join('; '));
      st.polls.ok++;
      st.lastSuccessAt = now();
      st.consecutiveFailures = 0;
      log.info(
        {
          reports: summary.reports,
          duplicates: summary.duplicates,
          failed: summary.failed.length,
          skipped: summary.skipped.length - busy.length,
          busy: busy.map((b) => b.mailbox),
        },
        'poll done',
      );
    } catch (err) {
      st.polls.failed++;
      st.consecutiveFailures++;
      st.lastError = { at: now(), message: errorMessage(err) };
      const delay = this.config.schedule.retry_seconds * 2 ** Math.min(st.consecutiveFailures - 1, 5);
      log.error({ err: errorMessage(err), retryInSeconds: delay }, 'poll failed');
      if (!this.abort.signal.aborted) {
        this.retryTimer = setTimeout(() => void this.tick('retry'), delay * 1000);
        this.retryTimer.unref();
      }
    } finally {
      st.polling = false;
      st.pollStartedAt = st.pollDeadlineAt = null;
    }
  }

  async digest(): Promise<void> {
    const period = this.config.alerts.digest;
    if (period === 'off') return;
    await this.alone(async () => {
      try {
        const digest = buildDigest(this.db, period, now(), await this.app.enricher({ orNone: true }));
        const report = await sendDigest(this.db, digest, now(), {
          channels: this.app.channels(),
          log: this.log,
        });
        if (report.failed.length) this.log.warn({ sent: report.sent, failed: report.failed }, 'digest not delivered everywhere');
        else this.log.info({ sent: report.sent }, 'digest sent');
      } catch (err) {
        this.log.error({ err: errorMessage(err) }, 'digest failed');
      }
    });
  }

  /** Applies [retention]. */
  async prune(): Promise<void> {
    await this.alone(async () => {
      const r = this.config.retention;
      try {
        const result = await pruneInTurns(this.db, { recordsDays: r.records_days, failureReportsDays: r.failure_reports_days }, now());
        this.log.info({ ...result }, 'retention applied');
      } catch (err) {
        this.log.error({ err: errorMessage(err) }, 'retention failed');
      }
    });
  }

  /**
   * Runs a task that writes (the digest's delivery records, retention) never beside a poll, which
   * may hold a report's transaction open across its awaits (ingest on the main thread): it waits
   * for the one under way, and polls wait for it as for each other. New mail announced meanwhile
   * (IDLE) starts a poll as soon as it is over.
   */
  private async alone(task: () => Promise<void>): Promise<void> {
    while (this.current) await this.current;
    if (this.abort.signal.aborted) return;
    this.task = true;
    this.current = task().finally(() => {
      this.current = null;
      this.task = false;
      if (this.again) {
        this.again = false;
        void this.tick('idle');
      }
    });
    await this.current;
  }

  /**
   * Shutdown: no new runs; the poll under way finishes the message it is on, acknowledges what is
   * committed and logs out. Resolves when it has, or after `graceMs`.
   */
  async stop(graceMs: number): Promise<boolean> {
    for (const t of this.tasks) await t.stop();
    if (this.retryTimer) clearTimeout(this.retryTimer);
    await Promise.all(this.watchers.map((w) => w.stop()));
    this.abort.abort();
    let timer: NodeJS.Timeout | undefined;
    const finished = this.current
      ? await Promise.race([this.current.then(() => true), new Promise<boolean>((r) => (timer = setTimeout(() => r(false), graceMs)))])
      : true;
    clearTimeout(timer);
    for (const t of this.tasks) await t.destroy();
    return finished;
  }
}
