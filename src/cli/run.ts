import { startWeb } from '../web/server.js';
import { Worker } from '../worker/worker.js';
import { configFlag, dbFlag, defineCommand } from './command.js';
import { appFor, EXIT_OK } from './common.js';

/** Shutdown must be over within 10 s (docker stop's default grace period): the poll gets 8. */
const GRACE_MS = 8_000;

export const runCommand = defineCommand(
  {
    name: 'run',
    summary: 'the long-running worker: polls, alerts, digest, dashboard',
    flags: { db: dbFlag, config: configFlag },
    about: `Polls every [[mailbox]] on [schedule] poll (and at once on start), evaluates the alerts after
each poll, sends the digest on [schedule] digest, and serves the dashboard, /healthz and /metrics
on [web] listen. Logs JSON lines on stderr (level info unless [log] level says otherwise). Stops
cleanly on SIGTERM or SIGINT: the poll under way finishes the message it is on. Exit 0 then.`,
    examples: ['ruawatch run --config /etc/ruawatch.toml'],
  },
  async ({ values }, io) => {
    const app = appFor(values, io, { level: 'info' });
    const log = app.log;
    // Opened now: a database that cannot be used stops run before it serves anything.
    const db = app.db;
    if (app.config.mailbox.length === 0) log.warn('no [[mailbox]] is configured: only alerts on what is already in the database');
    const worker = new Worker(app);
    const web = await startWeb(app.config, db, worker, log).catch(async (err: unknown) => {
      await app.close();
      throw err;
    });
    io.stdout.write(`ruawatch: running; the dashboard, /healthz and /metrics on ${web.url}\n`);

    const signal = await new Promise<string>((resolve) => {
      for (const s of ['SIGTERM', 'SIGINT'] as const) process.once(s, () => resolve(s));
      worker.start();
    });
    const started = Date.now();
    log.info({ signal }, 'stopping');
    const clean = await worker.stop(GRACE_MS);
    if (!clean) log.warn('the current poll did not finish in time; its unacknowledged messages are read again next start');
    await web.close();
    await app.close();
    log.info({ ms: Date.now() - started }, 'stopped');
    // Anything still holding the event loop (a socket the server never closed) must not keep a
    // stopping container alive.
    setTimeout(() => process.exit(EXIT_OK), 500).unref();
    return EXIT_OK;
  },
);
