/**
 * IMAP with OAuth2 bearer tokens, for real: Dovecot's oauth2 password database checks every token
 * against the introspection endpoint of a loopback stand-in for the Microsoft identity platform and
 * Google's token endpoint (test/helpers/oauth-server.ts), which checks each token request field by
 * field (RFC 6749, RFC 7523) and issues short-lived tokens.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import Database from 'better-sqlite3';
import { loadConfig } from '../src/config/load.js';
import { createLogger } from '../src/log.js';
import { fetchAll } from '../src/pipeline/fetch.js';
import { Ingestor } from '../src/pipeline/ingest.js';
import { mailboxesOf } from '../src/sources/mailboxes.js';
import { openDb } from '../src/store/db.js';
import { MailboxStore } from '../src/store/mailboxes.js';
import { ReportStore } from '../src/store/reports.js';
import { defaultLimits } from '../src/unpack/limits.js';
import { CLI, tempDir } from './helpers/common.js';
import { OAuthServer, testCertificate, testServiceAccount } from './helpers/oauth-server.js';
import { findDovecot, startDovecot, type Dovecot } from '../devtools/dovecot.js';
import { base64Lines, dmarcXml, gzip, mail, record } from './helpers/synth.js';

const haveDovecot = findDovecot() !== null;
if (!haveDovecot && process.env.CI) throw new Error('dovecot is missing under CI');

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

type Summary = {
  inputs: number;
  reports: Record<string, number>;
  duplicates: number;
  failed: { input: string; error: string; code: string }[];
};

function cli(args: string[], env: Record<string, string> = {}): Promise<Run> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [CLI, ...args], { env: { PATH: process.env.PATH ?? '', ...env } });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    p.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

function summaryOf(r: Run): Summary {
  try {
    return JSON.parse(r.stdout) as Summary;
  } catch {
    throw new Error(`no JSON summary (exit ${r.code}):\n${r.stdout}\n${r.stderr}`);
  }
}

function reportMail(id: string): string {
  return mail([
    {
      headers:
        'Content-Type: application/gzip\r\nContent-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename="r.xml.gz"',
      body: base64Lines(gzip(dmarcXml({ reportId: id, records: [record({ ip: '192.0.2.7' })] }))),
    },
  ]);
}

const TENANT = 'contoso.onmicrosoft.com';

describe('IMAP with OAuth2 tokens against a real Dovecot (oauth2 passdb)', { skip: !haveDovecot && 'dovecot is not installed' }, () => {
  let dovecot: Dovecot;
  let oauth: OAuthServer;
  const cert = testCertificate();
  const sa = testServiceAccount('ruawatch@ruawatch-test.iam.gserviceaccount.com');
  const users = [
    'ms-secret@example.com',
    'ms-cert@example.com',
    'google@example.com',
    'renew@example.com',
    'denied@example.com',
    'command@example.com',
    'file@example.com',
    'probe@example.com',
  ];

  before(async () => {
    oauth = await new OAuthServer().start();
    oauth.microsoft.push(
      { tenant: TENANT, clientId: 'app-secret', secret: 's3cr3t-value', mailboxes: ['ms-secret@example.com'] },
      { tenant: TENANT, clientId: 'app-command', secret: 'command-secret', mailboxes: ['command@example.com'] },
      { tenant: TENANT, clientId: 'app-file', secret: 'file-secret', mailboxes: ['file@example.com'] },
      { tenant: TENANT, clientId: 'app-probe', secret: 'probe-secret', mailboxes: ['probe@example.com'] },
      { tenant: TENANT, clientId: 'app-cert', certificate: cert.certificate, mailboxes: ['ms-cert@example.com'] },
      { tenant: TENANT, clientId: 'app-renew', secret: 'renew-secret', mailboxes: ['renew@example.com'] },
      // Consented in Entra, but never given the mailbox in Exchange (no Add-MailboxPermission).
      { tenant: TENANT, clientId: 'app-denied', secret: 'denied-secret', mailboxes: ['someone-else@example.com'] },
    );
    oauth.google.push({ ...sa.account, delegated: ['https://mail.google.com/'], users: ['google@example.com'] });
    dovecot = await startDovecot(users, { oauth2: { introspectionUrl: oauth.introspectionUrl } });
  });
  after(async () => {
    await dovecot?.stop();
    await oauth?.close();
  });

  function writeConfig(user: string, auth: string): { config: string; db: string; dir: string } {
    const dir = tempDir();
    const db = path.join(dir, 'r.sqlite');
    const config = path.join(dir, 'c.toml');
    fs.writeFileSync(
      config,
      `[database]\npath = "${db}"\n\n[ingest]\nworkers = 1\n\n[[mailbox]]\nname = "dmarc"\nhost = "127.0.0.1"\nport = ${dovecot.port}\nsecurity = "none"\nuser = "${user}"\n${auth}`,
    );
    return { config, db, dir };
  }

  function microsoft(clientId: string, extra: string): string {
    return `auth = "microsoft"\ntenant_id = "${TENANT}"\nclient_id = "${clientId}"\ntoken_url = "${oauth.microsoftTokenUrl(TENANT)}"\n${extra}`;
  }

  const loginsBy = (user: string) =>
    fs
      .readFileSync(path.join(dovecot.dir, 'dovecot.log'), 'utf8')
      .split('\n')
      .filter((l) => l.includes('imap-login: Info: Login:') && l.includes(`user=<${user}>`));

  it('Microsoft 365 with a client secret: a client-credentials token for Exchange Online, logged in with XOAUTH2', async () => {
    const user = 'ms-secret@example.com';
    await dovecot.append(user, reportMail('ms-1'));
    await dovecot.append(user, reportMail('ms-2'));
    const { config } = writeConfig(user, microsoft('app-secret', 'client_secret = "s3cr3t-value"\n'));
    const r = await cli(['fetch', '--config', config, '--json']);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.equal(summaryOf(r).reports.dmarc, 2);
    assert.deepEqual([await dovecot.count(user, 'INBOX'), await dovecot.count(user, 'Processed')], [0, 2]);
    const asked = oauth.requests.filter((q) => q.endpoint === 'microsoft' && q.ok);
    assert.ok(asked.some((q) => q.credential === 'secret' && q.grant === 'client_credentials'));
    const issued = oauth.issuedFor('app-secret');
    assert.deepEqual(
      [...new Set(issued.map((t) => t.resource))],
      ['https://outlook.office365.com'],
      'scope https://outlook.office365.com/.default',
    );
    assert.match(loginsBy(user).join('\n'), /method=XOAUTH2/);
    assert.deepEqual(oauth.violations, []);
  });

  it('Microsoft 365 with a certificate: a PS256 client assertion (RFC 7523) signed with its key', async () => {
    const user = 'ms-cert@example.com';
    await dovecot.append(user, reportMail('cert-1'));
    const { config } = writeConfig(
      user,
      microsoft('app-cert', `certificate_file = "${cert.certFile}"\nprivate_key_file = "${cert.keyFile}"\n`),
    );
    const r = await cli(['fetch', '--config', config, '--json']);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.equal(summaryOf(r).reports.dmarc, 1);
    assert.ok(oauth.requests.some((q) => q.endpoint === 'microsoft' && q.credential === 'assertion' && q.ok));
    assert.deepEqual(oauth.violations, []);
  });

  it('Google Workspace: a service account with domain-wide delegation, sub = the mailbox, scope https://mail.google.com/', async () => {
    const user = 'google@example.com';
    await dovecot.append(user, reportMail('g-1'));
    const { config } = writeConfig(
      user,
      `auth = "google"\nservice_account_key_file = "${sa.keyFile}"\ntoken_url = "${oauth.googleTokenUrl}"\n`,
    );
    const r = await cli(['fetch', '--config', config, '--json']);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.equal(summaryOf(r).reports.dmarc, 1);
    assert.ok(oauth.requests.some((q) => q.endpoint === 'google' && q.grant === 'urn:ietf:params:oauth:grant-type:jwt-bearer' && q.ok));
    assert.deepEqual(
      oauth.issuedFor(sa.account.clientId).map((t) => [t.resource, t.mailboxes[0]]),
      [['https://mail.google.com/', user]],
    );
    assert.deepEqual(oauth.violations, []);
  });

  it('keeps a token across passes, renews it before it expires, and at once when the server refuses it', async () => {
    const user = 'renew@example.com';
    oauth.lifetimeSeconds = 8;
    try {
      const { config, db } = writeConfig(user, microsoft('app-renew', 'client_secret = "renew-secret"\n'));
      const { config: cfg } = loadConfig(config, {});
      const log = createLogger('silent');
      const store = openDb(db);
      const pass = async () => {
        const r = await fetchAll(mailboxesOf(cfg, log), {
          command: 'fetch',
          ingestor: new Ingestor(new ReportStore(store), defaultLimits, log),
          positions: new MailboxStore(store),
          limits: defaultLimits,
          log,
        });
        assert.deepEqual(r.mailboxErrors, []);
        return r.summary;
      };
      const asked = () => oauth.issuedFor('app-renew').length;
      await dovecot.append(user, reportMail('r-1'));
      assert.equal((await pass()).reports.dmarc, 1);
      assert.equal(asked(), 1);
      // Within its life (8 s, renewed 2 s before the end): the same token, nothing asked.
      await dovecot.append(user, reportMail('r-2'));
      assert.equal((await pass()).reports.dmarc, 1);
      assert.equal(asked(), 1);
      // Past 6 s: a new one.
      await new Promise((r) => setTimeout(r, 6200));
      await dovecot.append(user, reportMail('r-3'));
      assert.equal((await pass()).reports.dmarc, 1);
      assert.equal(asked(), 2);
      // Revoked (a permission removed and granted again, a token cut short): Dovecot says
      // AUTHENTICATIONFAILED, and the login is tried once more with a new token.
      oauth.revokeAll();
      const refusedBefore = oauth.introspections.filter((i) => !i.active).length;
      await dovecot.append(user, reportMail('r-4'));
      assert.equal((await pass()).reports.dmarc, 1);
      assert.equal(asked(), 3);
      assert.equal(oauth.introspections.filter((i) => !i.active).length, refusedBefore + 1);
      store.close();
      assert.equal(new Database(db, { readonly: true }).prepare('SELECT COUNT(*) AS n FROM reports').pluck().get(), 4);
      assert.deepEqual(oauth.violations, []);
    } finally {
      oauth.lifetimeSeconds = 3600;
    }
  });

  it('a token issued for an app without access to the mailbox: one login refused, no loop, and what to grant', async () => {
    const user = 'denied@example.com';
    await dovecot.append(user, reportMail('d-1'));
    const { config } = writeConfig(user, microsoft('app-denied', 'client_secret = "denied-secret"\n'));
    const r = await cli(['fetch', '--config', config, '--json']);
    assert.equal(r.code, 1);
    const f = summaryOf(r).failed[0]!;
    assert.equal(f.code, 'E_IMAP');
    assert.match(
      f.error,
      /authentication failed for denied@example\.com with a new access token from the Microsoft identity platform \(tenant contoso\.onmicrosoft\.com, client app-denied\)/,
    );
    assert.match(f.error, /IMAP\.AccessAsApp.*New-ServicePrincipal.*Add-MailboxPermission/);
    assert.equal(oauth.issuedFor('app-denied').length, 1, 'a new token refused is not asked for again within the pass');
    assert.equal(await dovecot.count(user, 'INBOX'), 1);
  });

  it('a wrong client secret: the identity platform refusal, its first line only, and what to check (exit 1)', async () => {
    const { config } = writeConfig('ms-secret@example.com', microsoft('app-secret', 'client_secret = "the-secret-id"\n'));
    const r = await cli(['fetch', '--config', config, '--json']);
    assert.equal(r.code, 1);
    const f = summaryOf(r).failed[0]!;
    assert.equal(f.code, 'E_AUTH');
    assert.match(
      f.error,
      /^mailbox dmarc \(127\.0\.0\.1\): the Microsoft identity platform \(http:\/\/127\.0\.0\.1:\d+\) refused the token request: invalid_client: AADSTS7000215: Invalid client secret provided\./,
    );
    assert.doesNotMatch(f.error, /Trace ID/);
    assert.match(f.error, /give the secret's Value, not its Secret ID/);
  });

  it('a token command (a curl to the token endpoint), a token file, and a refused token in the file named as such', async () => {
    const form = (app: string) =>
      `client_id=app-${app}&client_secret=${app}-secret&grant_type=client_credentials&scope=${encodeURIComponent('https://outlook.office365.com/.default')}`;
    const cmdUser = 'command@example.com';
    await dovecot.append(cmdUser, reportMail('c-1'));
    const { config } = writeConfig(
      cmdUser,
      `auth = "command"\ntoken_command = ["curl", "-sS", "--fail-with-body", "-d", "${form('command')}", "${oauth.microsoftTokenUrl(TENANT)}"]\n`,
    );
    const r = await cli(['fetch', '--config', config, '--json']);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.equal(summaryOf(r).reports.dmarc, 1);

    // A file some other process keeps fresh: here, one token written by the test.
    const fileUser = 'file@example.com';
    await dovecot.append(fileUser, reportMail('f-1'));
    const res = await fetch(oauth.microsoftTokenUrl(TENANT), {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: form('file'),
    });
    const tokenFile = path.join(tempDir(), 'token');
    fs.writeFileSync(tokenFile, `${((await res.json()) as { access_token: string }).access_token}\n`);
    const { config: fileConfig } = writeConfig(fileUser, `auth = "file"\ntoken_path = "${tokenFile}"\n`);
    const ok = await cli(['fetch', '--config', fileConfig, '--json']);
    assert.equal(ok.code, 0, ok.stdout + ok.stderr);
    assert.equal(summaryOf(ok).reports.dmarc, 1);
    // The token in the file revoked and not replaced: said plainly.
    oauth.revokeAll();
    await dovecot.append(fileUser, reportMail('f-2'));
    const refused = await cli(['fetch', '--config', fileConfig, '--json']);
    assert.equal(refused.code, 1);
    assert.match(summaryOf(refused).failed[0]!.error, /the token in it was refused by the server, and the file has not been renewed since/);
    assert.deepEqual(oauth.violations, []);
  });

  it('never logs a secret, a token or an assertion, even at trace level', async () => {
    const user = 'ms-cert@example.com';
    await dovecot.append(user, reportMail('log-1'));
    const { config } = writeConfig(
      user,
      microsoft('app-cert', `certificate_file = "${cert.certFile}"\nprivate_key_file = "${cert.keyFile}"\n`),
    );
    fs.appendFileSync(config, '\n[log]\nlevel = "trace"\n');
    const r = await cli(['fetch', '--config', config, '--json']);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stderr, /access token obtained/);
    for (const t of oauth.issuedFor('app-cert')) assert.ok(!r.stderr.includes(t.token), 'an access token was logged');
    const key = fs.readFileSync(cert.keyFile, 'utf8').split('\n')[1]!;
    assert.ok(!r.stderr.includes(key), 'the private key was logged');
    assert.ok(!/eyJ[A-Za-z0-9_-]{20,}\.[A-Za-z0-9_-]{20,}\./.test(r.stderr), 'a JWT was logged');
    const check = await cli(['config', 'check', '--config', config]);
    assert.equal(check.code, 0, check.stderr);
    assert.match(check.stdout, /"private_key": "\[redacted\]"/);
    assert.ok(!check.stdout.includes(key));
  });

  it('config check --connect: whether a token could be had and the mailbox opened, for each mailbox', async () => {
    const user = 'probe@example.com';
    await dovecot.append(user, reportMail('probe-1'));
    const { config } = writeConfig(user, microsoft('app-probe', 'client_secret = "probe-secret"\n'));
    fs.appendFileSync(
      config,
      `\n[[mailbox]]\nname = "wrong-secret"\nhost = "127.0.0.1"\nport = ${dovecot.port}\nsecurity = "none"\nuser = "${user}"\n${microsoft('app-probe', 'client_secret = "wrong"\n')}` +
        `\n[[mailbox]]\nname = "denied"\nhost = "127.0.0.1"\nport = ${dovecot.port}\nsecurity = "none"\nuser = "denied@example.com"\n${microsoft('app-denied', 'client_secret = "denied-secret"\n')}`,
    );
    const r = await cli(['config', 'check', '--config', config, '--connect', '--json']);
    assert.equal(r.code, 1, r.stderr);
    const out = JSON.parse(r.stdout) as {
      mailboxes: {
        name: string;
        ok: boolean;
        error?: string;
        token?: { source: string; expires_in_seconds?: number; error?: string };
        folders: { role: string; exists: boolean; messages?: number }[];
      }[];
    };
    const [good, wrong, denied] = out.mailboxes;
    assert.equal(good!.ok, true);
    assert.equal(good!.token!.source, 'the Microsoft identity platform (tenant contoso.onmicrosoft.com, client app-probe)');
    assert.ok(good!.token!.expires_in_seconds! > 3500);
    assert.deepEqual(
      good!.folders.map((f) => [f.role, f.exists, f.messages]),
      [
        ['folder', true, 1],
        ['processed_folder', false, undefined],
        ['invalid_folder', false, undefined],
      ],
    );
    assert.equal(wrong!.ok, false);
    assert.match(wrong!.token!.error!, /AADSTS7000215/);
    assert.equal(denied!.ok, false);
    assert.ok(denied!.token!.expires_in_seconds! > 3500, 'a token was had');
    assert.match(denied!.error!, /^authentication failed for denied@example\.com with a new access token/);
    // The same, for a person.
    const text = await cli(['config', 'check', '--config', config, '--connect']);
    assert.match(
      text.stdout,
      /mailbox dmarc \(127\.0\.0\.1:\d+, security = "none"\): logged in as probe@example\.com with a token from the Microsoft identity platform \(tenant contoso\.onmicrosoft\.com, client app-probe\) \(good for \d+ s\) without TLS/,
    );
    assert.match(
      text.stdout,
      /mailbox wrong-secret \(.*\): FAILED: no access token: the Microsoft identity platform \(http:\/\/127\.0\.0\.1:\d+\) refused the token request: invalid_client: AADSTS7000215/,
    );
    assert.ok(!r.stdout.includes('probe-secret'));
    for (const t of oauth.issuedFor('app-probe')) assert.ok(!r.stdout.includes(t.token));
    assert.equal(await dovecot.count(user, 'INBOX'), 1, 'nothing moved');
  });

  it('OAUTHBEARER (RFC 7628) where the server offers it, as Gmail does', async () => {
    const other = await startDovecot(['bearer@example.com'], {
      oauth2: { introspectionUrl: oauth.introspectionUrl, mechanisms: ['oauthbearer'] },
    });
    try {
      oauth.google[0]!.users.push('bearer@example.com');
      await other.append('bearer@example.com', reportMail('b-1'));
      const dir = tempDir();
      const config = path.join(dir, 'c.toml');
      fs.writeFileSync(
        config,
        `[database]\npath = "${path.join(dir, 'r.sqlite')}"\n\n[[mailbox]]\nname = "gmail"\nhost = "127.0.0.1"\nport = ${other.port}\nsecurity = "none"\nuser = "bearer@example.com"\nauth = "google"\nservice_account_key_file = "${sa.keyFile}"\ntoken_url = "${oauth.googleTokenUrl}"\n`,
      );
      const r = await cli(['fetch', '--config', config, '--json']);
      assert.equal(r.code, 0, r.stdout + r.stderr);
      assert.equal(summaryOf(r).reports.dmarc, 1);
      assert.match(fs.readFileSync(path.join(other.dir, 'dovecot.log'), 'utf8'), /Login: user=<bearer@example\.com>, method=OAUTHBEARER/);
    } finally {
      await other.stop();
    }
  });
});
