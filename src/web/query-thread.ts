/**
 * The web server's query thread (see query-runner.ts): its own read-only connection to the
 * database (WAL lets it read while the worker writes), so a slow dashboard or metrics query never
 * holds up the event loop that answers /healthz and runs the polls.
 */
import { parentPort, workerData } from 'node:worker_threads';
import Database from 'better-sqlite3';
import { errorMessage, ownCode } from '../errors.js';
import { runQuery, type Query } from './queries.js';

const port = parentPort!;
const db = new Database((workerData as { dbFile: string }).dbFile, { readonly: true, fileMustExist: true });
db.pragma('busy_timeout = 5000');

port.on('message', (msg: { id: number; query: Query } | { close: true }) => {
  if ('close' in msg) {
    db.close();
    port.close();
    return;
  }
  runQuery(db, msg.query).then(
    (body) => port.postMessage({ id: msg.id, body }),
    (err: unknown) => port.postMessage({ id: msg.id, error: { code: ownCode(err), message: errorMessage(err) } }),
  );
});
port.postMessage({ ready: true });
