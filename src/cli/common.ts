import { loadConfig, resolveDbPath, type LoadedConfig } from '../config/load.js';
import { RuawatchError } from '../errors.js';
import { createLogger, type Logger } from '../log.js';
import { DAY } from '../analyse/index.js';
import { openApp, type App, type AppOptions } from '../app.js';

export const EXIT_OK = 0;
export const EXIT_FAILED = 1;
export const EXIT_USAGE = 2;

export interface Io {
  stdout: NodeJS.WritableStream & { isTTY?: boolean };
  stderr: NodeJS.WritableStream & { isTTY?: boolean };
  env: NodeJS.ProcessEnv;
  /** Parts a test puts in place of the real ones (reverse DNS, channels); see app.ts. */
  overrides?: Pick<AppOptions, 'lookup' | 'channels'>;
}

export const processIo: Io = { stdout: process.stdout, stderr: process.stderr, env: process.env };

export function openConfig(file: string | undefined, io: Io): LoadedConfig {
  return loadConfig(file, io.env);
}

/**
 * The logger of a command: [log] level, else `fallbackLevel` (warn for one-shot commands, which
 * print a summary, info for run). JSON lines on the Io's stderr.
 */
export function loggerFor(loaded: LoadedConfig, fallbackLevel: string, io: Io): Logger {
  return createLogger(loaded.config.log.level ?? fallbackLevel, io.stderr === process.stderr ? undefined : io.stderr);
}

/**
 * The App of a command (app.ts): its configuration (--config), logger (warn for one-shot commands,
 * which print a summary; info for run; [log] level over both) and database (--db, else the
 * config's: see resolveDbPath), opened on first use and logged, so a run in the wrong folder
 * shows at once.
 */
export function appFor(
  flags: { db?: string | undefined; config?: string | undefined },
  io: Io,
  opts: { level: string; mustExist?: boolean },
): App {
  const loaded = openConfig(flags.config, io);
  const log = loggerFor(loaded, opts.level, io);
  return openApp(loaded.config, {
    db: resolveDbPath(flags.db, loaded),
    log,
    source: loaded.source,
    mustExist: opts.mustExist ?? false,
    ...io.overrides,
  });
}

/** The moment a command evaluates at: the end of the day --at names, else now (epoch seconds). */
export function asOf(at: string | undefined): number {
  const day = parseDay('--at', at);
  return day === undefined ? Math.floor(Date.now() / 1000) : day + DAY;
}

/** YYYY-MM-DD as UTC midnight, epoch seconds. */
export function parseDay(flag: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(value);
  const ms = m ? Date.UTC(Number(m[1]), Number(m[2]) - 1, Number(m[3])) : NaN;
  if (!m || Number.isNaN(ms) || new Date(ms).toISOString().slice(0, 10) !== value) {
    throw new RuawatchError('E_USAGE', `${flag} wants a date as YYYY-MM-DD, not "${value}"`);
  }
  return ms / 1000;
}

export function formatInt(n: number): string {
  return n.toLocaleString('en-US');
}

export function formatRate(r: number | null): string {
  return r === null ? '-' : `${(r * 100).toFixed(1)}%`;
}

/** "1 report", "2 reports". */
export function plural(n: number, word: string): string {
  return `${formatInt(n)} ${word}${n === 1 ? '' : 's'}`;
}
