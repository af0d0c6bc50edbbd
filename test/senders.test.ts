import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { DAY } from '../src/analyse/index.js';
import { configSchema, type Config } from '../src/config/schema.js';
import { createEnricher } from '../src/enrich/index.js';
import { createLogger } from '../src/log.js';
import { renderDigest } from '../src/notify/render.js';
import { buildDigest, runAlerts } from '../src/pipeline/alerts.js';
import type { Db } from '../src/store/db.js';
import type { SourceTotals } from '../src/store/summary.js';
import { runCli } from './helpers/cli.js';
import { bufferInput, freshStore, tempDir } from './helpers/common.js';
import { D0, dayIso, EXPECTED, ingestDays } from './helpers/scenario.js';

/**
 * Who is sending, in findings: the five-week scenario of alerts.test.ts with the sources named by a
 * services file of the user's (its addresses are in documentation ranges, which the bundled data
 * knows nothing of), and a report from public addresses the bundled data does know.
 */

const SERVICES = `
[[service]]
id = "example-esp"
name = "Example ESP"
type = "transactional"
ip_ranges = ["198.51.100.0/24"]
spf_include = "include:_spf.esp.example"

[[service]]
id = "example-mailer"
name = "Example Mailer"
type = "marketing"
ip_ranges = ["203.0.113.0/24"]
spf_include = "include:spf.mailer.example"
`;

const names = new Map([['198.51.100.20', 'out.esp.example']]);
const lookup = async (ip: string) => names.get(ip) ?? null;
const log = createLogger('silent');

describe('findings name who is sending', () => {
  let store: ReturnType<typeof freshStore>;
  let db: Db;
  let dir: string;
  let servicesFile: string;
  const at = (D0 + 35) * DAY;
  const configWith = (enrich: Record<string, unknown>): Config => configSchema.parse({ enrich });

  before(async () => {
    store = freshStore();
    db = store.db;
    await ingestDays(store, 0, 34);
    dir = tempDir();
    servicesFile = path.join(dir, 'services.toml');
    fs.writeFileSync(servicesFile, SERVICES);
  });
  after(() => db.close());

  it('without a services file: the same findings, each source labelled by what the data knows', async () => {
    const config = configWith({});
    const plain = await runAlerts(db, config, { now: at, dryRun: true, channels: [], lookup, log });
    const enricher = createEnricher(config.enrich, { cacheDir: null });
    const r = await runAlerts(db, config, { now: at, dryRun: true, channels: [], lookup, enricher, log });
    assert.deepEqual(r.findings.map((f) => f.key).sort(), EXPECTED);
    assert.deepEqual(
      r.findings.map((f) => [f.key, f.severity]),
      plain.findings.map((f) => [f.key, f.severity]),
    );
    const nfs = r.findings.find((f) => f.kind === 'new_failing_source')!;
    assert.equal(
      nfs.summary,
      'new source 203.0.113.66 (documentation (RFC 5737); no reverse DNS; not a known mail service) sent 400 messages as example.com in the last 7 days, 0.0% passing DMARC (no DKIM signature, SPF not aligned); receivers rejected 400 and quarantined 0',
    );
    assert.equal(nfs.source_name, null);
    assert.deepEqual(
      { asn: nfs.asn, as_org: nfs.as_org, country: nfs.country, service: nfs.service, service_type: nfs.service_type },
      { asn: null, as_org: null, country: null, service: null, service_type: null },
    );
    // Findings about no single source gain nothing.
    assert.equal('service' in r.findings.find((f) => f.kind === 'tls_failures')!, false);
  });

  it('a known service not set up for the domain is an unconfigured sender; one that is set up and fails is a failure', async () => {
    const config = configWith({ services_file: servicesFile });
    const enricher = createEnricher(config.enrich, { cacheDir: null });
    const r = await runAlerts(db, config, { now: at, dryRun: true, channels: [], lookup, enricher, log });
    assert.deepEqual(r.findings.map((f) => f.key).sort(), EXPECTED);
    const byKind = Object.fromEntries(r.findings.map((f) => [f.kind, f]));

    const nfs = byKind.new_failing_source!;
    assert.equal(nfs.severity, 'warning'); // as without enrichment: p=reject
    assert.match(
      nfs.summary,
      /^new source 203\.0\.113\.66 \(Example Mailer, marketing\) sent 400 messages as example\.com .*\. An unconfigured sender: Example Mailer \(marketing\) is not set up for example\.com; if you send through it, add include:spf\.mailer\.example to the SPF record of example\.com and publish Example Mailer's DKIM keys for example\.com/,
    );
    assert.equal(nfs.details.sender, 'unconfigured_sender');
    assert.deepEqual(
      { service: nfs.service, service_type: nfs.service_type, asn: nfs.asn },
      { service: 'Example Mailer', service_type: 'marketing', asn: null },
    );

    // The ESP's broken key: its selector's finding names the source it breaks DMARC for, by who it is.
    assert.equal(byKind.pass_rate_drop, undefined);
    assert.match(
      byKind.dkim_selector_broken!.summary,
      /; seen from 198\.51\.100\.20 \(Example ESP, transactional\), where it breaks DMARC \(100\.0% -> 42\.9% passing\)$/,
    );
  });

  it('a forwarder known by its address range joins the forwarded exemption: its failures raise nothing', async () => {
    const file = path.join(dir, 'forwarder.toml');
    fs.writeFileSync(
      file,
      `[[service]]\nid = "list-host"\nname = "Example Lists"\ntype = "forwarder/list"\nip_ranges = ["203.0.113.0/24"]\n`,
    );
    const config = configWith({ services_file: file });
    const enricher = createEnricher(config.enrich, { cacheDir: null });
    for (const l of [lookup, null]) {
      const r = await runAlerts(db, config, { now: at, dryRun: true, channels: [], lookup: l, enricher, log });
      assert.deepEqual(
        r.findings.map((f) => f.key).sort(),
        EXPECTED.filter((k) => !k.startsWith('new_failing_source')),
      );
    }
  });

  it('a reverse name is shown, not taken as evidence: a sender chooses its own, and alerts do not confirm it', async () => {
    const file = path.join(dir, 'by-name.toml');
    fs.writeFileSync(
      file,
      `[[service]]\nid = "named-esp"\nname = "Named ESP"\ntype = "transactional"\nptr_domains = ["esp.example"]\nspf_include = "include:esp.example"\n`,
    );
    const config = configWith({ services_file: file });
    const enricher = createEnricher(config.enrich, { cacheDir: null });
    const asked: string[] = [];
    const claims = async (ip: string) => {
      asked.push(ip);
      return ip === '203.0.113.66' ? 'bulk.esp.example' : null;
    };
    const r = await runAlerts(db, config, { now: at, dryRun: true, channels: [], lookup: claims, enricher, log });
    const none = await runAlerts(db, config, { now: at, dryRun: true, channels: [], lookup: null, enricher, log });
    // The same findings, kinds, severities and numbers whatever the names; only the text around the addresses differs.
    const strip = (fs: typeof r.findings) => fs.map((f) => ({ ...f, summary: '', source_name: null }));
    assert.deepEqual(strip(r.findings), strip(none.findings));
    const nfs = r.findings.find((f) => f.kind === 'new_failing_source')!;
    assert.equal(nfs.service, null);
    assert.equal(nfs.details.sender, undefined);
    assert.equal(nfs.source_name, 'bulk.esp.example');
    assert.match(
      nfs.summary,
      /^new source 203\.0\.113\.66 \(documentation \(RFC 5737\); bulk\.esp\.example; not a known mail service\) sent 400/,
    );
    // Looked up: the addresses the messages mention, each once.
    assert.deepEqual([...asked].sort(), [...new Set(asked)].sort());
    assert.ok(asked.includes('203.0.113.66') && asked.includes('198.51.100.20'), asked.join(' '));
  });

  it("the digest's failing sources say who they are", () => {
    const config = configWith({ services_file: servicesFile });
    const enricher = createEnricher(config.enrich, { cacheDir: null });
    const plain = buildDigest(db, 'daily', at);
    const d = buildDigest(db, 'daily', at, enricher);
    const failing = d.domains.find((x) => x.domain === 'example.com')!.failing;
    assert.deepEqual(
      failing.map((f) => [f.ip, f.service, f.service_type, f.who]),
      [
        ['198.51.100.20', 'Example ESP', 'transactional', 'Example ESP, transactional'],
        ['203.0.113.66', 'Example Mailer', 'marketing', 'Example Mailer, marketing'],
        ['192.0.2.200', null, null, 'documentation (RFC 5737); not a known mail service'],
      ],
    );
    // The same sources, in the same order, as without enrichment.
    assert.deepEqual(
      failing.map((f) => f.ip),
      plain.domains.find((x) => x.domain === 'example.com')!.failing.map((f) => f.ip),
    );
    const text = renderDigest(d, at).text;
    assert.match(text, /\n {4}203\.0\.113\.66 \(Example Mailer, marketing\): 80 of 80 failing\n/);
    assert.doesNotMatch(renderDigest(plain, at).text, /Example/);
  });

  it('ruawatch alerts --dry-run --json: source findings carry asn, as_org, country, service, service_type', async () => {
    const res = await runCli(['alerts', '--db', store.file, '--at', dayIso(D0 + 34), '--dry-run', '--json'], {
      RUAWATCH_ANALYSIS_REVERSE_DNS: 'false',
      RUAWATCH_ENRICH_SERVICES_FILE: servicesFile,
    });
    assert.equal(res.code, 0, res.stderr);
    const out = JSON.parse(res.stdout) as { findings: Record<string, unknown>[] };
    const nfs = out.findings.find((f) => f.kind === 'new_failing_source')!;
    assert.deepEqual(
      ['asn', 'as_org', 'country', 'service', 'service_type'].map((k) => [k, nfs[k]]),
      [
        ['asn', null],
        ['as_org', null],
        ['country', null],
        ['service', 'Example Mailer'],
        ['service_type', 'marketing'],
      ],
    );
    // Without reverse DNS, one evaluation labels the sources as the rules name them.
    assert.match(
      String(nfs.summary),
      /^new source 203\.0\.113\.66 \(Example Mailer, marketing\) sent 400 messages .*An unconfigured sender/,
    );
    const selector = out.findings.find((f) => f.kind === 'dkim_selector_broken')!;
    assert.match(String(selector.summary), /seen from 198\.51\.100\.20 \(Example ESP, transactional\), where it breaks DMARC/);
    assert.equal(selector.source_name, null);
    // [enrich] enabled = false: the findings as before, without the fields.
    const off = await runCli(['alerts', '--db', store.file, '--at', dayIso(D0 + 34), '--dry-run', '--json'], {
      RUAWATCH_ANALYSIS_REVERSE_DNS: 'false',
      RUAWATCH_ENRICH_ENABLED: 'false',
    });
    const plain = JSON.parse(off.stdout) as { findings: Record<string, unknown>[] };
    assert.equal('service' in plain.findings.find((f) => f.kind === 'new_failing_source')!, false);
  });
});

describe('ruawatch report --enrich', () => {
  let file: string;
  before(async () => {
    const s = freshStore();
    const xml = fs.readFileSync(new URL('../../fixtures/dmarc-aggregate/pdm_nice-input.xml', import.meta.url));
    const res = await s.ingestor.ingest(bufferInput('pdm_nice-input.xml', xml));
    assert.deepEqual(
      res.leaves.map((l) => l.status),
      ['stored'],
    );
    s.db.close();
    file = s.file;
  });

  type Source = Pick<SourceTotals, 'ip' | 'asn' | 'as_org' | 'country' | 'service' | 'service_type'>;
  const sourcesOf = (stdout: string) =>
    (JSON.parse(stdout) as { domains: { domain: string; sources: Source[] }[] }).domains.flatMap((d) => d.sources);

  it('--json: asn, as_org, country, service and service_type per source, from the bundled data', async () => {
    const res = await runCli(['report', '--db', file, '--json', '--enrich']);
    assert.equal(res.code, 0, res.stderr);
    const byIp = new Map(sourcesOf(res.stdout).map((s) => [s.ip, s]));
    assert.deepEqual(byIp.get('209.85.220.41'), {
      ...byIp.get('209.85.220.41'),
      asn: 15169,
      as_org: 'Google LLC',
      country: 'US',
      service: 'Google Workspace / Gmail',
      service_type: 'email provider',
    });
    assert.equal(byIp.get('2607:f8b0:4864:20::132')?.asn, 15169);
    // AWS's network is hosting; SES's DKIM domain (amazonses.com) names the service.
    assert.equal(byIp.get('54.240.48.94')?.service, 'Amazon SES');
    assert.equal(byIp.get('54.240.48.94')?.service_type, 'transactional');
  });

  it('without --enrich: the same totals, none of the fields; the table gains a "who" column with it', async () => {
    const plain = await runCli(['report', '--db', file, '--json']);
    const enriched = await runCli(['report', '--db', file, '--json', '--enrich']);
    const strip = (s: Source) => {
      const { asn: _a, as_org: _o, country: _c, service: _s, service_type: _t, ...rest } = s;
      return rest;
    };
    assert.deepEqual(sourcesOf(plain.stdout), sourcesOf(enriched.stdout).map(strip));
    for (const s of sourcesOf(plain.stdout)) assert.equal('asn' in s, false);
    const table = await runCli(['report', '--db', file, '--enrich', '--domain', 'example.com']);
    assert.match(table.stdout, / {2}who\n/);
    assert.match(table.stdout, /209\.85\.220\.41 .* Google Workspace \/ Gmail \(email provider\)\n/);
    assert.doesNotMatch((await runCli(['report', '--db', file])).stdout, /who/);
  });

  it('--enrich with [enrich] enabled = false is a configuration error', async () => {
    const res = await runCli(['report', '--db', file, '--enrich'], { RUAWATCH_ENRICH_ENABLED: 'false' });
    assert.equal(res.code, 2);
    assert.match(res.stderr, /enrichment is switched off/);
  });
});
