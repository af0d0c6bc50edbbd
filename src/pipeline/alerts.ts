import dns from 'node:dns';
import { CLOSES_SILENTLY, DAY, lastDays, mentionedIn, settingsFrom, type AnalysisSettings, type Finding } from '../analyse/index.js';
import type { Config } from '../config/schema.js';
import { errorMessage } from '../errors.js';
import type { Logger } from '../log.js';
import { DiscordChannel } from '../notify/discord.js';
import { EmailChannel } from '../notify/email.js';
import { MatrixChannel } from '../notify/matrix.js';
import { deliverOne } from '../notify/deliver.js';
import { alertRenderer, renderDigest, type DigestData } from '../notify/render.js';
import { defaultRetry, defaultSleep, type Channel, type ChannelName, type RetryPolicy } from '../notify/types.js';
import { AlertStore, openAlertsForRules, type PendingNotification } from '../store/alerts.js';
import { leaseHolder } from '../store/leases.js';
import { evaluateRulesInTurns } from '../store/analysis.js';
import type { Db } from '../store/db.js';
import { settleRollups } from '../store/rollups.js';
import { reportTotals } from '../store/summary.js';
import type { Enricher } from '../enrich/index.js';
import { enrichDigest, enrichEvaluation, labelFindings } from './senders.js';

/** The thresholds the rules read, from the config's [analysis] section (analyse/settings.ts maps one to the other). */
export function settingsOf(config: Config): AnalysisSettings {
  return settingsFrom(config.analysis);
}

/** The channels configured under [alerts], in a fixed order. */
export function channelsOf(config: Config, retry: RetryPolicy = defaultRetry): Channel[] {
  const out: Channel[] = [];
  if (config.alerts.email) out.push(new EmailChannel(config.alerts.email, retry.timeoutMs));
  if (config.alerts.matrix) out.push(new MatrixChannel(config.alerts.matrix, retry.timeoutMs));
  if (config.alerts.discord) out.push(new DiscordChannel(config.alerts.discord, retry.maxWaitMs, retry.timeoutMs));
  return out;
}

export type ReverseLookup = (ip: string) => Promise<string | null>;

/** PTR lookup through the system's resolvers, one try with a 2 s timeout. */
export function systemReverseLookup(): ReverseLookup {
  const resolver = new dns.promises.Resolver({ timeout: 2000, tries: 1 });
  return async (ip) => {
    try {
      const names = await resolver.reverse(ip);
      return names[0]?.replace(/\.$/, '').toLowerCase() ?? null;
    } catch (err) {
      const code = (err as { code?: string }).code;
      if (code === dns.NOTFOUND || code === dns.NODATA) return null;
      throw err;
    }
  };
}

const NAME_TTL = { found: 7 * 86_400, missing: 86_400 };

/**
 * Names for the IPs that findings mention, from the cache or looked up once and cached (unless
 * `readOnly`: a dry run looks names up but writes nothing).
 */
async function namesFor(
  store: AlertStore,
  findings: Finding[],
  lookup: ReverseLookup,
  now: number,
  log: Logger,
  readOnly: boolean,
): Promise<Map<string, string>> {
  // The addresses the messages mention (each finding's source among them).
  const ips = mentionedIn(findings);
  for (const f of findings) if (f.source_ip) ips.add(f.source_ip);
  const names = new Map<string, string>();
  for (const ip of ips) {
    const cached = store.cachedName(ip, now, NAME_TTL);
    let name = cached.name;
    if (!cached.hit) {
      try {
        name = await lookup(ip);
        if (!readOnly) store.cacheName(ip, name, now);
      } catch (err) {
        // A resolver that is down is not "no name": nothing is cached, the next run asks again.
        log.warn({ ip, err: errorMessage(err) }, 'reverse DNS lookup failed');
      }
    }
    if (name) names.set(ip, name);
  }
  return names;
}

export interface AlertRunOptions {
  now: number;
  dryRun: boolean;
  channels: Channel[];
  /** null: reverse DNS switched off. */
  lookup: ReverseLookup | null;
  /** Who is sending (App.enricher()); null or absent: enrichment off. */
  enricher?: Enricher | null;
  retry?: RetryPolicy;
  sleep?: (ms: number) => Promise<void>;
  log: Logger;
}

export interface DeliveryReport {
  sent: number;
  /**
   * Messages not delivered this run: `kept` ones stay queued for the next run, `parked` ones were
   * refused for good (or sent as often as is safe without an answer) and left aside.
   */
  failed: { channel: ChannelName; event: string; error: string; outcome: 'kept' | 'parked' }[];
  /** Still undelivered after this run, to be tried on the next (parked messages not counted). */
  pending: number;
}

export interface AlertRun {
  findings: Finding[];
  opened: string[];
  reminded: string[];
  resolved: string[];
  deliveries: DeliveryReport;
}

/**
 * One evaluation: run the rules over the daily rollups one policy domain at a time, name the
 * addresses the findings mention (reverse DNS, who is sending), update the alert state and
 * deliver what it queued, plus anything an earlier run could not deliver. With dryRun the alert
 * state and the notification queue are left alone, and so is the reverse DNS cache: a dry run
 * writes nothing.
 */
export async function runAlerts(db: Db, config: Config, opts: AlertRunOptions): Promise<AlertRun> {
  const settings = settingsOf(config);
  // Reports stored but not yet in the rollups (a run cut short) are added first; a dry run
  // writes nothing, and judges what is in them.
  if (!opts.dryRun) settleRollups(db);
  const store = new AlertStore(db);
  // Open alerts are judged against their frozen baselines (a dry run reads them too).
  const open = openAlertsForRules(store.openAlerts());
  // With enrichment on, the rules ask who a source is where the answer could change a finding,
  // and the facts of the sources the findings mention are kept for their messages.
  const e = opts.enricher ? enrichEvaluation(opts.enricher) : null;
  const findings = await evaluateRulesInTurns(db, opts.now, settings, {
    open,
    unnamed: true,
    ...(e ? { prepare: e.prepare, examine: e.examine } : {}),
  });
  // Then the names of the addresses they mention, and the messages written with them.
  const names = opts.lookup && findings.length ? await namesFor(store, findings, opts.lookup, opts.now, opts.log, opts.dryRun) : null;
  labelFindings(findings, names, e?.facts ?? null);
  const run: AlertRun = { findings, opened: [], reminded: [], resolved: [], deliveries: { sent: 0, failed: [], pending: 0 } };
  if (opts.dryRun) return run;

  const r = store.reconcile(findings, opts.now, {
    renotifySeconds: config.alerts.renotify_hours * 3600,
    channels: opts.channels.map((c) => c.name),
    silent: CLOSES_SILENTLY,
    render: alertRenderer,
  });
  run.opened = r.opened.map((f) => f.key);
  run.reminded = r.reminded.map((f) => f.key);
  run.resolved = r.resolved.map((a) => a.key);
  opts.log.info(
    { opened: run.opened.length, reminded: run.reminded.length, resolved: run.resolved.length, queued: r.queued },
    'alerts evaluated',
  );
  run.deliveries = await deliverPending(store, opts.channels, opts);
  return run;
}

/**
 * Sends every undelivered notification, channel by channel in parallel, each channel in the order
 * queued, by the rules in notify/deliver.ts. A message refused for good is parked, a fallback
 * notice is queued right after it, and the channel goes on. A channel stops for this run at a
 * message that still fails after the retries, or at a failure that would meet every message (so
 * it does not hammer a dead endpoint or reorder), and never holds up the others.
 */
export async function deliverPending(
  store: AlertStore,
  channels: Channel[],
  opts: { retry?: RetryPolicy | undefined; sleep?: ((ms: number) => Promise<void>) | undefined; log: Logger },
): Promise<DeliveryReport> {
  const report: DeliveryReport = { sent: 0, failed: [], pending: 0 };
  await Promise.all(
    channels.map((channel) =>
      oneAtATime(channel, async () => {
        // Another process delivering this channel (a `ruawatch alerts` beside `run`) has its queue:
        // its messages wait for it, or for the next run.
        const holder = leaseHolder(commandName());
        const lease = store.takeChannel(channel.name, holder);
        if (!lease.held) {
          const waiting = store.pending(channel.name).length;
          report.pending += waiting;
          opts.log.info(
            { channel: channel.name, waiting, pid: lease.by.pid, host: lease.by.host, command: lease.by.command },
            'another process is delivering this channel; its messages are left to it',
          );
          return;
        }
        try {
          await deliverChannel(store, channel, holder.id, report, opts);
        } finally {
          store.releaseChannel(channel.name, holder.id);
        }
      }),
    ),
  );
  return report;
}

/**
 * deliverPending's work on one channel, holding its lease.
 *
 * A message that fails again after failing in an earlier run (an SMTP 4xx, a 5xx, a timeout)
 * may be the only one the channel will not take: a content filter that answers "451 try again
 * later" to what a report made it say would otherwise hold every later message behind it for
 * good. So it is set aside and the next message is tried once. If the channel takes that one, the
 * set-aside message gets one more try, and if it fails again it is parked as deferred (with a
 * notice in its place), like a refused one; if the next one fails too, the endpoint is in trouble
 * and everything stays queued, in order. Greylisting and rate limits defer every message alike,
 * so they park nothing.
 */
async function deliverChannel(
  store: AlertStore,
  channel: Channel,
  holderId: string,
  report: DeliveryReport,
  opts: { retry?: RetryPolicy | undefined; sleep?: ((ms: number) => Promise<void>) | undefined; log: Logger },
): Promise<void> {
  const clock = () => Math.floor(Date.now() / 1000);
  const policy = opts.retry ?? defaultRetry;
  const send = (n: PendingNotification, p: RetryPolicy) =>
    deliverOne(channel, n, p, {
      now: () => Date.now(),
      sleep: opts.sleep ?? defaultSleep,
      onUnanswered: (at) => store.noteUnanswered(n.id, at),
    });
  const queue = store.pending(channel.name);
  /** The message set aside while the next one is tried, with how it failed. */
  type Aside = { n: PendingNotification; error: string; status: string | null };
  let aside: Aside | null = null;
  const keptAside = () => {
    if (!aside) return 0;
    report.failed.push({ channel: channel.name, event: aside.n.event, error: aside.error, outcome: 'kept' });
    return 1;
  };
  /**
   * The set-aside message's one more try, once the channel took the message after it (at `i`):
   * delivered, or parked as deferred with a notice after `i`; true when it was refused as every
   * message would be, and the channel stops.
   */
  const lastTry = async (a: Aside, i: number): Promise<boolean> => {
    const again = await send(a.n, { ...policy, attempts: 1 });
    if (again.result === 'delivered') {
      store.markDelivered(a.n.id, again.attempts, clock());
      report.sent++;
      return false;
    }
    if (again.result === 'kept' && again.held) {
      // Refused now as every message would be (the credentials changed under us): hold, as below.
      store.markFailed(a.n.id, again.attempts, again.error, clock());
      store.channelFailed(channel.name, again.error, true, clock());
      report.failed.push({ channel: channel.name, event: a.n.event, error: again.error, outcome: 'kept' });
      report.pending += queue.length - i;
      return true;
    }
    const reason =
      again.result === 'parked' ? again.reason : `deferred: ${again.error}; failed in two runs while the channel took other messages`;
    store.park(a.n.id, again.attempts, reason, clock());
    report.failed.push({ channel: channel.name, event: a.n.event, error: reason, outcome: 'parked' });
    opts.log.info({ channel: channel.name, event: a.n.event, notification: a.n.id, reason }, 'notification parked; the channel goes on');
    // A notice in its place, as for a refused message (none for one parked as unconfirmed).
    const refused = again.result === 'parked' && again.refused;
    if (a.n.fallback_for === null && (again.result === 'kept' || refused)) {
      const status = again.status ?? a.status;
      queue.splice(i + 1, 0, store.enqueueFallback(a.n, status, clock(), alertRenderer, refused ? 'refused' : 'deferred'));
    }
    return false;
  };
  for (let i = 0; i < queue.length; i++) {
    // The lease went stale during a long send and another process took the queue over.
    if (i > 0 && !store.renewChannel(channel.name, holderId)) {
      report.pending += queue.length - i + keptAside();
      opts.log.warn({ channel: channel.name }, 'channel delivery taken over by another process');
      return;
    }
    const n = queue[i]!;
    // The message after one set aside is tried once: it only has to show whether the channel takes others.
    const o = await send(n, aside ? { ...policy, attempts: 1 } : policy);
    const log = { channel: channel.name, event: n.event, notification: n.id, attempts: o.attempts };
    if (o.result === 'delivered') {
      store.markDelivered(n.id, o.attempts, clock());
      store.channelDelivered(channel.name, clock());
      report.sent++;
      if (aside) {
        const a = aside;
        aside = null;
        if (await lastTry(a, i)) return;
      }
      continue;
    }
    if (o.result === 'parked') {
      store.park(n.id, o.attempts, o.reason, clock());
      report.failed.push({ channel: channel.name, event: n.event, error: o.reason, outcome: 'parked' });
      // Info: the caller reports every undelivered message (alerts and digest in their
      // output, run in a warning after the poll or the digest).
      opts.log.info({ ...log, reason: o.reason }, 'notification parked; the channel goes on');
      // A notice stands for a refused message, sent next; a refused notice stands for itself.
      if (o.refused && n.fallback_for === null) queue.splice(i + 1, 0, store.enqueueFallback(n, o.status, clock(), alertRenderer));
      // Unanswered as often as is safe, in this very run: the endpoint is in trouble.
      if (!o.refused && o.attempts > 0) {
        store.channelFailed(channel.name, o.reason, false, clock());
        report.pending += queue.length - i - 1 + keptAside();
        return;
      }
      continue;
    }
    store.markFailed(n.id, o.attempts, o.error, clock());
    if (!o.held && !aside && n.attempts > 0 && i + 1 < queue.length) {
      // Failed in an earlier run as well: see whether the channel takes the next message.
      aside = { n, error: o.error, status: o.status };
      opts.log.info({ ...log, err: o.error }, 'notification failed again; trying the next one to see whether the channel takes others');
      continue;
    }
    store.channelFailed(channel.name, o.error, o.held, clock());
    report.failed.push({ channel: channel.name, event: n.event, error: o.error, outcome: 'kept' });
    report.pending += queue.length - i + keptAside();
    opts.log.info(
      { ...log, held: o.held, err: o.error },
      o.held ? 'channel refuses every message; held until the next run' : 'notification not delivered; will retry next run',
    );
    return;
  }
  // The set-aside message was the last one tried (the one after it was parked, so it showed nothing).
  if (aside) {
    store.channelFailed(channel.name, aside.error, false, clock());
    report.pending += keptAside();
  }
}

/** The command this process runs ("run", "alerts", "digest"...), recorded with a lease it takes. */
function commandName(): string {
  const arg = process.argv[2];
  return arg && /^[a-z-]{2,20}$/.test(arg) ? arg : 'ruawatch';
}

const busy = new WeakMap<Channel, Promise<void>>();

/**
 * Runs deliveries on one channel one after the other: in `ruawatch run` the digest's schedule and
 * a poll's alerts can meet, and two passes reading the same queue would each send its messages.
 */
async function oneAtATime(channel: Channel, task: () => Promise<void>): Promise<void> {
  const before = busy.get(channel) ?? Promise.resolve();
  const mine = before.then(task, task);
  busy.set(
    channel,
    mine.catch(() => {}),
  );
  return mine;
}

/** The digest's period as of `now`: the last whole UTC day, or the last seven (lastDays). */
export function digestPeriod(period: 'daily' | 'weekly', now: number): { from: number; to: number } {
  const w = lastDays(now, period === 'daily' ? 1 : 7);
  return { from: w.from * DAY, to: w.to * DAY };
}

export function buildDigest(db: Db, period: 'daily' | 'weekly', now: number, enricher: Enricher | null = null): DigestData {
  const { from, to } = digestPeriod(period, now);
  const current = reportTotals(db, { since: from, until: to });
  const previous = reportTotals(db, { since: from - (to - from), until: from });
  const before = new Map(previous.domains.map((d) => [d.domain, d.pass_rate]));
  const store = new AlertStore(db);
  const nameOf = (ip: string) => store.cachedName(ip, now, { found: Infinity, missing: Infinity }).name;
  const domains = current.domains.map((d) => ({
    domain: d.domain,
    messages: d.messages,
    pass_rate: d.pass_rate,
    previous_pass_rate: before.get(d.domain) ?? null,
    reports: d.reports,
    failing: d.sources
      .map((s) => ({ ip: s.ip, name: nameOf(s.ip), failed: s.messages - s.dmarc_pass, messages: s.messages }))
      .filter((s) => s.failed > 0)
      .sort((a, b) => b.failed - a.failed || a.ip.localeCompare(b.ip))
      .slice(0, 5),
  }));
  // Who the failing sources are (senders.ts), when enrichment is on.
  if (enricher) enrichDigest(db, domains, { since: from, until: to }, enricher);
  return {
    period,
    from,
    to,
    domains,
    tls: current.tlsrpt.map((t) => ({ policy_domain: t.policy_domain, successful: t.successful, failed: t.failed, failures: t.failures })),
    open_alerts: store.openAlerts().map((a) => ({ severity: a.severity, kind: a.kind, summary: a.summary, first_seen: a.first_seen })),
  };
}

/** Queues the digest for every channel and delivers it (with anything still pending). */
export async function sendDigest(
  db: Db,
  digest: DigestData,
  now: number,
  opts: { channels: Channel[]; retry?: RetryPolicy; sleep?: (ms: number) => Promise<void>; log: Logger },
): Promise<DeliveryReport> {
  const store = new AlertStore(db);
  const message = renderDigest(digest, now);
  for (const c of opts.channels) store.enqueue(c.name, 'digest', message, null, now);
  return deliverPending(store, opts.channels, opts);
}
