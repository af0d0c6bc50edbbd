import { validate as validCron } from 'node-cron';
import { z } from 'zod';
import { defaultLimits, limitSetting, type Limits } from '../unpack/limits.js';

/**
 * The one place a setting exists. Every section is strict: a misspelt key is an error naming its
 * full path, not a silently ignored setting. Secrets (`password`, `access_token`, ...) may instead
 * be given as `<key>_file`, read at load time (see load.ts).
 */

const hostPort = z.string().regex(/^(\[[0-9a-fA-F:.]+\]|[^:\s]+):\d{1,5}$/, 'expected host:port, e.g. "127.0.0.1:8080"');
const security = z.enum(['tls', 'starttls', 'none']);
const positive = z.number().int().positive();

const mailbox = z.strictObject({
  name: z.string().regex(/^[A-Za-z0-9_.-]+$/, 'letters, digits, ".", "_" and "-" only'),
  host: z.string().min(1),
  port: z.number().int().min(1).max(65535).optional(),
  security: security.default('tls'),
  user: z.string().min(1),
  password: z.string().min(1),
  folder: z.string().min(1).default('INBOX'),
  processed_folder: z.string().min(1).default('Processed'),
  invalid_folder: z.string().min(1).default('Invalid'),
  ca_file: z.string().min(1).optional(),
  mark_seen_only: z.boolean().default(false),
  // A connection, greeting or command with no answer for this long: the server is taken as hung.
  timeout_seconds: positive.default(60),
});

const email = z.strictObject({
  host: z.string().min(1),
  port: z.number().int().min(1).max(65535).default(587),
  security: security.default('starttls'),
  user: z.string().min(1).optional(),
  password: z.string().min(1).optional(),
  ca_file: z.string().min(1).optional(),
  from: z.string().min(3),
  to: z.array(z.string().min(3)).min(1),
});

const matrix = z.strictObject({
  homeserver: z.url(),
  access_token: z.string().min(1),
  room_id: z.string().regex(/^!.+:.+$/, 'a room id like "!abc:example.com"'),
});

const discord = z
  .strictObject({
    webhook_url: z
      .url()
      .regex(/\/webhooks\/\d+\/[\w-]+\/?$/, 'expected a webhook URL ending in /webhooks/<id>/<token>')
      .optional(),
    bot_token: z.string().min(1).optional(),
    channel_id: z.string().regex(/^\d+$/).optional(),
    api_url: z.url().optional(),
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

// Thresholds of the drift rules (analyse/rules.ts); docs/findings.md explains each.
const analysis = z.strictObject({
  recent_days: positive.default(7),
  baseline_days: positive.default(28),
  latest_days: positive.default(2),
  drop_min_messages: positive.default(50),
  drop_min_baseline_pass_rate: percent.default(90),
  drop_points: percent.default(20),
  new_source_min_messages: positive.default(20),
  new_source_max_pass_rate: percent.default(50),
  new_source_max_findings: positive.default(10),
  dkim_min_signatures: positive.default(20),
  dkim_min_baseline_pass_rate: percent.default(90),
  dkim_max_pass_rate: percent.default(50),
  tls_min_failed_sessions: positive.default(10),
  tls_min_failure_rate: percent.default(5),
  silent_days: positive.default(3),
  silent_active_share: percent.default(75),
  reverse_dns: z.boolean().default(true),
});
const limits = z.strictObject(
  Object.fromEntries(Object.entries(defaultLimits).map(([k, v]) => [limitSetting(k as keyof Limits), positive.default(v)])) as Record<
    string,
    z.ZodDefault<z.ZodNumber>
  >,
);

export const configSchema = z.strictObject({
  database: z.strictObject({ path: z.string().min(1).default('./data/ruawatch.sqlite') }).prefault({}),
  mailbox: z.array(mailbox).default([]),
  analysis: analysis.prefault({}),
  alerts: z
    .strictObject({
      renotify_hours: z.number().positive().default(24),
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

/** Keys whose values are never printed or logged. */
export const SECRET_KEYS = new Set(['password', 'access_token', 'webhook_url', 'bot_token', 'token']);
