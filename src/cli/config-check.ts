import { limitsOf, redact, resolveDbPath } from '../config/load.js';
import { createLogger } from '../log.js';
import { probeMailbox } from '../sources/probe.js';
import { EXIT_FAILED, EXIT_OK, openConfig, parseFlags, type Io } from './common.js';

export const configUsage = `usage: ruawatch config check [--config FILE] [--connect]
  Validates the configuration and prints the effective settings (secrets redacted) as JSON.
  --connect also gets a token for each OAuth2 mailbox and logs in to each mailbox (nothing is
  created or moved), and adds what it found under "mailboxes"; exit 1 if any failed.`;

/** A mailbox answers within this long when checked, or counts as failed. */
const PROBE_TIMEOUT_MS = 30_000;

export async function configCommand(args: string[], io: Io): Promise<number> {
  const [sub, ...rest] = args;
  if (sub !== 'check') {
    io.stderr.write(`${configUsage}\n`);
    return 2;
  }
  const { values } = parseFlags(rest, { config: { type: 'string' }, connect: { type: 'boolean', default: false } }, false);
  const loaded = openConfig(values.config, io);
  const effective = { ...loaded.config, database: { path: resolveDbPath(undefined, loaded, io.env) } };
  const out: Record<string, unknown> = { source: loaded.source, config: redact(effective) };
  let ok = true;
  if (values.connect) {
    const log = createLogger(loaded.config.log.level ?? 'warn');
    const max = limitsOf(loaded.config).maxMessageBytes;
    const mailboxes = await Promise.all(loaded.config.mailbox.map((box) => probeMailbox(box, log, PROBE_TIMEOUT_MS, max)));
    out.mailboxes = mailboxes;
    ok = mailboxes.every((m) => m.ok);
  }
  io.stdout.write(`${JSON.stringify(out, null, 2)}\n`);
  return ok ? EXIT_OK : EXIT_FAILED;
}
