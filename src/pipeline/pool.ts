import os from 'node:os';
import { Worker } from 'node:worker_threads';
import type { Logger } from 'pino';
import type { Config } from '../config/schema.js';
import { RuawatchError, type ErrorCode } from '../errors.js';
import { SharedLock } from '../store/lock.js';
import type { Limits } from '../unpack/limits.js';
import type { IngestInput, InputResult } from './ingest.js';

/**
 * An input in a form another thread can take: a file it reads itself, bytes handed over (a
 * downloaded mail), or an input that already failed to be found.
 */
export type PortableInput =
  | { name: string; file: string; maxBytes: number }
  | { name: string; bytes: Uint8Array }
  | { name: string; error: { code: ErrorCode; message: string } };

/** Runs one input through the pipeline; the in-process Ingestor and the pool both do. */
export interface IngestRunner {
  ingest(input: IngestInput): Promise<InputResult>;
  /** How many inputs to keep in flight to keep it busy. */
  readonly inFlight: number;
}

export interface WorkerSetup {
  dbFile: string;
  limits: Limits;
  logLevel: string;
  lock: SharedArrayBuffer;
}

type Reply = { id: number; result: InputResult } | { ready: true };

interface Task {
  id: number;
  input: PortableInput;
  resolve(r: InputResult): void;
}

interface Slot {
  worker: Worker;
  threadId: number;
  /** Handed over and not yet answered. */
  tasks: Map<number, Task>;
}

/**
 * What the inputs are: files (the main thread only hands out paths) or mail read over IMAP (the
 * main thread also runs the IMAP connection and records mailbox positions).
 */
export type PoolUse = 'files' | 'mail';

/**
 * Worker threads to use when `[ingest] workers` is 0: one per core for files, one per core but
 * one for mail, at most 4. On 2 cores mail is read on one thread: the main thread runs the IMAP
 * connection and records positions, and one thread fetched as fast as two worker threads for less
 * CPU time (docs/performance.md, "Ingest and fetch").
 */
export function autoWorkers(use: PoolUse = 'files'): number {
  return Math.min(4, os.availableParallelism() - (use === 'mail' ? 1 : 0));
}

/**
 * The pool `[ingest] workers` asks for, or null for ingest on the calling thread (one worker
 * configured or chosen, one core, or a database in memory, which threads cannot share).
 */
export function poolFor(config: Config, dbFile: string, limits: Limits, log: Logger, use: PoolUse): IngestPool | null {
  const size = config.ingest.workers || autoWorkers(use);
  if (size < 2 || dbFile === ':memory:') return null;
  return new IngestPool(dbFile, limits, log, size);
}

/**
 * Fast path (ARCHITECTURE.md, "Fast paths"): ingest on worker threads, each with its own Ingestor
 * and database connection, in place of one thread: parsing and unpacking run on all cores, and
 * the writes of whole reports take turns under a lock in shared memory (store/lock.ts) in place
 * of SQLite's busy handler (docs/performance.md, "Ingest and fetch").
 * Invariant: the same results as the in-process Ingestor: the same summary, in input order, and
 * the same rows, the same copy of a report kept among several with one key (each input's id is its
 * turn to write, so inputs commit in input order).
 * Held by: test/pool.test.ts (every fixture, copies included, on 1, 2 and 4 threads; a dead
 * thread's lock freed and its turns skipped), with store/lock.ts.
 *
 * A worker that dies fails its inputs with E_WORKER (infrastructure: a mail is left in its mailbox
 * for the next pass), its turns are skipped, and it is replaced. Only inputs with a portable form
 * can be handed over (not standard input).
 */
export class IngestPool implements IngestRunner {
  private readonly slots: Slot[] = [];
  private readonly lock = SharedLock.buffer();
  /** Ids, in input order, double as write turns: the first is the lock's first turn. */
  private nextId = 1;
  /** Turns of inputs whose thread died: passed on in their place. */
  private readonly abandoned = new Set<number>();
  private closed = false;
  private deaths = 0;
  /** Why the pool stopped starting threads, once it has. */
  private broken: string | null = null;
  readonly inFlight: number;

  constructor(
    private readonly dbFile: string,
    private readonly limits: Limits,
    /** Workers log at this logger's level. */
    private readonly log: Logger,
    readonly size: number,
  ) {
    if (dbFile === ':memory:') throw new RuawatchError('E_INTERNAL', 'an ingest pool needs a database file');
    // Two per worker: the next input is waiting when one finishes.
    this.inFlight = size * 2;
  }

  ingest(input: IngestInput): Promise<InputResult> {
    if (this.closed) throw new RuawatchError('E_INTERNAL', 'the ingest pool is closed');
    const portable = input.portable;
    if (!portable) throw new RuawatchError('E_INTERNAL', `input ${input.name} cannot be handed to a worker thread`);
    const slot = this.pick();
    if (!slot) return Promise.resolve(workerLost(input.name, this.broken ?? 'no worker thread'));
    const id = this.nextId++;
    return new Promise((resolve) => {
      slot.tasks.set(id, { id, input: portable, resolve });
      slot.worker.postMessage(...message(id, portable));
    });
  }

  /** Lets every worker finish what it holds, closes their databases, and ends them. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await Promise.all(
      this.slots.map(
        (s) =>
          new Promise<void>((resolve) => {
            s.worker.once('exit', () => resolve());
            s.worker.postMessage({ close: true });
          }),
      ),
    );
  }

  private pick(): Slot | null {
    // Started on first use, so a pass with nothing to read costs no threads.
    if (this.slots.length < this.size && !this.slots.some((s) => s.tasks.size === 0) && this.broken === null) return this.spawn();
    let best: Slot | null = null;
    for (const s of this.slots) if (!best || s.tasks.size < best.tasks.size) best = s;
    return best;
  }

  private spawn(): Slot {
    const setup: WorkerSetup = { dbFile: this.dbFile, limits: this.limits, logLevel: this.log.level, lock: this.lock };
    const worker = new Worker(new URL('./pool-worker.js', import.meta.url), { workerData: setup });
    const slot: Slot = { worker, threadId: worker.threadId, tasks: new Map() };
    this.slots.push(slot);
    let ready = false;
    let failure: Error | null = null;
    worker.on('message', (msg: Reply) => {
      if ('ready' in msg) {
        ready = true;
        return;
      }
      const task = slot.tasks.get(msg.id);
      if (!task) return;
      slot.tasks.delete(msg.id);
      if (this.abandoned.size) SharedLock.skipTurns(this.lock, this.abandoned);
      task.resolve(msg.result);
    });
    worker.on('error', (err) => {
      failure = err;
      this.log.error({ err: err.message }, 'ingest worker thread failed');
    });
    worker.on('exit', (code) => {
      this.slots.splice(this.slots.indexOf(slot), 1);
      if (SharedLock.freeIfHeldBy(this.lock, slot.threadId)) this.log.error('an ingest worker thread ended holding the write lock; freed');
      const why = failure ? failure.message : `exit code ${code}`;
      // A thread that never started (the database cannot be opened) is not started again, nor one
      // that keeps dying: its inputs, and later ones, fail with E_WORKER and are retried next time.
      if (!this.closed && (!ready || ++this.deaths > MAX_RESTARTS)) this.broken ??= why;
      for (const t of slot.tasks.values()) {
        this.abandoned.add(t.id);
        t.resolve(workerLost(t.input.name, why));
      }
      slot.tasks.clear();
      SharedLock.skipTurns(this.lock, this.abandoned);
    });
    return slot;
  }
}

/** Worker threads replaced after dying before the pool gives up on threads. */
const MAX_RESTARTS = 10;

/**
 * The message for a worker. Bytes are copied (the caller keeps its buffer), and only the bytes
 * of the input: a Buffer that is a view into a larger one (Node's pool, a parsed response)
 * would otherwise be cloned whole.
 */
function message(id: number, input: PortableInput): [unknown, ArrayBuffer[]] {
  if ('bytes' in input && (input.bytes.byteOffset !== 0 || input.bytes.byteLength !== input.bytes.buffer.byteLength)) {
    const own = new Uint8Array(input.bytes);
    return [{ id, input: { ...input, bytes: own } }, [own.buffer as ArrayBuffer]];
  }
  return [{ id, input }, []];
}

function workerLost(name: string, why: string): InputResult {
  const err = new RuawatchError('E_WORKER', `the ingest worker thread stopped (${why}); the input is tried again next time`);
  return { input: name, leaves: [{ input: name, status: 'failed', code: err.code, error: err.message }] };
}

/**
 * Starts `start(item)` for each item, keeping at most `inFlight` running, and hands the results to
 * `onResult` in item order (so summaries and acknowledgements come out as with one thread); a
 * slow item holds back the delivery of later ones, not their start. `stop` is asked before each new
 * item is started; what is already started is finished and delivered.
 */
export async function inOrder<T, R>(
  items: AsyncIterable<T> | Iterable<T>,
  start: (item: T) => Promise<R>,
  inFlight: number,
  onResult: (item: T, result: R) => void | Promise<void>,
  stop?: () => boolean,
): Promise<void> {
  type Entry = { item: T; state: 'running' | 'done' | 'failed'; value?: R; error?: unknown };
  const waiting: Entry[] = [];
  let running = 0;
  let wake: (() => void) | null = null;
  const settled = () => {
    running--;
    const w = wake;
    wake = null;
    w?.();
  };
  const nextSettled = () => new Promise<void>((resolve) => (wake = resolve));
  const deliver = async () => {
    while (waiting.length && waiting[0]!.state !== 'running') {
      const e = waiting.shift()!;
      if (e.state === 'failed') throw e.error;
      await onResult(e.item, e.value as R);
    }
  };
  for await (const item of items) {
    if (stop?.()) break;
    const entry: Entry = { item, state: 'running' };
    waiting.push(entry);
    running++;
    start(item).then(
      (value) => {
        Object.assign(entry, { state: 'done', value });
        settled();
      },
      (error: unknown) => {
        Object.assign(entry, { state: 'failed', error });
        settled();
      },
    );
    while (running >= inFlight) {
      await nextSettled();
      await deliver();
    }
    await deliver();
  }
  while (waiting.length) {
    if (waiting[0]!.state === 'running') await nextSettled();
    await deliver();
  }
}

/** Runs inputs through a runner (see inOrder). */
export function ingestEach(
  inputs: AsyncIterable<IngestInput> | Iterable<IngestInput>,
  runner: IngestRunner,
  onResult: (result: InputResult) => void | Promise<void>,
): Promise<void> {
  return inOrder(
    inputs,
    (input) => runner.ingest(input),
    runner.inFlight,
    (_, result) => onResult(result),
  );
}
