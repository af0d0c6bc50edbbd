import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Browser, Page } from 'playwright-core';
import { openApp } from '../src/app.js';
import { DAY } from '../src/analyse/index.js';
import { configSchema } from '../src/config/schema.js';
import { createLogger } from '../src/log.js';
import { channelsOf, runAlerts } from '../src/pipeline/alerts.js';
import { overview } from '../src/store/dashboard.js';
import { startWeb, type WebServer } from '../src/web/server.js';
import { Worker } from '../src/worker/worker.js';
import { startSmtp, type SmtpSink } from './helpers/chat-servers.js';
import { bufferInput, freshStore, ROOT } from './helpers/common.js';
import { D0, dayIso, ingestDays } from './helpers/scenario.js';
import { dmarcXml, record } from './helpers/synth.js';

/**
 * The dashboard in a real headless Chromium (Debian's `chromium`, driven by playwright-core),
 * served by ruawatch's own web server from a database seeded with the alert scenario.
 */
const CHROMIUM = [process.env.CHROMIUM_PATH, '/usr/bin/chromium', '/usr/bin/chromium-browser'].find((p) => p && fs.existsSync(p)) ?? null;
if (!CHROMIUM) {
  process.stderr.write('\n*** chromium is not installed: the dashboard tests are SKIPPED (apt-get install chromium) ***\n');
  if (process.env.CI) throw new Error('chromium is missing under CI');
}
const ARTIFACTS = path.join(ROOT, 'test-artifacts');

describe('dashboard in headless Chromium', { skip: !CHROMIUM && 'chromium is not installed' }, () => {
  let browser: Browser;
  let page: Page;
  let web: WebServer;
  let smtp: SmtpSink;
  const problems: string[] = [];
  const store = freshStore();

  before(async () => {
    await ingestDays(store, 0, 34);
    // A hostile report: markup in the reporter's name and in header_from must stay text.
    const evil = dmarcXml({
      reportId: 'evil-1',
      orgName: '&lt;script&gt;window.pwned=1&lt;/script&gt;',
      begin: (D0 + 34) * DAY + 3600,
      end: (D0 + 34) * DAY + 7200,
      records: [
        record({ ip: '203.0.113.99', count: 5, dkim: 'fail', spf: 'fail', headerFrom: '&lt;img src=x onerror="window.pwned=1"&gt;' }),
      ],
    });
    assert.equal((await store.ingestor.ingest(bufferInput('evil.xml', evil))).leaves[0]!.status, 'stored');
    // Alerts go out by email to an SMTP server whose content filter refuses one of them with 554:
    // it is parked, and the dashboard must say so.
    smtp = await startSmtp();
    smtp.refuse = (m) => (/DKIM selector broken/.test(m.subject ?? '') ? { code: 554, text: '5.7.1 Message content rejected' } : null);
    const config = configSchema.parse({
      web: { listen: '127.0.0.1:0', token: 'dash-token' },
      analysis: { reverse_dns: false },
      // Without enrichment: the columns as they are without it (dashboard-senders.test.ts has them with).
      enrich: { enabled: false },
      alerts: {
        email: { host: '127.0.0.1', port: smtp.port, security: 'none', from: 'ruawatch@example.com', to: ['postmaster@example.com'] },
      },
    });
    const log = createLogger('silent');
    const names = new Map([['198.51.100.20', 'out.esp.example']]);
    const channels = channelsOf(config, { attempts: 2, baseMs: 20, maxWaitMs: 1000, timeoutMs: 2000 });
    await runAlerts(store.db, config, {
      now: (D0 + 35) * DAY,
      dryRun: false,
      channels,
      lookup: async (ip) => names.get(ip) ?? null,
      log,
    });
    web = await startWeb(config, store.db, new Worker(openApp(config, { db: store.db, log, lookup: null, channels: [] })), log);
    const { chromium } = await import('playwright-core');
    browser = await chromium.launch({ executablePath: CHROMIUM!, args: ['--no-sandbox'] });
    page = await browser.newPage({ viewport: { width: 1280, height: 900 }, extraHTTPHeaders: { authorization: 'Bearer dash-token' } });
    page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
    page.on('console', (m) => m.type() === 'error' && problems.push(`console: ${m.text()}`));
    page.on('requestfailed', (r) => problems.push(`request failed: ${r.url()}`));
    await page.goto(`${web.url}/?at=2026-11-08&days=35`);
    await page.waitForSelector('body[data-loaded="true"]', { timeout: 10_000 });
  });
  after(async () => {
    await browser?.close();
    await web?.close();
    await smtp?.close();
    store.db.close();
  });

  it('draws the pass-rate chart with a point per day, showing week five', async () => {
    const data = await page.evaluate(
      () =>
        (window as unknown as { ruawatch: { charts: Record<string, { data: number[][]; series: { label?: string }[] }> } }).ruawatch.charts[
          'pass-chart'
        ]!.data,
    );
    assert.equal(data[0]!.length, 35);
    const rates = data[1]!;
    assert.ok(
      rates.slice(0, 29).every((r) => r > 98),
      `weeks 1-4 pass: ${rates.slice(0, 29).join(',')}`,
    );
    assert.ok(rates[34]! < 80, `day 34 fails: ${rates[34]}`);
    const inked = await page.evaluate(() => {
      const c = document.querySelector<HTMLCanvasElement>('#pass-chart canvas')!;
      const px = c.getContext('2d')!.getImageData(0, 0, c.width, c.height).data;
      let n = 0;
      for (let i = 3; i < px.length; i += 4) if (px[i]! > 0) n++;
      return n;
    });
    assert.ok(inked > 2000, `the canvas has ink: ${inked} pixels`);
  });

  it('draws TLS sessions over time, with the failures of the expired certificate', async () => {
    const data = await page.evaluate(
      () => (window as unknown as { ruawatch: { charts: Record<string, { data: number[][] }> } }).ruawatch.charts['tls-chart']!.data,
    );
    assert.equal(data[0]!.length, 35);
    assert.deepEqual(data[2]!.slice(-4), [0, 150, 150, 150]);
    assert.ok(data[1]!.every((n) => n === 500));
  });

  it('lists sources with volume, pass rate, trend and reverse DNS', async () => {
    const rows = await page.$$eval('#sources tbody tr', (trs) =>
      trs.map((tr) => Array.from(tr.querySelectorAll('td')).map((td) => td.textContent)),
    );
    const esp = rows.find((r) => r[1] === '198.51.100.20')!;
    assert.deepEqual(esp.slice(0, 6), ['example.com', '198.51.100.20', 'out.esp.example', '1,050', '42.9%', '▼ 57.1 pt']);
    assert.equal(esp[8], '2'); // Google and Yahoo
    const spoofer = rows.find((r) => r[1] === '203.0.113.66')!;
    assert.deepEqual([spoofer[4], spoofer[5]], ['0.0%', 'new']);
  });

  it("counts the sources over the alerts' 7 days, the same numbers as the alerts and /metrics", async () => {
    assert.equal(
      await page.textContent('#sources-title'),
      'Sources, 2026-11-02 to 2026-11-08 (the 7 days the alerts judge), trend against the 7 days before',
    );
    const config = configSchema.parse({ analysis: { reverse_dns: false } });
    const run = await runAlerts(store.db, config, {
      now: (D0 + 35) * DAY,
      dryRun: true,
      channels: [],
      lookup: null,
      log: createLogger('silent'),
    });
    const nfs = run.findings.find((f) => f.kind === 'new_failing_source')!;
    const rows = await page.$$eval('#sources tbody tr', (trs) =>
      trs.map((tr) => Array.from(tr.querySelectorAll('td')).map((td) => td.textContent)),
    );
    const spoofer = rows.find((r) => r[1] === nfs.source_ip)!;
    assert.equal(spoofer[3], Number(nfs.details.recent_messages).toLocaleString('en-US'));
    assert.equal(spoofer[4], `${Number(nfs.details.recent_pass_rate).toFixed(1)}%`);
    const total = rows.reduce((n, r) => n + Number(r[3]!.replace(/,/g, '')), 0);
    const o = await page.evaluate(
      () => (window as unknown as { ruawatch: { overview: { sources: { messages: number }[] } } }).ruawatch.overview,
    );
    assert.equal(
      total,
      o.sources.reduce((n, x) => n + x.messages, 0),
    );
    const { metricsText } = await import('../src/web/metrics.js');
    const worker = new Worker(openApp(config, { db: store.db, log: createLogger('silent'), lookup: null, channels: [] }));
    const metrics = metricsText(store.db, worker.state, config, (D0 + 35) * DAY + 3600);
    assert.match(metrics, new RegExp(`^ruawatch_dmarc_messages\\{domain="example.com"\\} ${total}$`, 'm'));
  });

  it('keeps chart titles when a period has no data, and says which days the database has', async () => {
    await page.goto(`${web.url}/?at=2025-06-30&days=30`);
    await page.waitForSelector('body[data-loaded="true"]', { timeout: 10_000 });
    const titles = await page.$$eval('.chart-title', (hs) => hs.map((h) => h.textContent));
    assert.deepEqual(titles, ['DMARC pass rate per domain', 'TLS sessions (all policy domains)']);
    assert.equal(
      await page.textContent('#pass-chart .empty'),
      'No aggregate reports from 2025-06-01 to 2025-06-30. The database has them from 2026-10-05 to 2026-11-08.',
    );
    assert.equal(
      await page.textContent('#tls-chart .empty'),
      'No TLS reports from 2025-06-01 to 2025-06-30. The database has them from 2026-10-05 to 2026-11-08.',
    );
    assert.match((await page.textContent('#sources'))!, /^No aggregate reports from 2025-06-24 to 2025-06-30\./);
  });

  it('leaves days without data as gaps, with a tick per whole day', async () => {
    // Through 2026-11-12: the last four days of the period have no reports.
    await page.goto(`${web.url}/?at=2026-11-12&days=14`);
    await page.waitForSelector('body[data-loaded="true"]', { timeout: 10_000 });
    const chart = await page.evaluate(() => {
      const r = (
        window as unknown as {
          ruawatch: {
            charts: Record<string, { data: (number | null)[][]; series: { spanGaps?: boolean }[] }>;
            ticks: Record<string, number[]>;
          };
        }
      ).ruawatch;
      return {
        data: r.charts['pass-chart']!.data,
        spanGaps: r.charts['pass-chart']!.series[1]!.spanGaps,
        ticks: r.ticks['pass-chart']!,
        tls: r.charts['tls-chart']!.data,
      };
    });
    assert.equal(chart.data[0]!.length, 14);
    assert.deepEqual(chart.data[0]![0], (D0 + 25) * DAY);
    assert.deepEqual(chart.data[1]!.slice(-4), [null, null, null, null]);
    assert.ok(chart.data[1]!.slice(0, 10).every((v) => typeof v === 'number'));
    assert.deepEqual(chart.tls[1]!.slice(-4), [null, null, null, null]);
    assert.equal(chart.spanGaps, false);
    assert.ok(chart.ticks.length >= 2, `${chart.ticks.length} ticks`);
    assert.ok(
      chart.ticks.every((t) => t % DAY === 0),
      `ticks on midnights: ${chart.ticks.join(',')}`,
    );
    assert.ok(chart.ticks.every((t) => (t - chart.ticks[0]!) % DAY === 0));
    assert.deepEqual(problems, []);
    await page.goto(`${web.url}/?at=2026-11-08&days=35`);
    await page.waitForSelector('body[data-loaded="true"]', { timeout: 10_000 });
  });

  it('shows the open alerts', async () => {
    const kinds = await page.$$eval('#alerts-open tbody tr td:nth-child(2)', (tds) => tds.map((td) => td.textContent).sort());
    assert.deepEqual(kinds, ['dkim_selector_broken', 'new_failing_source', 'tls_failures']);
  });

  it('shows a notification parked for good, with the reason the receiver gave', async () => {
    assert.equal(smtp.refused.length, 1);
    const channels = await page.$$eval('#notifications table:first-of-type tbody tr', (trs) =>
      trs.map((tr) => Array.from(tr.querySelectorAll('td')).map((td) => td.textContent)),
    );
    assert.equal(channels.length, 1);
    assert.deepEqual(channels[0]!.slice(0, 4), ['email', 'delivering', '0', '1']);
    const parked = await page.$$eval('#notifications table:nth-of-type(2) tbody tr', (trs) =>
      trs.map((tr) => Array.from(tr.querySelectorAll('td')).map((td) => td.textContent)),
    );
    assert.equal(parked.length, 1);
    assert.equal(parked[0]![1], 'email');
    assert.match(parked[0]![2]!, /^opened: .*DKIM selector broken/);
    assert.match(parked[0]![3]!, /554 5\.7\.1 Message content rejected/);
  });

  it('drills down from a report to its records, and from a TLS report to its failures', async () => {
    await page.locator('#reports tbody tr', { hasText: 'google.com-2026-11-08' }).click();
    await page.waitForSelector('#detail table');
    const records = await page.$$eval('#detail tbody tr', (trs) =>
      trs.map((tr) => Array.from(tr.querySelectorAll('td')).map((td) => td.textContent)),
    );
    assert.deepEqual(
      records.map((r) => [r[0], r[1], r[3]]),
      [
        ['192.0.2.10', '300', 'pass'],
        ['198.51.100.20', '120', 'fail'],
        ['203.0.113.66', '80', 'fail'],
        ['192.0.2.200', '40', 'pass'],
        ['192.0.2.200', '10', 'fail'],
      ],
    );
    assert.equal(records[1]![6], 'example.com/esp1: fail');
    assert.equal(records[4]![8], 'forwarded');

    await page.locator('#reports tbody tr', { hasText: 'tlsrpt' }).first().click();
    await page.waitForFunction(() => document.querySelector('#detail')?.textContent?.includes('certificate-expired'));
    assert.match(
      (await page.textContent('#detail'))!,
      /sts policy for example\.com \(MX: mx1\.example\.com, mx2\.example\.com\): 500 successful, 150 failed sessions/,
    );
  });

  it('shows markup from a report as text and runs none of it', async () => {
    await page.locator('#reports tbody tr', { hasText: 'evil-1' }).click();
    await page.waitForFunction(() => document.querySelector('#detail')?.textContent?.includes('onerror'));
    assert.equal(await page.$$eval('#detail img, #detail script', (e) => e.length), 0);
    assert.match((await page.textContent('#detail h3'))!, /from <script>window\.pwned=1<\/script>/);
    assert.equal(await page.evaluate(() => (window as unknown as { pwned?: number }).pwned), undefined);
  });

  it('loaded every asset from ruawatch itself, without an error, and saves a screenshot', async () => {
    const sources = await page.evaluate(() =>
      Array.from(document.querySelectorAll('script[src], link[href]')).map(
        (e) => (e as HTMLScriptElement).src || (e as HTMLLinkElement).href,
      ),
    );
    assert.ok(
      sources.every((s) => s.startsWith(web.url) || s === 'data:,'),
      sources.join(', '),
    );
    assert.deepEqual(problems, []);
    fs.mkdirSync(ARTIFACTS, { recursive: true });
    const file = path.join(ARTIFACTS, 'dashboard.png');
    await page.screenshot({ path: file, fullPage: true });
    assert.ok(fs.statSync(file).size > 20_000);
  });

  it("leaves today's partial day out of the sources, as the alerts do", async () => {
    // A report for the day after the scenario's last, read at noon that day: not counted yet.
    const day = D0 + 35;
    const partial = dmarcXml({
      reportId: 'today-1',
      orgName: 'early.example',
      begin: day * DAY,
      end: day * DAY + 6 * 3600,
      records: [record({ ip: '203.0.113.66', count: 900, dkim: 'fail', spf: 'fail' })],
    });
    assert.equal((await store.ingestor.ingest(bufferInput('today.xml', partial))).leaves[0]!.status, 'stored');
    const noon = day * DAY + 12 * 3600;
    const o = overview(store.db, { days: 30, now: noon, recentDays: 7 });
    assert.deepEqual([o.recent.from, o.recent.to], [dayIso(D0 + 28), dayIso(D0 + 34)]);
    const spoofer = o.sources.find((x) => x.ip === '203.0.113.66')!;
    const config = configSchema.parse({ analysis: { reverse_dns: false } });
    const run = await runAlerts(store.db, config, { now: noon, dryRun: true, channels: [], lookup: null, log: createLogger('silent') });
    const nfs = run.findings.find((f) => f.key === 'new_failing_source:example.com:203.0.113.66')!;
    assert.equal(spoofer.messages, nfs.details.recent_messages);
    assert.equal(Math.round(spoofer.pass_rate! * 1000) / 10, nfs.details.recent_pass_rate);
    assert.deepEqual([spoofer.messages, spoofer.pass_rate], [400, 0]);
    assert.equal(o.period.to, dayIso(D0 + 34));
  });

  it('asks for credentials when they are configured: a bearer token, or basic auth', async () => {
    const res = await fetch(`${web.url}/api/overview`);
    assert.equal(res.status, 401);
    assert.equal(res.headers.get('www-authenticate'), 'Bearer');
    assert.equal((await fetch(`${web.url}/metrics`, { headers: { authorization: 'Bearer wrong' } })).status, 401);
    assert.equal((await fetch(`${web.url}/healthz`)).status, 200);

    const config = configSchema.parse({ web: { listen: '127.0.0.1:0', user: 'admin', password: 'pa:ss' } });
    const log = createLogger('silent');
    const basic = await startWeb(config, store.db, new Worker(openApp(config, { db: store.db, log, lookup: null, channels: [] })), log);
    try {
      const auth = (u: string, p: string) => ({ authorization: `Basic ${Buffer.from(`${u}:${p}`).toString('base64')}` });
      const denied = await fetch(`${basic.url}/`);
      assert.equal(denied.status, 401);
      assert.equal(denied.headers.get('www-authenticate'), 'Basic realm="ruawatch", charset="UTF-8"');
      assert.equal((await fetch(`${basic.url}/`, { headers: auth('admin', 'wrong') })).status, 401);
      const ok = await fetch(`${basic.url}/`, { headers: auth('admin', 'pa:ss') });
      assert.equal(ok.status, 200);
      assert.match(ok.headers.get('content-security-policy')!, /default-src 'none'; script-src 'self'/);
      assert.equal((await fetch(`${basic.url}/api/reports/999999`, { headers: auth('admin', 'pa:ss') })).status, 404);
    } finally {
      await basic.close();
    }
  });
});
