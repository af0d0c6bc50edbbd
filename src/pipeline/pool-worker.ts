/**
 * An ingest worker thread (see pool.ts): its own database connection and Ingestor; inputs arrive
 * one message at a time and are ingested one after another, each answered with its result.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { RuawatchError, errorCode, errorMessage } from '../errors.js';
import { createLogger } from '../log.js';
import { openDb } from '../store/db.js';
import { SharedLock } from '../store/lock.js';
import { ReportStore } from '../store/reports.js';
import { fromBuffer } from '../unpack/bytes.js';
import { readFile } from '../unpack/read-file.js';
import { Ingestor, type IngestInput, type InputResult } from './ingest.js';
import type { PortableInput, WorkerSetup } from './pool.js';

const setup = workerData as WorkerSetup;
const port = parentPort!;
const db = openDb(setup.dbFile, { migrate: false });
const lock = new SharedLock(setup.lock);
const ingestor = new Ingestor(new ReportStore(db, lock), setup.limits, createLogger(setup.logLevel));

let queue: Promise<void> = Promise.resolve();
port.on('message', (msg: { id: number; input: PortableInput } | { close: true }) => {
  if ('close' in msg) {
    queue = queue.then(() => {
      db.close();
      port.close();
    });
    return;
  }
  queue = queue.then(async () => {
    let result: InputResult;
    // The input's id is its turn to write (see store/lock.ts): inputs commit in input order.
    lock.beginTurn(msg.id);
    try {
      result = await ingestor.ingest(toInput(msg.input));
    } catch (err) {
      // ingest() turns every input's failure into a result; this would be a defect of ours.
      const name = msg.input.name;
      result = { input: name, leaves: [{ input: name, status: 'failed', code: errorCode(err), error: errorMessage(err) }] };
    } finally {
      lock.endTurn();
    }
    port.postMessage({ id: msg.id, result });
  });
});
port.postMessage({ ready: true });

function toInput(p: PortableInput): IngestInput {
  if ('file' in p) return { name: p.name, open: () => readFile(p.file, p.maxBytes), portable: p };
  if ('bytes' in p) return { name: p.name, open: () => fromBuffer(p.bytes), portable: p };
  const err = new RuawatchError(p.error.code, p.error.message);
  return {
    name: p.name,
    open: () => {
      throw err;
    },
  };
}
