import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { DAY } from '../src/analyse/index.js';
import { configSchema, type Config } from '../src/config/schema.js';
import { createLogger } from '../src/log.js';
import type { RetryPolicy } from '../src/notify/types.js';
import { buildDigest, channelsOf, runAlerts, sendDigest, settingsOf, type AlertRun } from '../src/pipeline/alerts.js';
import { evaluateRules, evaluateRulesInTurns } from '../src/store/analysis.js';
import { openDb, type Db } from '../src/store/db.js';
import { startDiscord, startMatrix, startSmtp, type DiscordStub, type MatrixStub, type SmtpSink } from './helpers/chat-servers.js';
import { runCli } from './helpers/cli.js';
import { bufferInput, count, freshStore, tempDir } from './helpers/common.js';
import { D0, dayIso, EXPECTED, ingestDays } from './helpers/scenario.js';
import { dmarcXml, record } from './helpers/synth.js';

/**
 * The scenario of issue #4: five weeks of daily reports for example.com in which, in week five,
 * the newsletter provider's DKIM selector breaks, a spoofer appears, mx2's certificate expires in
 * the TLS reports, and a forwarder keeps failing SPF as it always did. Then a sixth, healthy week.
 */

const fast: RetryPolicy = { attempts: 3, baseMs: 20, maxWaitMs: 5000 };
const names = new Map([
  ['198.51.100.20', 'out.esp.example'],
  ['203.0.113.66', 'host66.spoof.example'],
]);
const lookups: string[] = [];
const lookup = async (ip: string) => {
  lookups.push(ip);
  return names.get(ip) ?? null;
};

describe('alerts: the five-week scenario, delivered to email, Matrix and Discord', () => {
  let store: ReturnType<typeof freshStore>;
  let db: Db;
  let smtp: SmtpSink;
  let matrix: MatrixStub;
  let discord: DiscordStub;
  let config: Config;
  const log = createLogger('silent');
  const at = (d: number, extraSeconds = 0) => (D0 + d) * DAY + extraSeconds;
  const run = (now: number) => runAlerts(db, config, { now, dryRun: false, channels: channelsOf(config, fast), lookup, retry: fast, log });

  before(async () => {
    store = freshStore();
    db = store.db;
    await ingestDays(store, 0, 34);
    smtp = await startSmtp();
    matrix = await startMatrix({ token: 'syt_matrix_token', roomId: '!alerts:example.org' });
    discord = await startDiscord({
      webhookId: '123456789012345678',
      webhookToken: 'hook-token_abc',
      botToken: 'bot.token',
      channelId: '987654321098765432',
    });
    config = configSchema.parse({
      alerts: {
        // Timed reminders on (the default is off), so that they are tested.
        renotify_hours: 24,
        email: {
          host: '127.0.0.1',
          port: smtp.port,
          security: 'none',
          from: 'ruawatch@example.com',
          to: ['postmaster@example.com', 'ops@example.com'],
        },
        matrix: { homeserver: matrix.url, access_token: 'syt_matrix_token', room_id: '!alerts:example.org' },
        discord: { webhook_url: discord.webhookUrl },
      },
    });
  });
  after(async () => {
    db.close();
    await Promise.all([smtp.close(), matrix.close(), discord.close()]);
  });

  it('finds exactly the three problems of week five (the key of the ESP named once), and nothing about the forwarder', async () => {
    // Rate limits and a server error on the way: each channel must still deliver every message once.
    matrix.script = ['429'];
    discord.script = ['429', '500'];
    smtp.failNext = 1;
    const r: AlertRun = await run(at(35));
    assert.deepEqual(r.findings.map((f) => f.key).sort(), EXPECTED);
    assert.deepEqual([...r.opened].sort(), EXPECTED);
    assert.deepEqual(r.deliveries, { sent: 9, failed: [], pending: 0 });

    const byKind = Object.fromEntries(r.findings.map((f) => [f.kind, f]));
    // The ESP's broken key: one finding, the selector's, which names the source whose DMARC it breaks.
    assert.match(
      byKind.dkim_selector_broken!.summary,
      /^DKIM selector esp1\._domainkey\.example\.com passed 100\.0% of 4,200 signatures, now 42\.9% of 1,050 \(fail 600\).*; seen from 198\.51\.100\.20 \(out\.esp\.example\), where it breaks DMARC \(100\.0% -> 42\.9% passing\)$/,
    );
    assert.deepEqual(byKind.dkim_selector_broken!.details.dmarc_failing_sources, ['198.51.100.20']);
    assert.equal(byKind.pass_rate_drop, undefined);
    assert.equal(
      byKind.new_failing_source!.summary,
      'new source 203.0.113.66 (host66.spoof.example) sent 400 messages as example.com in the last 7 days, 0.0% passing DMARC (no DKIM signature, SPF not aligned); receivers rejected 400 and quarantined 0',
    );
    assert.equal(byKind.new_failing_source!.severity, 'warning'); // p=reject: the spoofed mail was refused
    assert.equal(
      byKind.tls_failures!.summary,
      'TLS to mx2.example.com (example.com) failed in 300 of 800 sessions (37.5%) over the last 2 days with certificate-expired; reported by Google Inc.',
    );
    assert.deepEqual([...new Set(lookups)].sort(), ['198.51.100.20', '203.0.113.66']);
  });

  it('sent one message per finding on each channel, checked as each service receives it', () => {
    assert.deepEqual(matrix.violations, []);
    assert.deepEqual(discord.violations, []);
    assert.equal(smtp.messages.length, 3);
    assert.equal(matrix.events.length, 3);
    assert.equal(discord.messages.length, 3);
    assert.equal(matrix.requests, 4); // one 429, answered after retry_after_ms with the same txn id
    assert.equal(discord.requests, 5); // one 429 (Retry-After honoured), one 500 retried

    const titles = smtp.messages.map((m) => m.subject).sort();
    assert.deepEqual(titles, [
      '[CRITICAL] DKIM selector broken: example.com',
      '[WARNING] New failing source: example.com 203.0.113.66',
      '[WARNING] TLS failures: example.com',
    ]);
    for (const m of smtp.messages) {
      assert.equal(m.headers.get('auto-submitted'), 'auto-generated');
      assert.deepEqual(
        (Array.isArray(m.to) ? m.to : [m.to!]).flatMap((t) => t.value.map((v) => v.address)),
        ['postmaster@example.com', 'ops@example.com'],
      );
      assert.match(m.text ?? '', /key: [a-z_]+:example\.com/);
      assert.match(String(m.html), /<p><strong>\[(CRITICAL|WARNING)\]/);
    }
    for (const e of matrix.events) {
      assert.equal(e.content.msgtype, 'm.notice');
      assert.equal(e.content.format, 'org.matrix.custom.html');
      assert.match(e.content.formatted_body!, /<strong>/);
      assert.match(e.txnId, /^rw-[0-9a-f-]{36}$/);
    }
    const colours = Object.fromEntries(discord.messages.map((m) => [m.embeds[0]!.title!, m.embeds[0]!.color]));
    assert.equal(colours['[CRITICAL] DKIM selector broken: example.com'], 0xd32f2f);
    assert.equal(colours['[WARNING] TLS failures: example.com'], 0xf9a825);
    const spoof = discord.messages.find((m) => m.embeds[0]!.title!.includes('203.0.113.66'))!.embeds[0]!;
    assert.deepEqual(spoof.fields!.map((f) => [f.name, f.value]).slice(0, 3), [
      ['Kind', 'new_failing_source'],
      ['Domain', 'example.com'],
      ['Source', '203.0.113.66 (host66.spoof.example)'],
    ]);
  });

  it('builds the weekly digest and sends it once through each channel', async () => {
    const digest = buildDigest(db, 'weekly', at(35));
    assert.deepEqual(digest.domains, [
      {
        domain: 'example.com',
        messages: 4320,
        pass_rate: 0.7523,
        previous_pass_rate: 0.9821,
        reports: 14,
        failing: [
          { ip: '198.51.100.20', name: 'out.esp.example', failed: 600, messages: 1050 },
          { ip: '203.0.113.66', name: 'host66.spoof.example', failed: 400, messages: 400 },
          { ip: '192.0.2.200', name: null, failed: 70, messages: 350 },
        ],
      },
    ]);
    assert.deepEqual(digest.tls, [
      { policy_domain: 'example.com', successful: 3500, failed: 450, failures: [{ result_type: 'certificate-expired', count: 450 }] },
    ]);
    assert.equal(digest.open_alerts.length, 3);
    const before = [smtp.messages.length, matrix.events.length, discord.messages.length];
    const sent = await sendDigest(db, digest, at(35, 60), { channels: channelsOf(config, fast), retry: fast, log });
    assert.deepEqual(sent, { sent: 3, failed: [], pending: 0 });
    assert.deepEqual(
      [smtp.messages.length, matrix.events.length, discord.messages.length],
      before.map((n) => n + 1),
    );
    const mail = smtp.messages.at(-1)!;
    assert.equal(mail.subject, 'ruawatch weekly digest: 2026-11-02 to 2026-11-08');
    assert.match(
      mail.text!,
      /example\.com: 4,320 messages, 75\.2% passing DMARC \(before: 98\.2%\), 14 reports\n {4}198\.51\.100\.20 \(out\.esp\.example\): 600 of 1,050 failing/,
    );
    assert.match(mail.text!, /example\.com: 450 of 3,950 sessions failed \(certificate-expired 450\)/);
    assert.match(mail.text!, /Open alerts: 3\n {2}\[critical\] DKIM selector esp1/);
    assert.equal(discord.messages.at(-1)!.embeds[0]!.color, 0xd32f2f);
  });

  it('sends nothing new an hour later, and a reminder per open alert after renotify_hours', async () => {
    const total = () => smtp.messages.length + matrix.events.length + discord.messages.length;
    const sentBefore = total();
    const again = await run(at(35, 3600));
    assert.deepEqual(again.opened, []);
    assert.deepEqual(again.reminded, []);
    assert.equal(again.deliveries.sent, 0);
    assert.equal(total(), sentBefore);

    const nextDay = await run(at(36, 3600));
    assert.deepEqual([...nextDay.reminded].sort(), EXPECTED);
    assert.equal(nextDay.deliveries.sent, 9);
    assert.equal(smtp.messages.filter((m) => m.subject?.includes('still open:')).length, 3);
    assert.equal(count(db, `SELECT COUNT(*) FROM alerts WHERE resolved_at IS NULL`), 3);
  });

  it('keeps a failing channel from holding up the others, and delivers its messages on a later run', async () => {
    // Week six is healthy: every alert resolves. Matrix is down during this run.
    await ingestDays(store, 35, 41);
    matrix.down = true;
    const before = { smtp: smtp.messages.length, matrix: matrix.events.length, discord: discord.messages.length };
    const r = await run(at(42));
    assert.deepEqual(r.findings, []);
    assert.deepEqual([...r.resolved].sort(), EXPECTED);
    assert.equal(r.deliveries.sent, 6);
    assert.deepEqual(
      r.deliveries.failed.map((f) => [f.channel, f.event]),
      [['matrix', 'resolved']],
    );
    assert.match(r.deliveries.failed[0]!.error, /^500 M_UNKNOWN Internal server error$/);
    assert.equal(r.deliveries.pending, 3);
    assert.equal(smtp.messages.length - before.smtp, 3);
    assert.equal(discord.messages.length - before.discord, 3);
    assert.equal(matrix.events.length, before.matrix);
    for (const m of smtp.messages.slice(before.smtp)) assert.match(m.subject ?? '', /^\[RESOLVED\] /);
    assert.equal(
      discord.messages.slice(before.discord).every((m) => m.embeds[0]!.color === 0x2e7d32),
      true,
    );

    matrix.down = false;
    const later = await run(at(42, 600));
    assert.deepEqual(later.resolved, []);
    assert.deepEqual(later.deliveries, { sent: 3, failed: [], pending: 0 });
    assert.equal(matrix.events.length - before.matrix, 3);
    assert.ok(matrix.events.slice(before.matrix).every((e) => e.content.body.startsWith('[RESOLVED] ')));
    assert.equal(smtp.messages.length - before.smtp, 3);
    assert.equal(count(db, `SELECT COUNT(*) FROM notifications WHERE delivered_at IS NULL`), 0);
    assert.equal(count(db, `SELECT MAX(attempts) FROM notifications WHERE channel = 'matrix' AND event = 'resolved'`), 3 + 1);
  });

  it('stays quiet once everything has recovered', async () => {
    const r = await run(at(43));
    assert.deepEqual(r.findings, []);
    assert.deepEqual([r.opened, r.reminded, r.resolved, r.deliveries.sent], [[], [], [], 0]);
    assert.equal(count(db, `SELECT COUNT(*) FROM alerts`), 3);
    assert.equal(count(db, `SELECT COUNT(*) FROM alerts WHERE resolved_at IS NULL`), 0);
  });

  it('does not retry a refused message within the run (403), and keeps it for the next', async () => {
    const q = db.prepare(
      `INSERT INTO alerts (key, kind, severity, domain, summary, details, first_seen, last_seen) VALUES ('reporter_silent:dmarc:example.org', 'reporter_silent', 'critical', 'example.org', 'x', '{}', 1, 1)`,
    );
    q.run();
    matrix.script = ['403'];
    const requests = matrix.requests;
    const r = await run(at(43, 60)); // the hand-made alert has no finding behind it: it resolves
    assert.deepEqual(r.resolved, ['reporter_silent:dmarc:example.org']);
    assert.equal(matrix.requests - requests, 1);
    assert.deepEqual(
      r.deliveries.failed.map((f) => f.error),
      ['403 M_FORBIDDEN User not in room'],
    );
    const next = await run(at(43, 120));
    assert.deepEqual(next.deliveries, { sent: 1, failed: [], pending: 0 });
  });

  it('ruawatch alerts --dry-run --json prints the findings as of --at, and changes nothing', async () => {
    const file = path.join(tempDir(), 'copy.sqlite');
    db.prepare('VACUUM INTO ?').run(file);
    const res = await runCli(['alerts', '--db', file, '--at', dayIso(D0 + 34), '--dry-run', '--json'], {
      RUAWATCH_ANALYSIS_REVERSE_DNS: 'false',
    });
    assert.equal(res.code, 0, res.stderr);
    const out = JSON.parse(res.stdout) as {
      findings: {
        key: string;
        kind: string;
        severity: string;
        domain: string;
        source_ip: string | null;
        reporter: string | null;
        summary: string;
      }[];
    };
    assert.deepEqual(out.findings.map((f) => f.key).sort(), EXPECTED);
    for (const f of out.findings) {
      assert.deepEqual(Object.keys(f).slice(0, 8), [
        'key',
        'kind',
        'severity',
        'domain',
        'source_ip',
        'source_name',
        'reporter',
        'summary',
      ]);
      assert.equal(f.domain, 'example.com');
    }
    const text = await runCli(['alerts', '--db', file, '--at', dayIso(D0 + 34), '--dry-run'], { RUAWATCH_ANALYSIS_REVERSE_DNS: 'false' });
    assert.match(text.stdout, /^3 findings as of 2026-11-09 00:00 UTC:\n {2}CRITICAL dkim_selector_broken +DKIM selector esp1/);
    assert.doesNotMatch(text.stdout, /Alerts:/);
    const copy = openDb(file);
    assert.equal(count(copy, 'SELECT COUNT(*) FROM alerts WHERE resolved_at IS NULL'), 0);
    assert.equal(count(copy, 'SELECT COUNT(*) FROM notifications'), count(db, 'SELECT COUNT(*) FROM notifications'));
    copy.close();
  });
});

describe('a dry run', () => {
  it('writes nothing to the database, the reverse DNS cache included, though it looks names up', async () => {
    const store = freshStore();
    await ingestDays(store, 0, 34);
    store.db.close();
    const config = configSchema.parse({});
    const bytes = () => fs.readFileSync(store.file);
    const before = bytes();
    const db = openDb(store.file);
    const changes = () => count(db, 'SELECT total_changes()');
    const start = changes();
    lookups.length = 0;
    const run = await runAlerts(db, config, { now: (D0 + 35) * DAY, dryRun: true, channels: [], lookup, log: createLogger('silent') });
    // The names were looked up and are in the findings...
    assert.ok(lookups.includes('198.51.100.20'));
    assert.ok(run.findings.some((f) => f.summary.includes('198.51.100.20 (out.esp.example)')));
    // ...and nothing was written: no change on this connection, and the same bytes once closed.
    assert.equal(changes(), start);
    assert.equal(count(db, 'SELECT COUNT(*) FROM reverse_dns'), 0);
    db.close();
    assert.ok(bytes().equals(before), 'the database file changed');
    assert.ok(!fs.existsSync(`${store.file}-wal`) || fs.statSync(`${store.file}-wal`).size === 0);
  });
});

describe('ruawatch notify test', () => {
  let smtp: SmtpSink;
  let matrix: MatrixStub;
  let discord: DiscordStub;
  let dir: string;
  before(async () => {
    smtp = await startSmtp();
    matrix = await startMatrix({ token: 'syt_matrix_token', roomId: '!alerts:example.org' });
    discord = await startDiscord({
      webhookId: '123456789012345678',
      webhookToken: 'hook-token_abc',
      botToken: 'bot.token',
      channelId: '987654321098765432',
    });
    dir = tempDir();
    fs.writeFileSync(path.join(dir, 'matrix-token'), 'syt_matrix_token\n');
    fs.writeFileSync(path.join(dir, 'discord-bot'), 'bot.token\n');
  });
  after(() => Promise.all([smtp.close(), matrix.close(), discord.close()]));

  const config = (matrixUrl: string) => {
    const file = path.join(dir, `c-${Math.random().toString(36).slice(2)}.toml`);
    fs.writeFileSync(
      file,
      `
[alerts.email]
host = "127.0.0.1"
port = ${smtp.port}
security = "none"
from = "ruawatch@example.com"
to = ["postmaster@example.com"]

[alerts.matrix]
homeserver = "${matrixUrl}"
access_token_file = "${path.join(dir, 'matrix-token')}"
room_id = "!alerts:example.org"

[alerts.discord]
bot_token_file = "${path.join(dir, 'discord-bot')}"
channel_id = "987654321098765432"
api_url = "${discord.url}/api"
`,
    );
    return file;
  };
  // In process: the stub servers live here too, and keep answering while it awaits them.
  const cli = async (...args: string[]) => {
    const r = await runCli(['notify', 'test', ...args]);
    return { status: r.code, stdout: r.stdout, stderr: r.stderr };
  };

  it('sends one test message through each channel: email, Matrix, and Discord with a bot token', async () => {
    const res = await cli('--config', config(matrix.url));
    assert.equal(res.status, 0, res.stderr);
    assert.equal(res.stdout, 'email: sent\nmatrix: sent\ndiscord: sent\n');
    assert.equal(smtp.messages.length, 1);
    assert.equal(smtp.messages[0]!.subject, 'ruawatch test message');
    assert.equal(matrix.events.length, 1);
    assert.match(matrix.events[0]!.content.body, /the matrix channel works/);
    assert.deepEqual(
      discord.messages.map((m) => m.via),
      ['bot'],
    );
    assert.match(discord.messages[0]!.nonce!, /^[\w]{1,25}$/);
    assert.deepEqual([matrix.violations, discord.violations], [[], []]);
  });

  it('--channel sends through that channel only; two tests at once are two messages', async () => {
    const file = config(matrix.url);
    const runs = await Promise.all([
      cli('--config', file, '--channel', 'discord', '--json'),
      cli('--config', file, '--channel', 'discord', '--json'),
    ]);
    for (const res of runs) {
      assert.equal(res.status, 0, res.stderr);
      assert.deepEqual(JSON.parse(res.stdout), { results: [{ channel: 'discord', ok: true }] });
    }
    assert.deepEqual([smtp.messages.length, matrix.events.length, discord.messages.length], [1, 1, 3]);
  });

  it('an unreachable homeserver fails its channel only, with the reason, exit 1', async () => {
    const probe = net.createServer();
    await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
    const closed = (probe.address() as net.AddressInfo).port;
    await new Promise((resolve) => probe.close(resolve));
    const res = await cli('--config', config(`http://127.0.0.1:${closed}`));
    assert.equal(res.status, 1);
    assert.match(
      res.stdout,
      // The channel named once, not again in the reason.
      /^email: sent\nmatrix: FAILED: http:\/\/127\.0\.0\.1:\d+ unreachable: fetch failed \(.*ECONNREFUSED.*\)\ndiscord: sent\n$/,
    );
    assert.deepEqual([smtp.messages.length, discord.messages.length], [2, 4]);
  });

  it('usage and configuration errors exit 2', async () => {
    assert.equal((await cli('--channel', 'irc')).status, 2);
    const none = await runCli(['notify', 'test']);
    assert.equal(none.code, 2);
    assert.match(none.stderr, /no \[alerts\] channel is configured/);
  });
});

describe('an evaluation inside ruawatch run', () => {
  it('lets the event loop run between groups of domains (so /healthz answers), with the same findings as in one go', async () => {
    const store = freshStore();
    // 200 policy domains over two weeks; in every tenth a spoofer appears in the last four days.
    for (let d = 0; d < 200; d++) {
      for (let day = 0; day < 14; day++) {
        const begin = (D0 + 21 + day) * DAY;
        const headerFrom = `d${d}.example`;
        const records = [record({ ip: '192.0.2.10', count: 50, headerFrom })];
        if (d % 10 === 0 && day >= 10) records.push(record({ ip: '203.0.113.66', count: 40, dkim: 'fail', spf: 'fail', headerFrom }));
        const xml = dmarcXml({ reportId: `d${d}-${day}`, domain: headerFrom, begin, end: begin + DAY - 1, records });
        assert.equal((await store.ingestor.ingest(bufferInput(`d${d}-${day}.xml`, xml))).leaves[0]!.status, 'stored');
      }
    }
    const settings = settingsOf(configSchema.parse({ analysis: { reverse_dns: false } }));
    const now = (D0 + 35) * DAY;
    let turns = 0;
    let spinning = true;
    const spin = () => {
      if (!spinning) return;
      turns++;
      setImmediate(spin);
    };
    setImmediate(spin);
    const inTurns = await evaluateRulesInTurns(store.db, now, settings);
    spinning = false;
    // Groups grow 1, 2, 4, ... 128 domains while their rows stay small: at least 8 of them here.
    assert.ok(turns >= 8, `the event loop ran ${turns} times during the evaluation`);
    assert.deepEqual(inTurns, evaluateRules(store.db, now, settings));
    assert.equal(inTurns.filter((f) => f.kind === 'new_failing_source').length, 20);
    store.db.close();
  });
});

describe('a damaged alert row', () => {
  it('does not stop later evaluations: unreadable details and notification state count as none', async () => {
    const store = freshStore();
    await ingestDays(store, 0, 34);
    const config = configSchema.parse({ analysis: { reverse_dns: false } });
    const log = createLogger('silent');
    const first = await runAlerts(store.db, config, { now: (D0 + 35) * DAY, dryRun: false, channels: [], lookup: null, log });
    assert.deepEqual([...first.opened].sort(), EXPECTED);
    store.db.exec(`UPDATE alerts SET details = '{not json', notified = 'also not json'`);
    const next = await runAlerts(store.db, config, { now: (D0 + 35) * DAY + 3600, dryRun: false, channels: [], lookup: null, log });
    assert.deepEqual(next.opened, []);
    assert.deepEqual(next.resolved, []);
    store.db.close();
  });
});
