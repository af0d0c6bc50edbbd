#!/usr/bin/env node
import { RuawatchError, errorMessage } from '../errors.js';
import { EXIT_FAILED, EXIT_USAGE, processIo, type Io } from './common.js';
import { alertsCommand, alertsUsage } from './alerts.js';
import { configCommand, configUsage } from './config-check.js';
import { digestCommand, digestUsage } from './digest.js';
import { fetchCommand, fetchUsage } from './fetch.js';
import { healthcheckCommand, healthcheckUsage } from './healthcheck.js';
import { ingestCommand, ingestUsage } from './ingest.js';
import { notifyCommand, notifyUsage } from './notify.js';
import { pruneCommand, pruneUsage } from './prune.js';
import { reportCommand, reportUsage } from './report.js';
import { runCommand, runUsage } from './run.js';
import { whoisCommand, whoisUsage } from './whois.js';

const usage = `ruawatch: watches DMARC and SMTP TLS aggregate reports.

${ingestUsage}
${reportUsage}
${fetchUsage}
${alertsUsage}
${digestUsage}
${notifyUsage}
${pruneUsage}
${runUsage}
${configUsage}
${healthcheckUsage}
${whoisUsage}`;

const commands: Record<string, (args: string[], io: Io) => Promise<number>> = {
  ingest: ingestCommand,
  report: reportCommand,
  fetch: fetchCommand,
  alerts: alertsCommand,
  digest: digestCommand,
  notify: notifyCommand,
  prune: pruneCommand,
  run: runCommand,
  config: configCommand,
  healthcheck: healthcheckCommand,
  whois: whoisCommand,
};

export async function main(argv: string[], io: Io = processIo): Promise<number> {
  const [name, ...args] = argv;
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    io.stdout.write(`${usage}\n`);
    return name ? 0 : EXIT_USAGE;
  }
  const command = commands[name];
  if (!command) {
    io.stderr.write(`ruawatch: unknown command "${name}"\n\n${usage}\n`);
    return EXIT_USAGE;
  }
  try {
    return await command(args, io);
  } catch (err) {
    const code = err instanceof RuawatchError ? err.code : null;
    io.stderr.write(`ruawatch ${name}: ${errorMessage(err)}\n`);
    return code === 'E_USAGE' || code === 'E_CONFIG' ? EXIT_USAGE : EXIT_FAILED;
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`ruawatch: ${errorMessage(err)}\n`);
    process.exitCode = EXIT_FAILED;
  },
);
