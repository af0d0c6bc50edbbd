/** A thread for test/pool.test.ts: increments a shared counter under the write lock, or dies holding it. */
import { parentPort, workerData } from 'node:worker_threads';
import { SharedLock } from '../../src/store/lock.js';

const { lock, counter, iterations, die } = workerData as {
  lock: SharedArrayBuffer;
  counter: SharedArrayBuffer;
  iterations: number;
  die: boolean;
};
const mutex = new SharedLock(lock);
const cell = new Int32Array(counter);

if (die) {
  mutex.acquire();
  parentPort!.postMessage('holding');
  // Ends here, never releasing.
} else {
  let spin = 0;
  for (let i = 0; i < iterations; i++) {
    mutex.acquire();
    // A read-modify-write that is not atomic: only mutual exclusion keeps every increment.
    const v = cell[0]!;
    for (let k = (i * 7919) % 200; k > 0; k--) spin += k;
    cell[0] = v + 1;
    mutex.release();
  }
  parentPort!.postMessage(spin >= 0 ? 'done' : 'never');
}
