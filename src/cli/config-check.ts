import { redact, resolveDbPath } from '../config/load.js';
import { checkDbPath } from '../store/db.js';
import { configFlag, defineCommand } from './command.js';
import { openApp } from '../app.js';
import { EXIT_FAILED, EXIT_OK, loggerFor, openConfig } from './common.js';
import { checkConnections, formatConnections } from './connect-check.js';

export const configCheckCommand = defineCommand(
  {
    name: 'config check',
    summary: 'validate the configuration; --connect logs in to every server too',
    flags: {
      config: configFlag,
      connect: {
        type: 'boolean',
        default: false,
        help: 'also log in to every mailbox, the SMTP server and the chat channels (nothing is sent, moved or created)',
      },
      json: { type: 'boolean', default: false, help: 'with --connect: print what was found as one JSON object' },
    },
    about: `Checks everything that can be known without connecting: every key and its type, unknown keys,
secret files, ca_file and certificate_file (readable, a PEM certificate, not expired), ports,
security = "none" and http:// only towards loopback, mailbox names, the keys of each mailbox's
way of logging in, and that the database file can be created or written. Mailboxes are named by
their name. Then prints the effective settings as JSON (secrets redacted, paths absolute). Exit 2
with every problem listed.

With --connect it logs in to each [[mailbox]], IMAP or Microsoft Graph (for OAuth2 after getting
a token: where from and for how long; then the folders present, the messages waiting, the TLS in
use), to the [alerts.email] SMTP server, and asks Matrix and Discord whether the token, room,
channel or webhook is usable, without sending anything; then prints what it found instead of the
settings. Exit 1 when one of them failed.`,
    examples: ['ruawatch config check --config /etc/ruawatch.toml', 'ruawatch config check --config /etc/ruawatch.toml --connect'],
  },
  async ({ values }, io) => {
    const loaded = openConfig(values.config, io);
    const database = resolveDbPath(undefined, loaded);
    if (database !== ':memory:') checkDbPath(database);
    if (!values.connect) {
      const effective = { ...loaded.config, database: { path: database } };
      io.stdout.write(`${JSON.stringify({ source: loaded.source, config: redact(effective) }, null, 2)}\n`);
      return EXIT_OK;
    }
    // The parts a command would use, built as it would build them (the database is not opened).
    const app = openApp(loaded.config, { db: database, log: loggerFor(loaded, 'warn', io), source: loaded.source, ...io.overrides });
    const found = await checkConnections(app).finally(() => app.close());
    io.stdout.write(values.json ? `${JSON.stringify(found)}\n` : formatConnections(found));
    const failed = [...found.mailboxes, ...found.channels].some((x) => !x.ok);
    return failed ? EXIT_FAILED : EXIT_OK;
  },
);
