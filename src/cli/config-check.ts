import { redact, resolveDbPath } from '../config/load.js';
import { EXIT_OK, openConfig, parseFlags, type Io } from './common.js';

export const configUsage = `usage: ruawatch config check [--config FILE]
  Validates the configuration and prints the effective settings (secrets redacted) as JSON.`;

export async function configCommand(args: string[], io: Io): Promise<number> {
  const [sub, ...rest] = args;
  if (sub !== 'check') {
    io.stderr.write(`${configUsage}\n`);
    return 2;
  }
  const { values } = parseFlags(rest, { config: { type: 'string' } }, false);
  const loaded = openConfig(values.config, io);
  const effective = { ...loaded.config, database: { path: resolveDbPath(undefined, loaded, io.env) } };
  io.stdout.write(`${JSON.stringify({ source: loaded.source, config: redact(effective) }, null, 2)}\n`);
  return EXIT_OK;
}
