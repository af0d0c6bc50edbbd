import { X509Certificate } from 'node:crypto';
import fs from 'node:fs';
import nodePath from 'node:path';
import { parse as parseToml } from 'smol-toml';
import { z } from 'zod';
import { RuawatchError, errorMessage } from '../errors.js';
import { LIMIT_NAMES, defaultLimits, limitSetting, type Limits } from '../unpack/limits.js';
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
  const where = path ? ` in ${path}` : '';
  const problems: string[] = [];
  resolveSecretFiles(tree, tree, [], problems);
  const parsed = configSchema.safeParse(tree);
  if (!parsed.success) problems.push(...formatIssues(parsed.error.issues, tree));
  problems.push(...checkCaFiles(tree));
  if (problems.length || !parsed.success) throw new RuawatchError('E_CONFIG', `invalid configuration${where}:\n${problems.join('\n')}`);
  return { config: parsed.data, source: path, databaseSet };
}

/**
 * Every ca_file can be read and holds PEM certificates, not all of them expired: TLS would
 * otherwise fail at the first connection, with a message about the server rather than the file.
 * The same for a mailbox's certificate_file (an app's certificate credential), which the identity
 * platform refuses once expired.
 */
function checkCaFiles(tree: Tree): string[] {
  const files: [string, unknown][] = [];
  const boxes = Array.isArray(tree.mailbox) ? (tree.mailbox as unknown[]) : [];
  for (const [i, b] of boxes.entries()) {
    for (const key of ['ca_file', 'certificate_file']) {
      const file = (b as Tree | null)?.[key];
      if (file !== undefined) files.push([keyPath(['mailbox', i, key], tree), file]);
    }
  }
  const email = ((tree.alerts as Tree | undefined)?.email as Tree | undefined)?.ca_file;
  if (email !== undefined) files.push(['alerts.email.ca_file', email]);
  const out: string[] = [];
  for (const [key, file] of files) {
    // Not a string: the schema says so.
    if (typeof file !== 'string' || file === '') continue;
    let text: string;
    try {
      text = fs.readFileSync(file, 'latin1');
    } catch (err) {
      out.push(`  ${key}: cannot read ${file}: ${errorMessage(err)}`);
      continue;
    }
    const pems = text.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
    if (pems.length === 0) {
      out.push(`  ${key}: ${file} holds no PEM certificate (-----BEGIN CERTIFICATE-----)`);
      continue;
    }
    const expired: string[] = [];
    for (const [i, pem] of pems.entries()) {
      const which = pems.length > 1 ? ` (certificate ${i + 1} of ${pems.length})` : '';
      try {
        const cert = new X509Certificate(pem);
        if (Date.parse(cert.validTo) < Date.now())
          expired.push(`${file}${which} expired on ${cert.validTo} (${cert.subject.replace(/\n/g, ', ')})`);
      } catch (err) {
        out.push(`  ${key}: ${file}${which} is not a valid certificate: ${errorMessage(err)}`);
      }
    }
    // A bundle with some old certificates in it still works; one with nothing valid cannot.
    if (expired.length === pems.length) out.push(...expired.map((e) => `  ${key}: ${e}`));
  }
  return out;
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

/** The caps as the unpacking and parsing code reads them, from the [limits] section. */
export function limitsOf(config: Config): Limits {
  const out: Limits = { ...defaultLimits };
  for (const k of LIMIT_NAMES) out[k] = config.limits[limitSetting(k)];
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

function formatIssues(issues: z.core.$ZodIssue[], tree: Tree): string[] {
  const lines: string[] = [];
  for (const issue of issues) {
    const at = keyPath(issue.path, tree);
    if (issue.code === 'unrecognized_keys') {
      for (const k of issue.keys) lines.push(`  ${at ? `${at}.` : ''}${k}: unknown key`);
    } else {
      lines.push(`  ${at || '(top level)'}: ${issue.message}`);
    }
  }
  return lines;
}

/**
 * A key's path as a person reads it: `alerts.email.port`, and a mailbox by its name
 * (`mailbox "dmarc".folder`), or by its place when it has no usable name (`mailbox #2.host`).
 */
export function keyPath(path: readonly PropertyKey[], tree: Tree): string {
  let out = '';
  let node: unknown = tree;
  for (const [i, p] of path.entries()) {
    const child = node && typeof node === 'object' ? (node as Record<PropertyKey, unknown>)[p] : undefined;
    if (typeof p === 'number') {
      const name = (child as Tree | undefined)?.name;
      const named = path[i - 1] === 'mailbox' && typeof name === 'string' && /^[\w.-]+$/.test(name);
      // Two mailboxes of one name (an error of its own) are told apart by their place.
      const twice = named && (node as Tree[]).filter((b) => b?.name === name).length > 1;
      out += named ? ` "${name}"${twice ? ` (#${p + 1})` : ''}` : ` #${p + 1}`;
    } else out += `${out ? '.' : ''}${String(p)}`;
    node = child;
  }
  return out;
}

/**
 * `password_file = "/run/secrets/x"` becomes `password = <file contents>`, for every secret key.
 * A trailing newline (as `echo` and most secret stores write) is dropped.
 */
const UNREAD = '(unread)';

function resolveSecretFiles(node: unknown, tree: Tree, at: PropertyKey[], problems: string[]): void {
  if (Array.isArray(node)) {
    node.forEach((n, i) => resolveSecretFiles(n, tree, [...at, i], problems));
    return;
  }
  if (!node || typeof node !== 'object') return;
  const obj = node as Tree;
  for (const key of Object.keys(obj)) {
    const base = key.endsWith('_file') ? key.slice(0, -5) : null;
    if (base && SECRET_KEYS.has(base)) {
      const where = keyPath([...at, key], tree);
      const file = obj[key];
      if (obj[base] !== undefined) problems.push(`  ${where}: set either ${base} or ${key}, not both`);
      else if (typeof file !== 'string') problems.push(`  ${where}: expected a file path`);
      else {
        try {
          obj[base] = fs.readFileSync(file, 'utf8').replace(/\r?\n$/, '');
        } catch (err) {
          problems.push(`  ${where}: cannot read ${file}: ${errorMessage(err)}`);
          // Reported here; the schema is not to call the secret missing as well.
          obj[base] = UNREAD;
        }
      }
      delete obj[key];
    } else {
      resolveSecretFiles(obj[key], tree, [...at, key], problems);
    }
  }
}

/**
 * Environment overrides. RUAWATCH_DATABASE_PATH sets [database] path; RUAWATCH_ALERTS_EMAIL_HOST
 * sets [alerts.email] host; RUAWATCH_MAILBOX_<NAME>_PASSWORD sets the password of the mailbox
 * named NAME (compared case-insensitively, "-" and "." read as "_"), adding it if absent.
 * A secret (PASSWORD, ACCESS_TOKEN...) with a _FILE suffix is read from that file. Lists are comma-separated.
 */
export function applyEnv(tree: Tree, env: NodeJS.ProcessEnv): void {
  const sections = envTargets();
  const fromEnv = new Map<Tree, Map<string, string>>();
  for (const [name, raw] of Object.entries(env)) {
    if (!name.startsWith('RUAWATCH_') || raw === undefined) continue;
    const rest = name.slice('RUAWATCH_'.length).toLowerCase();
    // RUAWATCH_CONFIG names the file; RUAWATCH_DB and RUAWATCH_LISTEN are defaults, applied above.
    if (rest === 'config' || rest === 'db' || rest === 'listen') continue;
    if (rest.startsWith('mailbox_')) {
      applyMailboxEnv(tree, rest.slice('mailbox_'.length), raw, name, fromEnv);
      continue;
    }
    const target = sections.find((s) => rest.startsWith(`${s.prefix}_`) && s.keys.has(stripFile(rest.slice(s.prefix.length + 1))));
    if (!target) throw new RuawatchError('E_CONFIG', `${name}: no such setting`);
    const key = rest.slice(target.prefix.length + 1);
    let node = tree;
    for (const part of target.path) node = (node[part] ??= {}) as Tree;
    // A secret's _FILE variable stays a path here; resolveSecretFiles reads it like the TOML key.
    setFromEnv(node, key, key === stripFile(key) ? convert(raw, target.types.get(key)) : raw, name, fromEnv);
  }
}

/**
 * Sets a key from the environment. A secret set there replaces the file's, in either form: the
 * file's `password_file` gives way to RUAWATCH_..._PASSWORD, as its `password` would. Both forms
 * set in the environment are refused.
 */
function setFromEnv(node: Tree, key: string, value: unknown, variable: string, fromEnv: Map<Tree, Map<string, string>>): void {
  const set = fromEnv.get(node) ?? new Map<string, string>();
  fromEnv.set(node, set);
  const base = stripFile(key);
  if (SECRET_KEYS.has(base)) {
    const other = key === base ? `${base}_file` : base;
    const clash = set.get(other);
    if (clash) throw new RuawatchError('E_CONFIG', `${variable} and ${clash} both set the same secret: set one of them`);
    delete node[other];
  }
  set.set(key, variable);
  node[key] = value;
}

function applyMailboxEnv(tree: Tree, rest: string, raw: string, name: string, fromEnv: Map<Tree, Map<string, string>>): void {
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
  setFromEnv(box, field, field === key ? convert(raw, types.get(key)) : raw, name, fromEnv);
}

function stripFile(k: string): string {
  return k.endsWith('_file') && SECRET_KEYS.has(k.slice(0, -5)) ? k.slice(0, -5) : k;
}

function convert(raw: string, type: EnvType | undefined): unknown {
  if (type === 'number') return Number(raw);
  if (type === 'boolean') return raw === 'true' || raw === '1' || raw === 'yes';
  if (type === 'array')
    return raw
      .split(',')
      .map((s) => s.trim())
      .filter(Boolean);
  return raw;
}

/** How a variable's text is read: a number, a boolean, a comma-separated list, or as it is. */
type EnvType = 'number' | 'boolean' | 'array' | 'string';

interface EnvTarget {
  prefix: string;
  path: string[];
  keys: Set<string>;
  types: Map<string, EnvType>;
}

/** A key's schema without what only makes it optional or gives it a default. */
function bare(schema: z.core.$ZodType): z.core.$ZodType {
  let t = schema;
  while (t instanceof z.ZodDefault || t instanceof z.ZodPrefault || t instanceof z.ZodOptional || t instanceof z.ZodNullable)
    t = t.unwrap();
  return t;
}

function envType(schema: z.core.$ZodType): EnvType {
  const t = bare(schema);
  if (t instanceof z.ZodNumber) return 'number';
  if (t instanceof z.ZodBoolean) return 'boolean';
  if (t instanceof z.ZodArray) return 'array';
  return 'string';
}

/** The object sections settable from the environment, read off the schema itself. */
function envTargets(): EnvTarget[] {
  const out: EnvTarget[] = [];
  const visit = (shape: Record<string, z.core.$ZodType>, path: string[]) => {
    const types = new Map<string, EnvType>();
    for (const [k, v] of Object.entries(shape)) {
      const inner = bare(v);
      if (inner instanceof z.ZodObject) visit(inner.shape, [...path, k]);
      else types.set(k, envType(inner));
    }
    if (path.length && types.size) out.push({ prefix: path.join('_'), path, keys: new Set(types.keys()), types });
  };
  visit(configSchema.shape, []);
  // Longest prefix first, so alerts_email_host is not read as alerts + "email_host".
  return out.sort((a, b) => b.prefix.length - a.prefix.length);
}

/** A [[mailbox]] block's keys and how each is read, off the schema. */
function mailboxFieldTypes(): Map<string, EnvType> {
  const box = configSchema.shape.mailbox.unwrap().element;
  return new Map(Object.entries(box.shape).map(([k, v]) => [k, envType(v)]));
}
