import { threadId } from 'node:worker_threads';
import { RuawatchError } from '../errors.js';

/**
 * Serialises write transactions between threads that each hold their own connection to the same
 * database. SQLite would serialise them too, but a connection that finds the database locked
 * sleeps in steps of 1 to 100 ms before trying again; with short transactions that is slower than
 * the transaction itself. This lock hands over as soon as it is released.
 *
 * Fast path (ARCHITECTURE.md, "Fast paths"), with the worker pool (pipeline/pool.ts): a mutex in
 * shared memory in place of SQLite's busy handler.
 * Invariant: one writer at a time, in input order, across threads; a lock held by a thread that
 * died can be freed by the pool, and that thread's turns skipped, so no writer waits for ever.
 * Held by: test/pool.test.ts (4 threads x 2,000 increments lose none; a dead holder's lock is
 * freed and its turns skipped; the same copy of a report kept on 1, 2 and 4 threads).
 */
export interface WriteLock {
  acquire(): void;
  release(): void;
}

export const noLock: WriteLock = { acquire() {}, release() {} };

const MUTEX = 0;
const TURN = 1;

/**
 * A mutex in a SharedArrayBuffer, usable from any thread it is passed to. The cell holds 0 when
 * free, else the holder's thread id + 1, so the owner of a thread that died holding it can free it
 * (`freeIfHeldBy`). Re-entrant within a thread.
 *
 * It also makes inputs write in input order. Each input handed to a thread has a turn number (1,
 * 2, 3... in input order, see pool.ts); a thread writes for its input only on that input's turn,
 * and passes the turn on when the input is done, whether it wrote or not. Unpacking and parsing
 * still run on every thread at once; only the short writes wait. So when two inputs hold reports
 * with one key, the earlier input's is stored, whatever the timing. A thread that dies never
 * passes its turns on: the pool skips them (`skipTurns`).
 */
export class SharedLock implements WriteLock {
  private readonly cells: Int32Array;
  private depth = 0;
  private readonly me = threadId + 1;
  /** The turn of the input this thread is working on; 0 for none (writes wait for no turn). */
  private turn = 0;

  constructor(buffer: SharedArrayBuffer) {
    this.cells = new Int32Array(buffer, 0, 2);
  }

  static buffer(): SharedArrayBuffer {
    const buffer = new SharedArrayBuffer(2 * Int32Array.BYTES_PER_ELEMENT);
    new Int32Array(buffer)[TURN] = 1;
    return buffer;
  }

  acquire(): void {
    if (this.depth++ > 0) return;
    this.waitForTurn();
    for (;;) {
      const holder = Atomics.compareExchange(this.cells, MUTEX, 0, this.me);
      if (holder === 0) return;
      // The timeout only bounds a wake-up that was somehow missed; release() always notifies.
      Atomics.wait(this.cells, MUTEX, holder, 1000);
    }
  }

  release(): void {
    if (this.depth === 0) throw new RuawatchError('E_INTERNAL', 'write lock released but not held');
    if (--this.depth > 0) return;
    Atomics.store(this.cells, MUTEX, 0);
    Atomics.notify(this.cells, MUTEX, 1);
  }

  /** From now on this thread works on the input with this turn: its writes wait for it. */
  beginTurn(turn: number): void {
    this.turn = turn;
  }

  /** The input is done: waits for its turn (all earlier inputs done), then passes it to the next. */
  endTurn(): void {
    if (this.turn === 0) return;
    this.waitForTurn();
    Atomics.compareExchange(this.cells, TURN, this.turn, this.turn + 1);
    Atomics.notify(this.cells, TURN);
    this.turn = 0;
  }

  private waitForTurn(): void {
    if (this.turn === 0) return;
    for (;;) {
      const now = Atomics.load(this.cells, TURN);
      // Past it: the pool skipped it, taking this thread for dead. Nothing is gained by waiting.
      if (now >= this.turn) return;
      Atomics.wait(this.cells, TURN, now, 1000);
    }
  }

  /** Frees the lock if the given thread holds it (that thread has exited). */
  static freeIfHeldBy(buffer: SharedArrayBuffer, deadThreadId: number): boolean {
    const cell = new Int32Array(buffer, 0, 1);
    if (Atomics.compareExchange(cell, MUTEX, deadThreadId + 1, 0) !== deadThreadId + 1) return false;
    Atomics.notify(cell, MUTEX, 1);
    return true;
  }

  /**
   * Passes on the turns of inputs whose thread died (they will never end them), as far as the turn
   * has come; called again whenever an input finishes. Forgets abandoned turns already past.
   */
  static skipTurns(buffer: SharedArrayBuffer, abandoned: Set<number>): void {
    const cells = new Int32Array(buffer, 0, 2);
    for (;;) {
      const now = Atomics.load(cells, TURN);
      for (const t of abandoned) if (t < now) abandoned.delete(t);
      if (!abandoned.has(now)) return;
      abandoned.delete(now);
      Atomics.compareExchange(cells, TURN, now, now + 1);
      Atomics.notify(cells, TURN);
    }
  }
}
