import { parseArgs } from 'node:util';
import { RuawatchError, errorMessage } from '../errors.js';
import type { Io } from './common.js';

/**
 * A flag as util.parseArgs takes it, plus what the help says of it. The flags a command parses and
 * the ones its help lists are the same objects, so the two cannot disagree.
 */
export type FlagSpec = (
  | {
      type: 'string';
      /** The value's placeholder in the help: FILE, YYYY-MM-DD. */
      value: string;
      default?: string;
    }
  | {
      type: 'string';
      value: string;
      /** The flag may be given more than once; its values come as a list. */
      multiple: true;
    }
  | { type: 'boolean'; default?: boolean }
) & { short?: string; help: string };

export type FlagSpecs = Record<string, FlagSpec>;

export interface CommandSpec<F extends FlagSpecs = FlagSpecs> {
  /** "ingest", or "notify test" for a subcommand. */
  name: string;
  /** One line for the command list. */
  summary: string;
  flags: F;
  /** The positional arguments' placeholder ("PATH..."); none when unset. */
  args?: string;
  /** What the command does: paragraphs separated by blank lines, lines within 100 columns. */
  about: string;
  /** Command lines, each optionally followed by "  # comment". */
  examples: string[];
}

export type Parsed<F extends FlagSpecs> = ReturnType<
  typeof parseArgs<{ args: string[]; options: F; allowPositionals: true; strict: true }>
>;

export interface Command<F extends FlagSpecs = FlagSpecs> {
  spec: CommandSpec<F>;
  run(args: string[], io: Io): Promise<number>;
}

/**
 * A command: its spec (flags, help text, examples) and what it does with the parsed flags. Unknown
 * flags, a missing value and stray arguments are usage errors (exit 2).
 */
export function defineCommand<F extends FlagSpecs>(spec: CommandSpec<F>, run: (parsed: Parsed<F>, io: Io) => Promise<number>): Command<F> {
  return {
    spec,
    run: (args, io) => run(parseCommand(args, spec), io),
  };
}

export function parseCommand<F extends FlagSpecs>(args: string[], spec: CommandSpec<F>): Parsed<F> {
  let parsed: Parsed<F>;
  try {
    parsed = parseArgs({ args, options: spec.flags, allowPositionals: true, strict: true });
  } catch (err) {
    throw new RuawatchError('E_USAGE', `${errorMessage(err)}\n${usageLine(spec)}`);
  }
  if (spec.args === undefined && parsed.positionals.length) {
    throw new RuawatchError('E_USAGE', `unexpected argument "${parsed.positionals[0]}"\n${usageLine(spec)}`);
  }
  return parsed;
}

/** True when the arguments ask for help (before any "--"). */
export function wantsHelp(args: string[]): boolean {
  for (const a of args) {
    if (a === '--') return false;
    if (a === '--help' || a === '-h') return true;
  }
  return false;
}

/** "ruawatch ingest [--db FILE] [--config FILE] [--json] PATH..." */
export function synopsis(spec: CommandSpec): string {
  const flags = Object.entries(spec.flags).map(
    ([name, f]) => `[--${name}${f.type === 'string' ? ` ${f.value}` : ''}]${'multiple' in f && f.multiple ? '...' : ''}`,
  );
  return ['ruawatch', spec.name, ...flags, ...(spec.args ? [spec.args] : [])].join(' ');
}

export function usageLine(spec: CommandSpec): string {
  return `usage: ${synopsis(spec)}\n(ruawatch ${spec.name} --help for more)`;
}

/** The full help of a command, as `--help` prints it. */
export function formatHelp(spec: CommandSpec): string {
  const rows: [string, string][] = Object.entries(spec.flags).map(([name, f]) => [
    `${f.short ? `-${f.short}, ` : ''}--${name}${f.type === 'string' ? ` ${f.value}` : ''}`,
    'multiple' in f && f.multiple ? `${f.help} (may be given more than once)` : f.help,
  ]);
  rows.push(['-h, --help', 'print this help']);
  const width = Math.max(...rows.map(([l]) => l.length)) + 2;
  const lines = [`usage: ${synopsis(spec)}`, '', spec.about.trim(), '', 'Options:'];
  for (const [left, text] of rows) lines.push(...wrapRow(`  ${left.padEnd(width)}`, text));
  lines.push('', spec.examples.length > 1 ? 'Examples:' : 'Example:', ...spec.examples.map((e) => `  ${e}`));
  return `${lines.join('\n')}\n`;
}

const COLUMNS = 100;

/** A help row, its text wrapped to 100 columns and indented under itself. */
function wrapRow(left: string, text: string): string[] {
  const out: string[] = [];
  let line = left;
  for (const word of text.split(/\s+/)) {
    if (line.length > left.length && line.length + 1 + word.length > COLUMNS) {
      out.push(line);
      line = ' '.repeat(left.length) + word;
    } else line += line.length > left.length ? ` ${word}` : word;
  }
  out.push(line);
  return out;
}

/** Flags most commands take. */
export const dbFlag = {
  type: 'string',
  value: 'FILE',
  help: "the database file (default: the config's [database] path, else $RUAWATCH_DB, else ./data/ruawatch.sqlite)",
} as const satisfies FlagSpec;

export const configFlag = {
  type: 'string',
  value: 'FILE',
  help: 'the configuration file (default: $RUAWATCH_CONFIG; RUAWATCH_* variables apply either way)',
} as const satisfies FlagSpec;

export const jsonFlag = { type: 'boolean', default: false, help: 'print one JSON object instead of text' } as const satisfies FlagSpec;

/** --at, the UTC day a command evaluates at the end of; `otherwise` says what it does without. */
export function atFlag(otherwise: string) {
  return { type: 'string', value: 'YYYY-MM-DD', help: `as of the end of this UTC day (default: ${otherwise})` } as const satisfies FlagSpec;
}
