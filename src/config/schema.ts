import { validate as validCron } from 'node-cron';
import { z } from 'zod';
import { analysisSettingEntries, type AnalysisKey, type SettingSpec } from '../analyse/settings.js';
import { LIMIT_NAMES, defaultLimits, limitSetting, type LimitSetting } from '../unpack/limits.js';

/**
 * The one place a setting exists. Every section is strict: a misspelt key is an error naming its
 * full path, not a silently ignored setting. Secrets (`password`, `access_token`, ...) may instead
 * be given as `<key>_file`, read at load time (see load.ts).
 */

const hostPort = z
  .string()
  .regex(/^(\[[0-9a-fA-F:.]+\]|[^:\s]+):\d{1,5}$/, 'expected host:port, e.g. "127.0.0.1:8080"')
  .refine((v) => Number(v.slice(v.lastIndexOf(':') + 1)) <= 65535, 'the port is at most 65535');

/** Hosts a secret may be sent to in clear: this machine only. */
export function isLoopback(host: string): boolean {
  return /^(localhost|127(\.\d{1,3}){3}|::1|\[::1\])$/i.test(host);
}

/** An http:// URL sends its token in clear: only to this machine. */
function clearOnlyLocally(url: string | undefined): boolean {
  if (url === undefined) return true;
  const u = URL.parse(url);
  return !u || u.protocol !== 'http:' || isLoopback(u.hostname);
}
/**
 * A well-known port used with the other kind of security, which fails at the first connection
 * with an unhelpful TLS error ("wrong version number") or a timeout. Implicit TLS ports and plain
 * (STARTTLS) ports as RFC 8314 section 7.3 and the IANA registry assign them.
 */
function portClash(
  proto: string,
  security: 'tls' | 'starttls' | 'none',
  port: number | undefined,
  ports: { tls: number[]; plain: number[] },
): string | null {
  if (port === undefined) return null;
  if (security === 'tls' && ports.plain.includes(port)) {
    return `${port} is ${proto} without implicit TLS: set security = "starttls", or the implicit TLS port ${ports.tls[0]} with security = "tls"`;
  }
  if (security !== 'tls' && ports.tls.includes(port)) {
    return `${port} is ${proto} over implicit TLS: set security = "tls" (security = "${security}" expects a plain connection there)`;
  }
  return null;
}

const CLEAR = 'sends the token in clear over http://: use https://, or http:// only to 127.0.0.1, ::1 or localhost';
const security = z.enum(['tls', 'starttls', 'none']);
const positive = z.number().int().positive();

/** An https URL, or an http one to a loopback address (a stand-in, a local proxy): tokens never travel in clear. */
const secureUrl = z.url().refine((u) => {
  const url = new URL(u);
  return url.protocol === 'https:' || (url.protocol === 'http:' && isLoopback(url.hostname));
}, 'expected an https URL (http only to a loopback address)');

export const MAILBOX_KINDS = ['imap', 'graph'] as const;
export const AUTH_MODES = ['password', 'microsoft', 'google', 'command', 'file'] as const;
export type AuthMode = (typeof AUTH_MODES)[number];

/** The keys each way of logging in uses; any other of them set is an error (a forgotten leftover). */
const AUTH_KEYS: Record<AuthMode, string[]> = {
  password: ['password'],
  microsoft: ['tenant_id', 'client_id', 'client_secret', 'certificate_file', 'private_key', 'token_url', 'scope'],
  google: ['service_account_key', 'token_url', 'scope'],
  command: ['token_command'],
  file: ['token_path'],
};
const ALL_AUTH_KEYS = [...new Set(Object.values(AUTH_KEYS).flat())];

const mailbox = z
  .strictObject({
    name: z.string().regex(/^[A-Za-z0-9_.-]+$/, 'letters, digits, ".", "_" and "-" only'),
    // "imap" (any IMAP server) or "graph" (Microsoft 365 through Microsoft Graph, sources/graph.ts).
    kind: z.enum(MAILBOX_KINDS).default('imap'),
    host: z.string().min(1).optional(),
    port: z.number().int().min(1).max(65535).optional(),
    security: security.default('tls'),
    // The login (IMAP), or the mailbox read (Graph: its user principal name or id; Google: the user impersonated).
    user: z.string().min(1),
    // How the mailbox is logged in to; unset: "password" for IMAP, "microsoft" for Graph (see authOf).
    auth: z.enum(AUTH_MODES).optional(),
    password: z.string().min(1).optional(),
    // auth = "microsoft": the client-credentials grant of the Microsoft identity platform (src/auth/).
    tenant_id: z
      .string()
      .regex(/^[A-Za-z0-9.-]+$/, 'the directory (tenant) id, a GUID or a domain such as "contoso.onmicrosoft.com"')
      .optional(),
    client_id: z.string().min(1).optional(),
    client_secret: z.string().min(1).optional(),
    certificate_file: z.string().min(1).optional(),
    private_key: z.string().min(1).optional(),
    // auth = "google": the JSON key of a service account with domain-wide delegation.
    service_account_key: z.string().min(1).optional(),
    token_url: secureUrl.optional(),
    scope: z.string().min(1).optional(),
    // auth = "command": a program (no shell) that prints a token; auth = "file": a file that holds one.
    token_command: z.array(z.string().min(1)).min(1).optional(),
    token_path: z.string().min(1).optional(),
    // kind = "graph": the Microsoft Graph endpoint (national clouds have their own).
    graph_url: secureUrl.optional(),
    folder: z.string().min(1).default('INBOX'),
    processed_folder: z.string().min(1).default('Processed'),
    invalid_folder: z.string().min(1).default('Invalid'),
    ca_file: z.string().min(1).optional(),
    mark_seen_only: z.boolean().default(false),
    // A connection, greeting or command with no answer for this long: the server is taken as hung.
    timeout_seconds: positive.default(60),
  })
  .superRefine((box, ctx) => {
    const issue = (path: string, message: string) => ctx.addIssue({ code: 'custom', path: [path], message });
    const auth = authOf(box);
    const has = (k: string) => (box as Record<string, unknown>)[k] !== undefined;
    if (box.kind === 'imap') {
      if (!has('host')) issue('host', 'required for kind = "imap"');
      if (has('graph_url')) issue('graph_url', 'used only with kind = "graph"');
      if (box.security === 'none' && box.host !== undefined && !isLoopback(box.host)) {
        issue('security', `"none" sends the password in clear: allowed only for 127.0.0.1, ::1 or localhost, not ${box.host}`);
      }
      const clash = portClash('IMAP', box.security, box.port, { tls: [993], plain: [143] });
      if (clash) issue('port', clash);
    } else {
      for (const k of ['host', 'port', 'ca_file'])
        if (has(k)) issue(k, 'used only with kind = "imap"; a graph mailbox is reached at graph_url');
      if (auth === 'password' || auth === 'google')
        issue('auth', `kind = "graph" logs in with auth = "microsoft", "command" or "file", not "${auth}"`);
    }
    for (const k of ALL_AUTH_KEYS) {
      if (has(k) && !AUTH_KEYS[auth].includes(k))
        issue(k, `used only with auth = "${AUTH_MODES.find((m) => AUTH_KEYS[m].includes(k))}" (this mailbox has auth = "${auth}")`);
    }
    if (!box.mark_seen_only) {
      for (const key of ['processed_folder', 'invalid_folder'] as const) {
        if (box[key] === box.folder) issue(key, `is the folder read (${box.folder}): messages would be read again and again`);
      }
    }
    switch (auth) {
      case 'password':
        if (!has('password')) issue('password', 'required (or password_file), unless auth names another way to log in');
        break;
      case 'microsoft':
        if (!has('tenant_id')) issue('tenant_id', 'required with auth = "microsoft"');
        if (!has('client_id')) issue('client_id', 'required with auth = "microsoft"');
        if (has('client_secret') === has('certificate_file'))
          issue('client_secret', 'set client_secret (or client_secret_file), or certificate_file with private_key_file, not both');
        if (has('certificate_file') !== has('private_key'))
          issue('private_key', 'certificate_file and private_key (or private_key_file) go together');
        break;
      case 'google':
        if (!has('service_account_key'))
          issue('service_account_key', 'required with auth = "google" (service_account_key_file: the JSON key)');
        break;
      case 'command':
        if (!has('token_command')) issue('token_command', 'required with auth = "command"');
        break;
      case 'file':
        if (!has('token_path')) issue('token_path', 'required with auth = "file"');
        break;
    }
  });

export type MailboxConfig = z.infer<typeof mailbox>;

/** How a mailbox logs in: as configured, else "password" for IMAP and "microsoft" for Graph. */
export function authOf(box: { kind: (typeof MAILBOX_KINDS)[number]; auth?: AuthMode | undefined }): AuthMode {
  return box.auth ?? (box.kind === 'graph' ? 'microsoft' : 'password');
}

const email = z
  .strictObject({
    host: z.string().min(1),
    port: z.number().int().min(1).max(65535).default(587),
    security: security.default('starttls'),
    user: z.string().min(1).optional(),
    password: z.string().min(1).optional(),
    ca_file: z.string().min(1).optional(),
    from: z.string().min(3),
    to: z.array(z.string().min(3)).min(1),
  })
  .superRefine((e, ctx) => {
    const clash = portClash('SMTP', e.security, e.port, { tls: [465], plain: [25, 587] });
    if (clash) ctx.addIssue({ code: 'custom', path: ['port'], message: clash });
    if (e.security === 'none' && e.user !== undefined && !isLoopback(e.host)) {
      ctx.addIssue({
        code: 'custom',
        path: ['security'],
        message: `"none" with a user sends the password in clear: allowed only for 127.0.0.1, ::1 or localhost, not ${e.host}`,
      });
    }
  });

const matrix = z.strictObject({
  homeserver: z.url().refine(clearOnlyLocally, CLEAR),
  access_token: z.string().min(1),
  room_id: z.string().regex(/^!.+:.+$/, 'a room id like "!abc:example.com"'),
});

const discord = z
  .strictObject({
    webhook_url: z
      .url()
      .regex(/\/webhooks\/\d+\/[\w-]+\/?$/, 'expected a webhook URL ending in /webhooks/<id>/<token>')
      .refine(clearOnlyLocally, CLEAR)
      .optional(),
    bot_token: z.string().min(1).optional(),
    channel_id: z.string().regex(/^\d+$/).optional(),
    api_url: z.url().refine(clearOnlyLocally, CLEAR).optional(),
  })
  .refine((d) => d.webhook_url !== undefined || (d.bot_token !== undefined && d.channel_id !== undefined), {
    message: 'set webhook_url, or bot_token together with channel_id',
  });

const cron = z
  .string()
  .min(1)
  .refine((v) => validCron(v), 'not a cron expression (five fields, or six with seconds)');

function validZone(zone: string): boolean {
  try {
    new Intl.DateTimeFormat('en-US', { timeZone: zone });
    return true;
  } catch {
    return false;
  }
}
const percent = z.number().min(0).max(100);

/** A threshold of the drift rules as the table in analyse/settings.ts states it. */
function threshold(spec: SettingSpec) {
  return (spec.unit === 'percent' ? percent : positive).default(spec.default).describe(spec.doc);
}
// The thresholds of the drift rules (analyse/settings.ts states each; docs/findings.md explains
// them), and beside them reverse_dns, which is not a rule's threshold.
const analysis = z.strictObject({
  ...(Object.fromEntries(analysisSettingEntries.map(([, spec]) => [spec.key, threshold(spec)])) as Record<
    AnalysisKey,
    ReturnType<typeof threshold>
  >),
  reverse_dns: z.boolean().default(true),
});
const limits = z.strictObject(
  Object.fromEntries(LIMIT_NAMES.map((k) => [limitSetting(k), positive.default(defaultLimits[k])])) as Record<
    LimitSetting,
    z.ZodDefault<z.ZodNumber>
  >,
);

export const configSchema = z.strictObject({
  database: z.strictObject({ path: z.string().min(1).default('./data/ruawatch.sqlite') }).prefault({}),
  mailbox: z
    .array(mailbox)
    .default([])
    .superRefine((boxes, ctx) => {
      // A mailbox's name keys its positions in the database and its environment variables.
      const seen = new Set<string>();
      for (const [i, b] of boxes.entries()) {
        const key = b.name.toLowerCase().replace(/[-.]/g, '_');
        if (seen.has(key)) ctx.addIssue({ code: 'custom', path: [i, 'name'], message: `another [[mailbox]] is named ${b.name} already` });
        seen.add(key);
      }
    }),
  analysis: analysis.prefault({}),
  alerts: z
    .strictObject({
      // 0: no reminders on a timer; an open alert is sent again only when it gets worse.
      renotify_hours: z.number().min(0).default(0),
      digest: z.enum(['off', 'daily', 'weekly']).default('off'),
      email: email.optional(),
      matrix: matrix.optional(),
      discord: discord.optional(),
    })
    .prefault({}),
  schedule: z
    .strictObject({
      poll: cron.default('*/15 * * * *'),
      digest: cron.default('0 7 * * *'),
      timezone: z.string().min(1).refine(validZone, 'an IANA time zone such as "UTC" or "Europe/Berlin"').default('UTC'),
      retry_seconds: positive.default(30),
      idle: z.boolean().default(false),
      // A pass over the mailboxes (a poll of `run`, or `fetch`) stops at this deadline; 0 = none.
      poll_timeout_seconds: z.number().int().min(0).default(600),
      // When `ruawatch run` applies [retention] (store/prune.ts).
      prune: cron.default('30 3 * * *'),
    })
    .prefault({}),
  // How long per-record rows are kept; reports' metadata, their hashes and the daily rollups stay.
  // 0 keeps them for ever. docs/configuration.md "Retention" explains the defaults.
  retention: z
    .strictObject({
      records_days: z.number().int().min(0).default(400),
      failure_reports_days: z.number().int().min(0).default(30),
    })
    .prefault({}),
  web: z
    .strictObject({
      listen: hostPort.default('127.0.0.1:8080'),
      user: z.string().min(1).optional(),
      password: z.string().min(1).optional(),
      token: z.string().min(1).optional(),
      // Without credentials, requests must name the server by an address or localhost in Host;
      // other names (a reverse proxy's) only when listed here. Guards against DNS rebinding.
      allowed_hosts: z.array(z.string().regex(/^[A-Za-z0-9.-]+$/, 'a host name, without port or scheme')).default([]),
    })
    .refine((w) => (w.user === undefined) === (w.password === undefined), { message: 'set user and password together' })
    .prefault({}),
  limits: limits.prefault({}),
  // Worker threads that unpack, parse and store in parallel; 0 = chosen by core count (pool.ts autoWorkers).
  ingest: z.strictObject({ workers: z.number().int().min(0).max(64).default(0) }).prefault({}),
  // Who is sending (src/enrich): network, country and known service of source IPs, from data on disk.
  enrich: z
    .strictObject({
      enabled: z.boolean().default(true),
      // Empty: the data bundled with ruawatch. Each file CSV, MaxMind DB or compiled, told apart by content.
      asn_files: z.array(z.string().min(1)).default([]),
      country_files: z.array(z.string().min(1)).default([]),
      // Services of the user's own, added to or replacing the bundled map (TOML or JSON).
      services_file: z.string().min(1).optional(),
      known_services: z.boolean().default(true),
    })
    .prefault({}),
  // Unset: one-shot commands log warnings and errors only, `ruawatch run` logs info.
  log: z.strictObject({ level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).optional() }).prefault({}),
});

export type Config = z.infer<typeof configSchema>;
/** The channels' sections as the schema gives them (defaults applied): what each channel is built from. */
export type EmailConfig = z.infer<typeof email>;
export type MatrixConfig = z.infer<typeof matrix>;
export type DiscordConfig = z.infer<typeof discord>;

export { SECRET_KEYS } from '../log.js';
