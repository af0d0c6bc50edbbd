import path from 'node:path';
import { limitsOf } from './config/load.js';
import type { Config } from './config/schema.js';
import type { Enricher } from './enrich/index.js';
import { errorMessage } from './errors.js';
import type { Logger } from './log.js';
import { defaultRetry, type Channel, type RetryPolicy } from './notify/types.js';
import { channelsOf, systemReverseLookup, type ReverseLookup } from './pipeline/alerts.js';
import { fetchAll, type FetchAllOptions, type FetchAllResult } from './pipeline/fetch.js';
import { Ingestor } from './pipeline/ingest.js';
import type { Mailbox } from './pipeline/mailbox.js';
import { poolFor, type IngestPool, type PoolUse } from './pipeline/pool.js';
import { mailboxesOf } from './sources/mailboxes.js';
import { openDb, type Db } from './store/db.js';
import { MailboxStore } from './store/mailboxes.js';
import { ReportStore } from './store/reports.js';
import type { Limits } from './unpack/limits.js';

export interface AppOptions {
  /** The database: a file to open on first use, or one already open (tests). */
  db: string | Db;
  log: Logger;
  /** The database must exist already: commands that only read or judge what is stored. */
  mustExist?: boolean;
  /** The configuration file, for the log line that names the database. */
  source?: string | null;
  /** Reverse DNS for findings; null: none. Default: the system's resolvers, when [analysis] reverse_dns. */
  lookup?: ReverseLookup | null;
  /** The [alerts] channels; default: built from the configuration on first use. */
  channels?: Channel[];
}

/** What a pass over the mailboxes takes besides what the App holds. */
export type PassOptions = Omit<FetchAllOptions, 'ingestor' | 'pool' | 'positions' | 'limits' | 'log' | 'timeoutMs'>;

/**
 * The composition root: the one place that assembles ruawatch's parts from a configuration, for
 * every command and the long-running worker alike. Parts are made on first use, so a command pays
 * only for what it uses (notify test opens no database; report starts no threads and builds no
 * channel). `close()` closes what was opened.
 */
export class App {
  readonly limits: Limits;
  private database: Db | null;
  private built: {
    reports?: ReportStore;
    positions?: MailboxStore;
    ingestor?: Ingestor;
    channels?: Channel[];
    lookup?: ReverseLookup | null;
    enricher?: Promise<Enricher | null>;
  } = {};

  constructor(
    readonly config: Config,
    private readonly opts: AppOptions,
  ) {
    this.limits = limitsOf(config);
    this.database = typeof opts.db === 'string' ? null : opts.db;
    if (opts.lookup !== undefined) this.built.lookup = opts.lookup;
  }

  get log(): Logger {
    return this.opts.log;
  }

  /** The database file ("" for one in memory handed in). */
  get dbFile(): string {
    return typeof this.opts.db === 'string' ? this.opts.db : this.opts.db.name;
  }

  /** Opened (and brought up to date) on first use; the file it is logged at info. */
  get db(): Db {
    if (!this.database) {
      this.log.info({ database: this.dbFile, config: this.opts.source ?? null }, 'database');
      this.database = openDb(this.dbFile, { mustExist: this.opts.mustExist ?? false });
    }
    return this.database;
  }

  get reports(): ReportStore {
    return (this.built.reports ??= new ReportStore(this.db));
  }

  get positions(): MailboxStore {
    return (this.built.positions ??= new MailboxStore(this.db));
  }

  /** Ingest on the calling thread. */
  get ingestor(): Ingestor {
    return (this.built.ingestor ??= new Ingestor(this.reports, this.limits, this.log));
  }

  /** Reverse DNS for findings, or null when [analysis] reverse_dns is off. */
  get lookup(): ReverseLookup | null {
    if (this.built.lookup === undefined) this.built.lookup = this.config.analysis.reverse_dns ? systemReverseLookup() : null;
    return this.built.lookup;
  }

  /**
   * Who is sending (src/enrich), its data read now; null when [enrich] enabled = false. The code is
   * imported here, on first use: commands that never ask pay nothing. Compiled copies of CSV data
   * files go beside the database, which ruawatch can write to. Data that cannot be read is an
   * E_ENRICH error, unless `orNone`: then it is logged and the caller goes on without (alerts must
   * not stop because a data file went missing).
   */
  async enricher(opts: { orNone?: boolean } = {}): Promise<Enricher | null> {
    if (!this.config.enrich.enabled) return null;
    const cacheDir = this.dbFile && this.dbFile !== ':memory:' ? path.dirname(path.resolve(this.dbFile)) : null;
    this.built.enricher ??= import('./enrich/index.js').then((m) => {
      const e = m.createEnricher(this.config.enrich, { cacheDir });
      e.data();
      return e;
    });
    try {
      return await this.built.enricher;
    } catch (err) {
      this.built.enricher = undefined;
      if (!opts.orNone) throw err;
      this.log.warn({ err: errorMessage(err) }, 'enrichment data cannot be read: findings go without it');
      return null;
    }
  }

  /**
   * The [alerts] channels, built once and closed by close(). A different retry policy (notify test)
   * gets channels of its own, which the caller closes.
   */
  channels(retry?: RetryPolicy): Channel[] {
    if (this.opts.channels) return this.opts.channels;
    if (retry && retry !== defaultRetry) return channelsOf(this.config, retry);
    return (this.built.channels ??= channelsOf(this.config));
  }

  mailboxes(): Mailbox[] {
    return mailboxesOf(this.config, this.log);
  }

  /** Worker threads for `use` as [ingest] workers asks (null: ingest on this thread); the caller closes them. */
  pool(use: PoolUse): IngestPool | null {
    return poolFor(this.config, this.dbFile, this.limits, this.log, use);
  }

  /**
   * One pass over every mailbox (fetch, and each poll of run): worker threads for the pass's
   * duration, the deadline of [schedule] poll_timeout_seconds.
   */
  async fetchAll(opts: PassOptions): Promise<FetchAllResult> {
    // The database first (opened and brought up to date before any thread opens it), then threads.
    const positions = this.positions;
    const ingestor = this.ingestor;
    const mailboxes = this.mailboxes();
    const pool = this.pool('mail');
    let result: FetchAllResult;
    try {
      result = await fetchAll(mailboxes, {
        ...opts,
        timeoutMs: this.config.schedule.poll_timeout_seconds * 1000,
        ingestor,
        pool,
        positions,
        limits: this.limits,
        log: this.log,
      });
    } finally {
      await pool?.close();
    }
    // What the pass stored goes into the rollups before it is over (the alerts read them next).
    await this.settle();
    return result;
  }

  /**
   * Adds the reports stored but not yet in the daily rollups to them (ReportStore.settle), a batch
   * at a time with the event loop free in between (`run` answers /healthz meanwhile). They are
   * stored whatever happens here: an error (the database locked by another process past its busy
   * timeout) is logged, and they stay queued for the next command that settles.
   */
  async settle(): Promise<void> {
    try {
      while (this.reports.settleBatch() > 0) await new Promise((resolve) => setImmediate(resolve));
    } catch (err) {
      this.log.warn(
        { err: errorMessage(err) },
        'stored reports not yet added to the daily rollups; the next ingest, fetch, alerts or prune adds them',
      );
    }
  }

  async close(): Promise<void> {
    // Channels handed in are their owner's to close, as a database handed in is.
    await Promise.all((this.built.channels ?? []).map((c) => c.close()));
    // A database handed in is its owner's to close.
    if (typeof this.opts.db === 'string') this.database?.close();
    this.database = null;
  }
}

export function openApp(config: Config, opts: AppOptions): App {
  return new App(config, opts);
}
