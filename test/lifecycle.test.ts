import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { DAY } from '../src/analyse/index.js';
import { configSchema, type Config } from '../src/config/schema.js';
import { createLogger } from '../src/log.js';
import type { RetryPolicy } from '../src/notify/types.js';
import { channelsOf, runAlerts } from '../src/pipeline/alerts.js';
import { startSmtp, type SmtpSink } from './helpers/chat-servers.js';
import { bufferInput, freshStore } from './helpers/common.js';
import { BLIP_DAY, INCIDENTS, L0, LAST_DAY, lifecycleReports } from './helpers/lifecycle.js';

/**
 * Issue 12: alerts run once a day for ten weeks over noisy daily reports, state kept, messages
 * delivered through a real SMTP server. Every incident is detected within its allowance, never
 * resolved while it lasts, resolved within 3 days of its end, and sends at most three messages;
 * the forwarder, the mailing list, the printer, the spam trickle and the one-day blip send none.
 */

const fast: RetryPolicy = { attempts: 2, baseMs: 10, maxWaitMs: 1000 };
const FIRST_RUN = 36; // the first evaluation with a full baseline behind it

interface Seen {
  opened: number | null;
  resolved: number[];
  /** Days on which an evaluation resolved it while its incident was still on. */
  severities: string[];
}

describe('the life of alerts over ten weeks, one evaluation a day', () => {
  let store: ReturnType<typeof freshStore>;
  let smtp: SmtpSink;
  let config: Config;
  const seen = new Map<string, Seen>();
  const opens: { key: string; day: number }[] = [];
  const mails = new Map<string, string[]>(); // key -> subjects, in order
  const findingsOn = new Map<number, string[]>();

  before(async () => {
    store = freshStore();
    smtp = await startSmtp();
    config = configSchema.parse({
      analysis: { reverse_dns: false },
      alerts: {
        email: { host: '127.0.0.1', port: smtp.port, security: 'none', from: 'ruawatch@example.com', to: ['postmaster@example.com'] },
      },
    });
    const log = createLogger('silent');
    for (let d = 0; d <= LAST_DAY; d++) {
      for (const r of lifecycleReports(d)) {
        const res = await store.ingestor.ingest(bufferInput(r.name, r.bytes));
        assert.deepEqual(
          res.leaves.map((l) => l.status),
          ['stored'],
          r.name,
        );
      }
      // Reports for day d arrive during day d + 1; the evaluation at its start sees day d complete.
      const evalDay = d + 1;
      if (evalDay < FIRST_RUN) continue;
      const before = smtp.messages.length;
      const run = await runAlerts(store.db, config, {
        now: (L0 + evalDay) * DAY + 3600,
        dryRun: false,
        channels: channelsOf(config, fast),
        lookup: null,
        retry: fast,
        log,
      });
      assert.deepEqual(run.deliveries.failed, []);
      findingsOn.set(evalDay, run.findings.map((f) => f.key).sort());
      for (const k of run.opened) {
        opens.push({ key: k, day: evalDay });
        const s = seen.get(k) ?? { opened: null, resolved: [], severities: [] };
        s.opened ??= evalDay;
        seen.set(k, s);
      }
      for (const k of run.resolved) seen.get(k)?.resolved.push(evalDay);
      for (const f of run.findings) seen.get(f.key)?.severities.push(f.severity);
      for (const m of smtp.messages.slice(before)) {
        const key = /key: (\S+)/.exec(m.text ?? '')?.[1] ?? '?';
        mails.set(key, [...(mails.get(key) ?? []), `${evalDay}: ${m.subject}`]);
      }
    }
  });
  after(async () => {
    store.db.close();
    await smtp.close();
  });

  it('opens exactly the alerts of the incidents: nothing on forwarders, lists, noise or the blip', () => {
    const expected = INCIDENTS.flatMap((i) => i.keys).sort();
    assert.deepEqual([...seen.keys()].sort(), expected, JSON.stringify(opens));
    // Each alert opened once: never resolved and opened again while its incident went on.
    assert.deepEqual(opens.map((o) => o.key).sort(), expected);
    // The blip (day 38) is seen by the evaluations of days 39 and 40: only the forger is open then.
    assert.deepEqual(findingsOn.get(BLIP_DAY + 1), ['new_failing_source:example.com:203.0.113.99']);
    assert.deepEqual(findingsOn.get(BLIP_DAY + 2), ['new_failing_source:example.com:203.0.113.99']);
  });

  for (const inc of INCIDENTS) {
    it(`${inc.name}: detected within ${inc.detectWithin} day(s), open while it lasts, resolved within 3 days of its end`, () => {
      for (const key of inc.keys) {
        const s = seen.get(key);
        assert.ok(s?.opened, `${key} never opened`);
        // The evaluation at the start of day start + 1 is the first to see day `start`.
        assert.ok(s.opened > inc.start, `${key} opened on day ${s.opened}, before its incident began on day ${inc.start}`);
        assert.ok(s.opened <= inc.start + inc.detectWithin, `${key} opened on day ${s.opened}, incident began on day ${inc.start}`);
        assert.equal(s.resolved.length, 1, `${key} resolved on days ${s.resolved.join(', ')}`);
        const resolved = s.resolved[0]!;
        assert.ok(resolved > inc.end, `${key} resolved on day ${resolved}, while its incident lasted until day ${inc.end}`);
        assert.ok(resolved <= inc.end + 3, `${key} resolved on day ${resolved}, its incident ended on day ${inc.end}`);
        const sent = mails.get(key) ?? [];
        assert.equal(sent.length, inc.messages, `${key}: ${sent.join(' | ')}`);
        assert.match(sent[0]!, /^\d+: \[(CRITICAL|WARNING)\] /);
        assert.match(sent.at(-1)!, /^\d+: \[RESOLVED\] /);
        for (const m of sent.slice(1, -1)) assert.match(m, /still open: /);
      }
    });
  }

  it('sends at most three messages per alert, none of them "still open" without news', (t) => {
    const rows = INCIDENTS.flatMap((i) =>
      i.keys.map(
        (k) =>
          `${k.padEnd(62)} start ${i.start} detected ${seen.get(k)?.opened} end ${i.end} resolved ${seen.get(k)?.resolved.join(',')} messages ${mails.get(k)?.length ?? 0}`,
      ),
    );
    t.diagnostic(`per alert (days from the first report):\n${rows.join('\n')}\nmessages on the email channel: ${smtp.messages.length}`);
    for (const [key, sent] of mails) assert.ok(sent.length <= 3, `${key}: ${sent.join(' | ')}`);
    const total = [...mails.values()].reduce((n, s) => n + s.length, 0);
    assert.equal(total, smtp.messages.length);
    assert.equal(
      total,
      INCIDENTS.reduce((n, i) => n + i.keys.length * i.messages, 0),
    );
    for (const m of smtp.messages.filter((x) => x.subject?.includes('still open'))) assert.match(m.text ?? '', /Worse: /);
  });
});

/** An RFC 6591 authentication failure report (ARF), as a receiver sends one per failing message. */
function arf(n: number, at: number, f: { ip: string; selector?: string }): Buffer {
  const date = new Date(at * 1000).toUTCString().replace('GMT', '+0000');
  const b = 'arf-boundary';
  return Buffer.from(
    [
      'From: dmarc-failures@receiver.example',
      'To: ruf@example.com',
      `Subject: Authentication failure report for example.com #${n}`,
      `Date: ${date}`,
      `Message-ID: <ruf-${n}-${at}@receiver.example>`,
      'MIME-Version: 1.0',
      `Content-Type: multipart/report; report-type=feedback-report; boundary="${b}"`,
      '',
      `--${b}`,
      'Content-Type: text/plain',
      '',
      'This is an authentication failure report.',
      `--${b}`,
      'Content-Type: message/feedback-report',
      '',
      'Feedback-Type: auth-failure',
      'Version: 1',
      `Auth-Failure: ${f.selector ? 'signature' : 'dmarc'}`,
      `Source-IP: ${f.ip}`,
      'Reported-Domain: example.com',
      `Arrival-Date: ${date}`,
      ...(f.selector ? ['DKIM-Domain: example.com', `DKIM-Selector: ${f.selector}`] : []),
      'Authentication-Results: mx.receiver.example; dmarc=fail header.from=example.com',
      `--${b}`,
      'Content-Type: text/rfc822-headers',
      '',
      'From: news@example.com',
      'Subject: Our offers',
      `--${b}--`,
      '',
    ].join('\r\n'),
  );
}

describe('failure reports as the fast signal', () => {
  it('failure reports arriving during a day open an alert at the next evaluation, for known sources only', async () => {
    const store = freshStore();
    const config = configSchema.parse({ analysis: { reverse_dns: false } });
    const log = createLogger('silent');
    // Five healthy weeks of aggregate reports, up to the end of day 35.
    for (let d = 0; d <= 35; d++) for (const r of lifecycleReports(d)) await store.ingestor.ingest(bufferInput(r.name, r.bytes));
    const evaluate = async (at: number) =>
      (await runAlerts(store.db, config, { now: at, dryRun: false, channels: [], lookup: null, log })).opened.sort();
    const morning = (L0 + 36) * DAY + 3600;
    assert.deepEqual(await evaluate(morning), []);

    // During day 36 the CRM's key breaks: a failure report for each failing message, within minutes.
    let n = 0;
    const ingest = async (count: number, f: { ip: string; selector?: string }, from: number) => {
      for (let i = 0; i < count; i++) {
        const res = await store.ingestor.ingest(bufferInput(`ruf-${++n}.eml`, arf(n, from + i * 60, f)));
        assert.deepEqual(
          res.leaves.map((l) => [l.status, l.status === 'stored' ? l.kind : '']),
          [['stored', 'failure']],
        );
      }
    };
    // Under the threshold (5) for the CRM, and a spoofer that never passed: nothing opens.
    await ingest(4, { ip: '192.0.2.30', selector: 'crm1' }, morning + 600);
    await ingest(30, { ip: '203.0.113.77' }, morning + 600);
    assert.deepEqual(await evaluate(morning + 900), []);

    // Two more about the CRM: the next poll opens its selector, which names the source it breaks
    // DMARC for (one alert for one broken key), long before the aggregate reports for day 36 arrive.
    await ingest(2, { ip: '192.0.2.30', selector: 'crm1' }, morning + 1200);
    const opened = await evaluate(morning + 1800);
    assert.deepEqual(opened, ['dkim_selector_broken:example.com:example.com:crm1']);
    const summaries = store.db.prepare(`SELECT key, summary, severity FROM alerts ORDER BY key`).all() as {
      summary: string;
      severity: string;
    }[];
    assert.match(
      summaries[0]!.summary,
      /^6 failure reports since yesterday say DKIM selector crm1\._domainkey\.example\.com fails .*; it breaks DMARC for mail from 192\.0\.2\.30$/,
    );

    // The next morning the aggregate reports for day 36 are not in yet: the alerts stay open.
    const next = await runAlerts(store.db, config, { now: (L0 + 37) * DAY + 3600, dryRun: false, channels: [], lookup: null, log });
    assert.deepEqual(next.resolved, []);
    assert.equal(next.findings.length, 1);
    store.db.close();
  });
});
