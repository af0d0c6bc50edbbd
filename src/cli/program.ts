import fs from 'node:fs';
import { errorCode, errorMessage } from '../errors.js';
import { alertsCommand } from './alerts.js';
import { formatHelp, wantsHelp, type Command } from './command.js';
import { EXIT_FAILED, EXIT_OK, EXIT_USAGE, processIo, type Io } from './common.js';
import { configCheckCommand } from './config-check.js';
import { digestCommand } from './digest.js';
import { fetchCommand } from './fetch.js';
import { healthcheckCommand } from './healthcheck.js';
import { ingestCommand } from './ingest.js';
import { notifyRequeueCommand, notifyStatusCommand, notifyTestCommand } from './notify.js';
import { pruneCommand } from './prune.js';
import { reportCommand } from './report.js';
import { runCommand } from './run.js';
import { whoisCommand } from './whois.js';

/** Every command, in the order the command list and the docs show them. */
export const COMMANDS: readonly Command[] = [
  ingestCommand,
  reportCommand,
  fetchCommand,
  alertsCommand,
  digestCommand,
  notifyTestCommand,
  notifyStatusCommand,
  notifyRequeueCommand,
  pruneCommand,
  runCommand,
  configCheckCommand,
  healthcheckCommand,
  whoisCommand,
] as Command[];

export function version(): string {
  // dist/src/cli/ -> the package root, in the checkout and in the image alike.
  const pkg = JSON.parse(fs.readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

/** What bare `ruawatch` and `ruawatch --help` print. */
export function commandList(): string {
  const width = Math.max(...COMMANDS.map((c) => c.spec.name.length)) + 2;
  return [
    `ruawatch ${version()}: watches DMARC and SMTP TLS aggregate reports, and alerts when they drift.`,
    '',
    'usage: ruawatch COMMAND [OPTIONS]',
    '',
    'Commands:',
    ...COMMANDS.map((c) => `  ${c.spec.name.padEnd(width)}${c.spec.summary}`),
    '',
    "ruawatch COMMAND --help shows a command's options and an example; ruawatch --version its version.",
    'Exit codes: 0 done, 1 an input or a notification failed, 2 a usage or configuration error.',
    '',
  ].join('\n');
}

/** The commands of a group ("notify" has "notify test", "notify status" and "notify requeue"). */
function groupOf(name: string): Command[] {
  return COMMANDS.filter((c) => c.spec.name.startsWith(`${name} `));
}

function groupHelp(name: string, members: Command[]): string {
  const width = Math.max(...members.map((c) => c.spec.name.length)) + 2;
  return [
    `usage: ruawatch ${name} ${members.map((c) => c.spec.name.slice(name.length + 1)).join('|')} [OPTIONS]`,
    '',
    ...members.map((c) => `  ${c.spec.name.padEnd(width)}${c.spec.summary}`),
    '',
    `ruawatch ${name} SUBCOMMAND --help shows its options and an example.`,
    '',
  ].join('\n');
}

/**
 * Runs one command line (without the program name) and returns its exit code: 0 done, 1 an input
 * or a notification failed, 2 a usage or configuration error. Output goes to `io`, never to the
 * process's own streams, so tests run it in process.
 */
export async function main(argv: string[], io: Io = processIo): Promise<number> {
  const [first, ...rest] = argv;
  if (first === undefined) {
    io.stdout.write(commandList());
    return EXIT_USAGE;
  }
  if (first === '--help' || first === '-h' || first === 'help') {
    const topic = first === 'help' ? rest.join(' ') : '';
    if (!topic) {
      io.stdout.write(commandList());
      return EXIT_OK;
    }
    return main([...rest, '--help'], io);
  }
  if (first === '--version' || first === '-V') {
    io.stdout.write(`ruawatch ${version()}\n`);
    return EXIT_OK;
  }
  let command = COMMANDS.find((c) => c.spec.name === first);
  let args = rest;
  const group = groupOf(first);
  if (!command && group.length) {
    command = group.find((c) => c.spec.name === `${first} ${rest[0]}`);
    args = rest.slice(1);
    if (!command) {
      if (wantsHelp(rest)) {
        io.stdout.write(groupHelp(first, group));
        return EXIT_OK;
      }
      const what = rest[0] === undefined ? `ruawatch ${first} needs a subcommand` : `unknown subcommand "${first} ${rest[0]}"`;
      io.stderr.write(`ruawatch: ${what}\n\n${groupHelp(first, group)}`);
      return EXIT_USAGE;
    }
  }
  if (!command) {
    io.stderr.write(`ruawatch: unknown command "${first}"\n\n${commandList()}`);
    return EXIT_USAGE;
  }
  if (wantsHelp(args)) {
    io.stdout.write(formatHelp(command.spec));
    return EXIT_OK;
  }
  try {
    return await command.run(args, io);
  } catch (err) {
    const code = errorCode(err);
    io.stderr.write(`ruawatch ${command.spec.name}: ${errorMessage(err)}\n`);
    return code === 'E_USAGE' || code === 'E_CONFIG' ? EXIT_USAGE : EXIT_FAILED;
  }
}

/**
 * docs/commands.md: every command's --help, as printed. Written by `npm run docs:commands`; a test
 * fails when the file and the help texts differ.
 */
export function commandReference(): string {
  const fence = (text: string) => ['```', text.trimEnd(), '```'];
  return [
    '# Command reference',
    '',
    '<!-- Generated from the --help texts by `npm run docs:commands`: edit src/cli/, not this file. -->',
    '',
    'What each command prints with `--help`. The JSON outputs, with real examples, are in the',
    '[README](../README.md#commands); the configuration they read in [configuration.md](configuration.md).',
    '',
    ...fence(commandList().replace(/^ruawatch \S+:/, 'ruawatch:')),
    ...COMMANDS.flatMap((c) => ['', `## ruawatch ${c.spec.name}`, '', ...fence(formatHelp(c.spec))]),
    '',
  ].join('\n');
}
