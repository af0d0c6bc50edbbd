import fs from 'node:fs';
import nodePath from 'node:path';
import { parse as parseToml } from 'smol-toml';
import type { z } from 'zod';
import { RuawatchError, errorMessage } from '../errors.js';
import { defaultLimits, limitSetting, type Limits } from '../unpack/limits.js';
import { SECRET_KEYS, configSchema, type Config } from './schema.js';

export interface LoadedConfig {
  config: Config;
  /** Where the config came from, for messages. */
  source: string | null;
  /** True when database.path was set (file or RUAWATCH_DATABASE_PATH) rather than defaulted. */
  databaseSet: boolean;
}

/** The database file when nothing names one: relative to the working directory. */
export const DEFAULT_DB = './data/ruawatch.sqlite';

type Tree = Record<string, unknown>;

/**
 * Loads the configuration: the TOML file (--config, else $RUAWATCH_CONFIG, else none), then
 * RUAWATCH_<SECTION>_<KEY> environment variables over it, then the defaults the environment gives
 * for what neither set ($RUAWATCH_DB, $RUAWATCH_LISTEN: a container image's own places), then
 * `<secret>_file` indirections, then the schema. Every problem is one E_CONFIG error listing each
 * bad key by its full path.
 *
 * Paths (database.path, every `*_file`) come out absolute: one written in the config file is
 * relative to that file's folder, so the file means the same from cron, a service manager or a
 * shell; one from the environment is relative to the working directory, as on a command line.
 */
export function loadConfig(file: string | undefined, env: NodeJS.ProcessEnv = process.env, cwd = process.cwd()): LoadedConfig {
  const path = file ?? env.RUAWATCH_CONFIG ?? null;
  let tree: Tree = {};
  if (path) {
    let text: string;
    try {
      text = fs.readFileSync(nodePath.resolve(cwd, path), 'utf8');
    } catch (err) {
      throw new RuawatchError('E_CONFIG', `cannot read the config file ${path}: ${errorMessage(err)}`);
    }
    try {
      tree = parseToml(text) as Tree;
    } catch (err) {
      throw new RuawatchError('E_CONFIG', `${path} is not valid TOML: ${errorMessage(err)}`);
    }
    resolvePaths(tree, nodePath.dirname(nodePath.resolve(cwd, path)));
  }
  applyEnv(tree, env);
  resolvePaths(tree, cwd);
  const database = (tree.database ??= {}) as Tree;
  const databaseSet = database.path !== undefined;
  if (!databaseSet) database.path = nodePath.resolve(cwd, env.RUAWATCH_DB || DEFAULT_DB);
  const web = (tree.web ??= {}) as Tree;
  if (env.RUAWATCH_LISTEN && web.listen === undefined) web.listen = env.RUAWATCH_LISTEN;
  resolveSecretFiles(tree, []);
  const parsed = configSchema.safeParse(tree);
  if (!parsed.success) {
    const where = path ? ` in ${path}` : '';
    throw new RuawatchError('E_CONFIG', `invalid configuration${where}:\n${formatIssues(parsed.error.issues)}`);
  }
  return { config: parsed.data, source: path, databaseSet };
}

/**
 * The database file: --db (relative to the working directory), else the one loadConfig settled on
 * (the config's database.path, else $RUAWATCH_DB, else ./data/ruawatch.sqlite). Always absolute,
 * so logs and `config check` name the very file.
 */
export function resolveDbPath(flag: string | undefined, loaded: LoadedConfig, _env?: NodeJS.ProcessEnv): string {
  if (flag) return flag === ':memory:' ? flag : nodePath.resolve(flag);
  return loaded.config.database.path;
}

/**
 * Makes database.path, a mailbox's token_path (a file read anew for every token, so not a secret read
 * here), every `*_file` value and every entry of a `*_files` list absolute, relative to `base`.
 */
function resolvePaths(node: unknown, base: string, key = ''): void {
  if (Array.isArray(node)) {
    for (const n of node) resolvePaths(n, base);
    return;
  }
  if (!node || typeof node !== 'object') return;
  const obj = node as Tree;
  for (const [k, v] of Object.entries(obj)) {
    const isPath = k.endsWith('_file') || k === 'token_path' || (key === 'database' && k === 'path');
    // ":memory:" is SQLite's in-memory database, not a file name.
    if (isPath && typeof v === 'string' && v !== '' && v !== ':memory:') obj[k] = nodePath.resolve(base, v);
    else if (k.endsWith('_files') && Array.isArray(v))
      obj[k] = v.map((f) => (typeof f === 'string' && f !== '' ? nodePath.resolve(base, f) : f));
    else if (typeof v === 'object') resolvePaths(v, base, key ? `${key}.${k}` : k);
  }
}

export function limitsOf(config: Config): Limits {
  const out = { ...defaultLimits } as Limits;
  for (const k of Object.keys(defaultLimits) as (keyof Limits)[]) {
    const v = (config.limits as Record<string, number | undefined>)[limitSetting(k)];
    if (v !== undefined) out[k] = v;
  }
  return out;
}

/** A copy of the config with every secret replaced, for printing. */
export function redact(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(redact);
  if (value && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, SECRET_KEYS.has(k) && v !== undefined ? '[redacted]' : redact(v)]));
  }
  return value;
}

function formatIssues(issues: z.core.$ZodIssue[]): string {
  const lines: string[] = [];
  for (const issue of issues) {
    const at = issue.path
      .map((p) => (typeof p === 'number' ? `[${p}]` : `.${String(p)}`))
      .join('')
      .replace(/^\./, '');
    if (issue.code === 'unrecognized_keys') {
      for (const k of issue.keys) lines.push(`  ${at ? `${at}.` : ''}${k}: unknown key`);
    } else {
      lines.push(`  ${at || '(top level)'}: ${issue.message}`);
    }
  }
  return lines.join('\n');
}

/**
 * `password_file = "/run/secrets/x"` becomes `password = <file contents>`, for every secret key.
 * A trailing newline (as `echo` and most secret stores write) is dropped.
 */
function resolveSecretFiles(node: unknown, at: string[]): void {
  if (Array.isArray(node)) {
    node.forEach((n, i) => resolveSecretFiles(n, [...at, `[${i}]`]));
    return;
  }
  if (!node || typeof node !== 'object') return;
  const obj = node as Tree;
  for (const key of Object.keys(obj)) {
    const base = key.endsWith('_file') ? key.slice(0, -5) : null;
    if (base && SECRET_KEYS.has(base)) {
      const where = [...at, key].join('.').replace(/\.\[/g, '[');
      if (obj[base] !== undefined) throw new RuawatchError('E_CONFIG', `${where}: set either ${base} or ${key}, not both`);
      const file = obj[key];
      if (typeof file !== 'string') throw new RuawatchError('E_CONFIG', `${where}: expected a file path`);
      try {
        obj[base] = fs.readFileSync(file, 'utf8').replace(/\r?\n$/, '');
      } catch (err) {
        throw new RuawatchError('E_CONFIG', `${where}: cannot read ${file}: ${errorMessage(err)}`);
      }
      delete obj[key];
    } else {
      resolveSecretFiles(obj[key], [...at, key]);
    }
  }
}

/**
 * Environment overrides. RUAWATCH_DATABASE_PATH sets [database] path; RUAWATCH_ALERTS_EMAIL_HOST
 * sets [alerts.email] host; RUAWATCH_MAILBOX_<NAME>_PASSWORD sets the password of the mailbox
 * named NAME (compared case-insensitively, "-" and "." read as "_"), adding it if absent.
 * A secret (PASSWORD, ACCESS_TOKEN...) with a _FILE suffix is read from that file. Lists are comma-separated.
 */
function applyEnv(tree: Tree, env: NodeJS.ProcessEnv): void {
  const sections = envTargets();
  for (const [name, raw] of Object.entries(env)) {
    if (!name.startsWith('RUAWATCH_') || raw === undefined) continue;
    const rest = name.slice('RUAWATCH_'.length).toLowerCase();
    // RUAWATCH_CONFIG names the file; RUAWATCH_DB and RUAWATCH_LISTEN are defaults, applied above.
    if (rest === 'config' || rest === 'db' || rest === 'listen') continue;
    if (rest.startsWith('mailbox_')) {
      applyMailboxEnv(tree, rest.slice('mailbox_'.length), raw, name);
      continue;
    }
    const target = sections.find((s) => rest.startsWith(`${s.prefix}_`) && s.keys.has(stripFile(rest.slice(s.prefix.length + 1))));
    if (!target) throw new RuawatchError('E_CONFIG', `${name}: no such setting`);
    const key = rest.slice(target.prefix.length + 1);
    let node = tree;
    for (const part of target.path) node = (node[part] ??= {}) as Tree;
    // A secret's _FILE variable stays a path here; resolveSecretFiles reads it like the TOML key.
    node[key] = key === stripFile(key) ? convert(raw, target.types.get(key)) : raw;
  }
}

function applyMailboxEnv(tree: Tree, rest: string, raw: string, name: string): void {
  const types = mailboxFieldTypes();
  const key = [...types.keys()]
    .filter((k) => k !== 'name')
    .sort((a, b) => b.length - a.length)
    .find((k) => rest.endsWith(`_${k}`) || (SECRET_KEYS.has(k) && rest.endsWith(`_${k}_file`)));
  if (!key) throw new RuawatchError('E_CONFIG', `${name}: no such mailbox setting`);
  const field = rest.endsWith(`_${key}_file`) ? `${key}_file` : key;
  const boxName = rest.slice(0, rest.length - field.length - 1);
  const list = (tree.mailbox ??= []) as Tree[];
  const norm = (s: string) => s.toLowerCase().replace(/[-.]/g, '_');
  let box = list.find((b) => typeof b.name === 'string' && norm(b.name) === boxName);
  if (!box) list.push((box = { name: boxName }));
  box[field] = field === key ? convert(raw, types.get(key)) : raw;
}

function stripFile(k: string): string {
  return k.endsWith('_file') && SECRET_KEYS.has(k.slice(0, -5)) ? k.slice(0, -5) : k;
}

function convert(raw: string, type: string | undefined): unknown {
  if (type === 'number') return Number(raw);
  if (type === 'boolean') return raw === 'true' || raw === '1' || raw === 'yes';
  if (type === 'array')
    return raw
      .split(',')
      .map((s) => s.trim())
      .filter(Boolean);
  return raw;
}

interface EnvTarget {
  prefix: string;
  path: string[];
  keys: Set<string>;
  types: Map<string, string>;
}

/** The object sections settable from the environment, read off the schema itself. */
function envTargets(): EnvTarget[] {
  const out: EnvTarget[] = [];
  const visit = (schema: unknown, path: string[]) => {
    const obj = unwrap(schema) as { shape?: Record<string, unknown> };
    if (!obj.shape) return;
    const keys = new Set<string>();
    const types = new Map<string, string>();
    for (const [k, v] of Object.entries(obj.shape)) {
      const inner = unwrap(v) as { shape?: unknown; _zod: { def: { type: string } } };
      if (inner.shape) visit(v, [...path, k]);
      else {
        keys.add(k);
        types.set(k, inner._zod.def.type);
      }
    }
    if (path.length && keys.size) out.push({ prefix: path.join('_'), path, keys, types });
  };
  visit(configSchema, []);
  // Longest prefix first, so alerts_email_host is not read as alerts + "email_host".
  return out.sort((a, b) => b.prefix.length - a.prefix.length);
}

/** A [[mailbox]] block's keys and their types, read off the schema. */
function mailboxFieldTypes(): Map<string, string> {
  const list = unwrap(configSchema.shape.mailbox) as { _zod: { def: { element: unknown } } };
  const box = unwrap(list._zod.def.element) as { shape: Record<string, unknown> };
  return new Map(Object.entries(box.shape).map(([k, v]) => [k, (unwrap(v) as { _zod: { def: { type: string } } })._zod.def.type]));
}

function unwrap(t: unknown): unknown {
  let cur = t as { _zod?: { def: { innerType?: unknown; type: string } } };
  while (cur._zod?.def.innerType) cur = cur._zod.def.innerType as typeof cur;
  return cur;
}
