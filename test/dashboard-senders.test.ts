import assert from 'node:assert/strict';
import fs from 'node:fs';
import { after, before, describe, it } from 'node:test';
import type { Browser, Page } from 'playwright-core';
import { openApp } from '../src/app.js';
import { DAY } from '../src/analyse/index.js';
import { configSchema } from '../src/config/schema.js';
import { createLogger } from '../src/log.js';
import { startWeb, type WebServer } from '../src/web/server.js';
import { Worker } from '../src/worker/worker.js';
import { bufferInput, freshStore } from './helpers/common.js';
import { dmarcXml, record } from './helpers/synth.js';

/**
 * Who is sending, on the dashboard (headless Chromium, as dashboard.test.ts) and in /metrics: a
 * report from public addresses the bundled data knows (Google, SendGrid) and one it does not.
 */
const CHROMIUM = [process.env.CHROMIUM_PATH, '/usr/bin/chromium', '/usr/bin/chromium-browser'].find((p) => p && fs.existsSync(p)) ?? null;

describe('the dashboard and /metrics name who is sending', { skip: !CHROMIUM && 'chromium is not installed' }, () => {
  let browser: Browser;
  let page: Page;
  let web: WebServer;
  const problems: string[] = [];
  const store = freshStore();
  // Two days ago: inside the recent days of /metrics, which counts as of now.
  const day = Math.floor(Date.now() / 1000 / DAY) - 2;
  const iso = new Date(day * DAY * 1000).toISOString().slice(0, 10);
  const sendgridDkim = '<dkim><domain>sendgrid.net</domain><selector>s1</selector><result>pass</result></dkim>';

  before(async () => {
    const xml = dmarcXml({
      reportId: 'who-1',
      orgName: 'google.com',
      begin: day * DAY + 3600,
      end: day * DAY + 7200,
      records: [
        record({ ip: '209.85.220.41', count: 60, dkim: 'pass', spf: 'pass' }),
        record({ ip: '167.89.100.1', count: 30, dkim: 'fail', spf: 'fail', extra: sendgridDkim }),
        record({ ip: '149.72.1.1', count: 10, dkim: 'pass', spf: 'fail', extra: sendgridDkim }),
        record({ ip: '203.0.113.66', count: 5, dkim: 'fail', spf: 'fail' }),
      ],
    });
    assert.equal((await store.ingestor.ingest(bufferInput('who.xml', xml))).leaves[0]!.status, 'stored');
    const config = configSchema.parse({ web: { listen: '127.0.0.1:0', token: 'dash-token' }, analysis: { reverse_dns: false } });
    const log = createLogger('silent');
    web = await startWeb(config, store.db, new Worker(openApp(config, { db: store.db, log, lookup: null, channels: [] })), log);
    const { chromium } = await import('playwright-core');
    browser = await chromium.launch({ executablePath: CHROMIUM!, args: ['--no-sandbox'] });
    page = await browser.newPage({ viewport: { width: 1400, height: 900 }, extraHTTPHeaders: { authorization: 'Bearer dash-token' } });
    page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
    page.on('console', (m) => m.type() === 'error' && problems.push(`console: ${m.text()}`));
    await page.goto(`${web.url}/?at=${iso}&days=7`);
    await page.waitForSelector('body[data-loaded="true"]', { timeout: 20_000 });
  });
  after(async () => {
    await browser?.close();
    await web?.close();
    store.db.close();
  });

  const cells = () =>
    page.$$eval('#sources tbody tr', (trs) => trs.map((tr) => Array.from(tr.querySelectorAll('td')).map((td) => td.textContent)));

  it('lists network, country and service per source', async () => {
    const head = await page.$$eval('#sources thead th', (ths) => ths.map((th) => th.textContent));
    assert.deepEqual(head.slice(0, 7), ['Domain', 'Source IP', 'Reverse DNS', 'Network', 'Country', 'Service', 'Messages']);
    const rows = await cells();
    assert.deepEqual(
      rows.map((r) => r.slice(1, 7)),
      [
        ['209.85.220.41', '-', 'AS15169 Google LLC', 'US', 'Google Workspace / Gmail (email provider)', '60'],
        ['167.89.100.1', '-', 'AS11377 SendGrid, Inc.', 'US', 'SendGrid (Twilio) (transactional)', '30'],
        ['149.72.1.1', '-', 'AS11377 SendGrid, Inc.', 'US', 'SendGrid (Twilio) (transactional)', '10'],
        ['203.0.113.66', '-', '-', '-', '-', '5'],
      ],
    );
    // DB-IP's attribution, wherever AS names are shown.
    assert.equal(await page.getAttribute('#sources a[href="https://db-ip.com"]', 'href'), 'https://db-ip.com');
  });

  it('filters the sources by service', async () => {
    const options = await page.$$eval('#service-filter option', (os) => os.map((o) => o.textContent));
    assert.deepEqual(options, [
      'All services',
      'Google Workspace / Gmail (60 messages)',
      'SendGrid (Twilio) (40 messages)',
      'No known service (5 messages)',
    ]);
    await page.selectOption('#service-filter', 'SendGrid (Twilio)');
    assert.deepEqual(
      (await cells()).map((r) => r[1]),
      ['167.89.100.1', '149.72.1.1'],
    );
    await page.selectOption('#service-filter', { label: 'No known service (5 messages)' });
    assert.deepEqual(
      (await cells()).map((r) => r[1]),
      ['203.0.113.66'],
    );
    await page.selectOption('#service-filter', '');
    assert.equal((await cells()).length, 4);
  });

  it('names who sent each record in the report drill-down', async () => {
    await page.locator('#reports tbody tr', { hasText: 'who-1' }).click();
    await page.waitForSelector('#detail table');
    assert.deepEqual(await page.$$eval('#detail thead th', (ths) => ths.slice(0, 3).map((th) => th.textContent)), [
      'Source IP',
      'Who',
      'Messages',
    ]);
    const rows = await page.$$eval('#detail tbody tr', (trs) =>
      trs.map((tr) => Array.from(tr.querySelectorAll('td')).map((td) => td.textContent)),
    );
    assert.deepEqual(
      rows.map((r) => [r[0], r[1]]),
      [
        ['209.85.220.41', 'Google Workspace / Gmail (email provider)'],
        ['167.89.100.1', 'SendGrid (Twilio) (transactional)'],
        ['149.72.1.1', 'SendGrid (Twilio) (transactional)'],
        ['203.0.113.66', '-'],
      ],
    );
    assert.deepEqual(problems, []);
  });

  it('/metrics: messages and pass rate per service, no label per address', async () => {
    const res = await fetch(`${web.url}/metrics`, { headers: { authorization: 'Bearer dash-token' } });
    assert.equal(res.status, 200);
    const text = await res.text();
    const samples = text.split('\n').filter((l) => l.startsWith('ruawatch_dmarc_service_'));
    assert.deepEqual(samples, [
      'ruawatch_dmarc_service_messages{service="",service_type=""} 5',
      'ruawatch_dmarc_service_messages{service="Google Workspace / Gmail",service_type="email provider"} 60',
      'ruawatch_dmarc_service_messages{service="SendGrid (Twilio)",service_type="transactional"} 40',
      'ruawatch_dmarc_service_pass_rate{service="",service_type=""} 0',
      'ruawatch_dmarc_service_pass_rate{service="Google Workspace / Gmail",service_type="email provider"} 1',
      'ruawatch_dmarc_service_pass_rate{service="SendGrid (Twilio)",service_type="transactional"} 0.250000',
    ]);
    assert.doesNotMatch(text, /167\.89\.100\.1/);
  });
});
