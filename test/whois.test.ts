import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { describe, it } from 'node:test';
import { CLI, fixture, tempDir } from './helpers/common.js';

function run(args: string[], opts: { env?: Record<string, string>; nodeArgs?: string[] } = {}) {
  const env: Record<string, string> = { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp', ...opts.env };
  const r = spawnSync(process.execPath, [...(opts.nodeArgs ?? []), CLI, ...args], { env, encoding: 'utf8' });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

interface WhoisJson {
  results: {
    ip: string;
    asn: number | null;
    as_org: string | null;
    country: string | null;
    special: string | null;
    service: string | null;
    service_type: string | null;
    matched_by: string | null;
    ptr: string | null;
    ptr_confirmed: boolean | null;
  }[];
  data: { kind: string; format: string; source: string; built: string | null }[];
}

describe('ruawatch whois', () => {
  it('prints network, country and service of each address from the bundled data', () => {
    const dir = tempDir();
    const r = run([
      'whois',
      '--no-dns',
      '--json',
      '--db',
      path.join(dir, 'r.sqlite'),
      '8.8.8.8',
      '::ffff:167.89.0.1',
      '2a00:1450:4864:20::12d',
      '10.0.0.1',
    ]);
    assert.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout) as WhoisJson;
    const row = (i: number) => {
      const x = out.results[i]!;
      return [x.ip, x.asn, x.as_org, x.country, x.special, x.service, x.service_type, x.matched_by, x.ptr, x.ptr_confirmed];
    };
    assert.deepEqual(row(0), ['8.8.8.8', 15169, 'Google LLC', 'US', null, 'Google Workspace / Gmail', 'email provider', 'asn', null, null]);
    assert.deepEqual(row(1), ['167.89.0.1', 11377, 'SendGrid, Inc.', 'US', null, 'SendGrid (Twilio)', 'transactional', 'asn', null, null]);
    assert.deepEqual(row(2), [
      '2a00:1450:4864:20::12d',
      15169,
      'Google LLC',
      'IE',
      null,
      'Google Workspace / Gmail',
      'email provider',
      'asn',
      null,
      null,
    ]);
    assert.deepEqual(row(3), ['10.0.0.1', null, null, null, 'private (RFC 1918)', null, null, null, null, null]);
    assert.deepEqual(
      out.data.map((d) => [d.kind, d.format]),
      [
        ['asn', 'table'],
        ['country', 'mmdb'],
      ],
    );
    // Nothing was written: the bundled data needs no cache.
    assert.deepEqual(fs.readdirSync(dir), []);

    const text = run(['whois', '--no-dns', '--dkim', 'pm.mtasv.net', '198.51.100.20']);
    assert.equal(text.code, 0, text.stderr);
    const unknown = run(['whois', '--no-dns', '203.0.112.1']);
    assert.equal(unknown.code, 0, unknown.stderr);
    assert.match(
      text.stdout,
      /^198\.51\.100\.20\n {2}special {3}documentation \(RFC 5737\)\n {2}service {3}Postmark \(ActiveCampaign\) \(transactional; by DKIM domain mtasv\.net\)\n/,
    );
    assert.match(
      unknown.stdout,
      /^203\.0\.112\.1\n {2}network {3}unknown \(in no range of the data\)\n {2}country {3}unknown\n {2}reverse {3}not looked up\n {2}service {3}not a known mail service\n/,
    );
    assert.match(
      text.stdout,
      /\ndata: asn from @ip-location-db\/asn 2\.3\.\d+, built \d{4}-\d{2}-\d{2}; country from @ip-location-db\/geo-whois-asn-country-mmdb /,
    );
  });

  it('uses the [enrich] files of the configuration, and refuses what is not an address', () => {
    const dir = tempDir();
    fs.writeFileSync(path.join(dir, 'asn.csv'), '192.0.2.0,192.0.2.255,64500,Our Test Net\n');
    fs.writeFileSync(
      path.join(dir, 'services.toml'),
      '[[service]]\nid = "relay"\nname = "Office relay"\ntype = "own"\nip_ranges = ["192.0.2.0/25"]\n',
    );
    const config = path.join(dir, 'ruawatch.toml');
    fs.writeFileSync(
      config,
      `[database]\npath = "${path.join(dir, 'db', 'r.sqlite')}"\n[enrich]\nasn_files = ["${path.join(dir, 'asn.csv')}"]\nservices_file = "${path.join(dir, 'services.toml')}"\n`,
    );
    const r = run(['whois', '--config', config, '--no-dns', '--json', '192.0.2.7']);
    assert.equal(r.code, 0, r.stderr);
    const x = (JSON.parse(r.stdout) as WhoisJson).results[0]!;
    // A documentation address: special, so no network, but the user's range still names it.
    assert.deepEqual([x.asn, x.special, x.service, x.matched_by], [null, 'documentation (RFC 5737)', 'Office relay', 'ip_range']);
    // The CSV was compiled and cached beside the database.
    assert.equal(fs.readdirSync(path.join(dir, 'db')).filter((f) => f.endsWith('.rwrt')).length, 1);

    const bad = run(['whois', '--no-dns', 'mail.example.com']);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /"mail\.example\.com" is not an IP address/);
    const off = run(['whois', '--no-dns', '8.8.8.8'], { env: { RUAWATCH_ENRICH_ENABLED: 'false' } });
    assert.equal(off.code, 2);
    assert.match(off.stderr, /enrichment is switched off/);
  });

  it('is the only command that loads the enrichment code: `report` and `ingest` do not', () => {
    const dir = tempDir();
    const log = path.join(dir, 'loaded.txt');
    // A module loader hook that notes every module under src/enrich/ the process loads.
    const hooks = path.join(dir, 'hooks.mjs');
    fs.writeFileSync(
      hooks,
      `import fs from 'node:fs';
export async function load(url, context, next) {
  if (url.includes('/src/enrich/')) fs.appendFileSync(${JSON.stringify(log)}, url + '\\n');
  return next(url, context);
}`,
    );
    const register = path.join(dir, 'register.mjs');
    fs.writeFileSync(register, `import { register } from 'node:module';\nregister(${JSON.stringify(pathToFileURL(hooks).href)});\n`);
    const nodeArgs = ['--import', pathToFileURL(register).href];
    const db = path.join(dir, 'r.sqlite');
    const loaded = () => (fs.existsSync(log) ? fs.readFileSync(log, 'utf8').trim().split('\n').length : 0);
    assert.equal(run(['ingest', '--db', db, fixture('dmarc-aggregate/drv_google.xml')], { nodeArgs }).code, 0);
    assert.equal(run(['report', '--db', db, '--json'], { nodeArgs }).code, 0);
    assert.equal(loaded(), 0, fs.existsSync(log) ? fs.readFileSync(log, 'utf8') : '');
    assert.equal(run(['whois', '--no-dns', '8.8.8.8'], { nodeArgs }).code, 0);
    assert.ok(loaded() > 0, 'whois loads src/enrich/');
  });
});
