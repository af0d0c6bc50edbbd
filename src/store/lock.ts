import { threadId } from 'node:worker_threads';

/**
 * Serialises write transactions between threads that each hold their own connection to the same
 * database. SQLite would serialise them too, but a connection that finds the database locked
 * sleeps in steps of 1 to 100 ms before trying again; with short transactions that is slower than
 * the transaction itself. This lock hands over as soon as it is released.
 */
export interface WriteLock {
  acquire(): void;
  release(): void;
}

export const noLock: WriteLock = { acquire() {}, release() {} };

/**
 * A mutex in a SharedArrayBuffer, usable from any thread it is passed to. The cell holds 0 when
 * free, else the holder's thread id + 1, so the owner of a thread that died holding it can free it
 * (`freeIfHeldBy`). Re-entrant within a thread.
 */
export class SharedLock implements WriteLock {
  private readonly cell: Int32Array;
  private depth = 0;
  private readonly me = threadId + 1;

  constructor(buffer: SharedArrayBuffer) {
    this.cell = new Int32Array(buffer, 0, 1);
  }

  static buffer(): SharedArrayBuffer {
    return new SharedArrayBuffer(Int32Array.BYTES_PER_ELEMENT);
  }

  acquire(): void {
    if (this.depth++ > 0) return;
    for (;;) {
      const holder = Atomics.compareExchange(this.cell, 0, 0, this.me);
      if (holder === 0) return;
      // The timeout only bounds a wake-up that was somehow missed; release() always notifies.
      Atomics.wait(this.cell, 0, holder, 1000);
    }
  }

  release(): void {
    if (this.depth === 0) throw new Error('write lock released but not held');
    if (--this.depth > 0) return;
    Atomics.store(this.cell, 0, 0);
    Atomics.notify(this.cell, 0, 1);
  }

  /** Frees the lock if the given thread holds it (that thread has exited). */
  static freeIfHeldBy(buffer: SharedArrayBuffer, deadThreadId: number): boolean {
    const cell = new Int32Array(buffer, 0, 1);
    if (Atomics.compareExchange(cell, 0, deadThreadId + 1, 0) !== deadThreadId + 1) return false;
    Atomics.notify(cell, 0, 1);
    return true;
  }
}
