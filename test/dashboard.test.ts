import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Browser, Page } from 'playwright-core';
import { openApp } from '../src/app.js';
import { DAY } from '../src/analyse/index.js';
import { configSchema } from '../src/config/schema.js';
import { createLogger } from '../src/log.js';
import { runAlerts } from '../src/pipeline/alerts.js';
import { startWeb, type WebServer } from '../src/web/server.js';
import { Worker } from '../src/worker/worker.js';
import { bufferInput, freshStore, ROOT } from './helpers/common.js';
import { D0, ingestDays } from './helpers/scenario.js';
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
    const config = configSchema.parse({ web: { listen: '127.0.0.1:0', token: 'dash-token' }, analysis: { reverse_dns: false } });
    const log = createLogger('silent');
    const names = new Map([['198.51.100.20', 'out.esp.example']]);
    await runAlerts(store.db, config, {
      now: (D0 + 35) * DAY,
      dryRun: false,
      channels: [],
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
    const spoofer = rows.find((r) => r[1] === '203.0.113.66')!;
    assert.deepEqual([spoofer[4], spoofer[5]], ['0.0%', 'new']);
  });

  it('shows the open alerts', async () => {
    const kinds = await page.$$eval('#alerts-open tbody tr td:nth-child(2)', (tds) => tds.map((td) => td.textContent).sort());
    assert.deepEqual(kinds, ['dkim_selector_broken', 'new_failing_source', 'pass_rate_drop', 'tls_failures']);
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
