import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { loadConfig } from '../../src/config/load.js';
import { runCli } from '../helpers/cli.js';
import { fixture, tempDir } from '../helpers/common.js';

/** A self-signed certificate valid on 1 January 2020 only (openssl ca -selfsign -startdate/-enddate). */
const EXPIRED = `-----BEGIN CERTIFICATE-----
MIIBFTCBvAIBATAKBggqhkjOPQQDAjAXMRUwEwYDVQQDDAxleHBpcmVkLnRlc3Qw
HhcNMjAwMTAxMDAwMDAwWhcNMjAwMTAyMDAwMDAwWjAXMRUwEwYDVQQDDAxleHBp
cmVkLnRlc3QwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAASJxZ3wRAMjoE+X4e90
CahAAkFLiz4eArgzHJq73wSjh0w+s2/BZWhR5Oavr/pPMYesNa03N9jdxKRbXAqo
2dQMMAoGCCqGSM49BAMCA0gAMEUCIAqHHT7cNgHvDjBegHfQOt8gfUYFev2lr4fK
EGceFet9AiEAhwa52vasv4LTPaFmn3nT7l2tBCghMDiOGM1XH+P5+Zc=
-----END CERTIFICATE-----
`;

const MAILBOX = (name: string, extra = '') =>
  `[[mailbox]]\nname = "${name}"\nhost = "127.0.0.1"\nport = 1\nsecurity = "none"\nuser = "u"\npassword = "p"\n${extra}\n`;

/** A config file in a fresh folder, with its database beside it. */
function configFile(text: string): { dir: string; file: string } {
  const dir = tempDir();
  const file = path.join(dir, 'ruawatch.toml');
  fs.writeFileSync(file, `[database]\npath = "r.sqlite"\n\n${text}`);
  return { dir, file };
}

async function check(text: string, env: Record<string, string> = {}) {
  const { file } = configFile(text);
  return runCli(['config', 'check', '--config', file], env);
}

describe('config check: what can be known without connecting', () => {
  it('a ca_file that is missing, not a certificate, or expired, naming the mailbox by its name', async () => {
    const dir = tempDir();
    fs.writeFileSync(path.join(dir, 'text.pem'), 'not a certificate\n');
    fs.writeFileSync(path.join(dir, 'expired.pem'), EXPIRED);
    const r = await check(
      MAILBOX('dmarc', `ca_file = "${dir}/missing.pem"`) +
        MAILBOX('tlsrpt', `ca_file = "${dir}/text.pem"`) +
        MAILBOX('old', `ca_file = "${dir}/expired.pem"`),
    );
    assert.equal(r.code, 2);
    assert.equal(r.stdout, '');
    assert.match(r.stderr, new RegExp(`mailbox "dmarc"\\.ca_file: cannot read ${dir}/missing\\.pem: ENOENT`));
    assert.match(r.stderr, new RegExp(`mailbox "tlsrpt"\\.ca_file: ${dir}/text\\.pem holds no PEM certificate`));
    assert.match(r.stderr, /mailbox "old"\.ca_file: .*expired\.pem expired on Jan {2}2 00:00:00 2020 GMT \(CN=expired\.test\)/);
    assert.doesNotMatch(r.stderr, /mailbox\[/);
  });

  it('security = "none", and http:// with a token, towards a host other than loopback', async () => {
    const r = await check(
      '[[mailbox]]\nname = "dmarc"\nhost = "mail.example.com"\nport = 143\nsecurity = "none"\nuser = "u"\npassword = "p"\n\n' +
        '[alerts.email]\nhost = "smtp.example.com"\nport = 25\nsecurity = "none"\nuser = "u"\npassword = "p"\nfrom = "a@b.c"\nto = ["d@e.f"]\n\n' +
        '[alerts.matrix]\nhomeserver = "http://matrix.example.com"\naccess_token = "t"\nroom_id = "!r:example.com"\n',
    );
    assert.equal(r.code, 2);
    assert.match(
      r.stderr,
      /mailbox "dmarc"\.security: "none" sends the password in clear: allowed only for 127\.0\.0\.1, ::1 or localhost, not mail\.example\.com/,
    );
    assert.match(r.stderr, /alerts\.email\.security: "none" with a user sends the password in clear/);
    assert.match(r.stderr, /alerts\.matrix\.homeserver: sends the token in clear over http:\/\//);
    // Loopback, or email without a login, is fine.
    const ok = await check(
      '[alerts.email]\nhost = "smtp.example.com"\nport = 25\nsecurity = "none"\nfrom = "a@b.c"\nto = ["d@e.f"]\n\n' +
        '[alerts.matrix]\nhomeserver = "http://127.0.0.1:8008"\naccess_token = "t"\nroom_id = "!r:example.com"\n',
    );
    assert.equal(ok.code, 0, ok.stderr);
  });

  it('ports: out of range, and a well-known port with the other kind of security', async () => {
    const r = await check(
      '[web]\nlisten = "127.0.0.1:99999"\n\n' +
        '[[mailbox]]\nname = "dmarc"\nhost = "mail.example.com"\nport = 143\nsecurity = "tls"\nuser = "u"\npassword = "p"\n\n' +
        '[[mailbox]]\nname = "tlsrpt"\nhost = "mail.example.com"\nport = 993\nsecurity = "starttls"\nuser = "u"\npassword = "p"\n\n' +
        '[alerts.email]\nhost = "smtp.example.com"\nport = 465\nsecurity = "starttls"\nfrom = "a@b.c"\nto = ["d@e.f"]\n',
    );
    assert.equal(r.code, 2);
    assert.match(r.stderr, /web\.listen: the port is at most 65535/);
    assert.match(
      r.stderr,
      /mailbox "dmarc"\.port: 143 is IMAP without implicit TLS: set security = "starttls", or the implicit TLS port 993/,
    );
    assert.match(r.stderr, /mailbox "tlsrpt"\.port: 993 is IMAP over implicit TLS: set security = "tls"/);
    assert.match(r.stderr, /alerts\.email\.port: 465 is SMTP over implicit TLS/);
  });

  it('mailbox names: two of one name, folders that would loop, a bad key named by the mailbox', async () => {
    const r = await check(MAILBOX('dmarc', 'processed_folder = "INBOX"') + MAILBOX('DMARC') + MAILBOX('tls', 'foldr = "x"'));
    assert.equal(r.code, 2);
    assert.match(r.stderr, /mailbox "DMARC"\.name: another \[\[mailbox\]\] is named DMARC already/);
    assert.match(r.stderr, /mailbox "dmarc"\.processed_folder: is the folder read \(INBOX\)/);
    assert.match(r.stderr, /mailbox "tls"\.foldr: unknown key/);
    // Without a usable name, by its place.
    const unnamed = await check('[[mailbox]]\nhost = "127.0.0.1"\n');
    assert.match(unnamed.stderr, /mailbox #1\.name: /);
  });

  it('a database path that cannot be created or written, named, in config check and in every command that opens it', async () => {
    const dir = tempDir();
    const notDir = path.join(dir, 'file');
    fs.writeFileSync(notDir, 'x');
    const { file } = configFile('');
    fs.writeFileSync(file, `[database]\npath = "${notDir}/data/r.sqlite"\n`);
    const r = await runCli(['config', 'check', '--config', file]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, new RegExp(`database ${notDir}/data/r\\.sqlite: ${notDir} is not a folder`));
    // ingest used to fail here with exit 1.
    const ingest = await runCli(['ingest', '--config', file, fixture('dmarc-aggregate/drv_google.xml')]);
    assert.equal(ingest.code, 2, ingest.stderr);
    assert.match(ingest.stderr, /is not a folder/);
  });

  it('a secret in the file and in the environment: the environment wins, in either form', async () => {
    const dir = tempDir();
    fs.writeFileSync(path.join(dir, 'pw'), 'from-file\n');
    fs.writeFileSync(path.join(dir, 'envpw'), 'from-env-file\n');
    const file = path.join(dir, 'c.toml');
    fs.writeFileSync(file, `[[mailbox]]\nname = "dmarc"\nhost = "h"\nuser = "u"\npassword_file = "pw"\n`);
    assert.equal(loadConfig(file, { RUAWATCH_MAILBOX_DMARC_PASSWORD: 'from-env' }).config.mailbox[0]!.password, 'from-env');
    fs.writeFileSync(file, `[[mailbox]]\nname = "dmarc"\nhost = "h"\nuser = "u"\npassword = "in-file"\n`);
    const env = { RUAWATCH_MAILBOX_DMARC_PASSWORD_FILE: path.join(dir, 'envpw') };
    assert.equal(loadConfig(file, env).config.mailbox[0]!.password, 'from-env-file');
    const r = await runCli(['config', 'check', '--config', file], env);
    assert.equal(r.code, 0, r.stderr);
    assert.doesNotMatch(r.stdout, /from-env-file|in-file/);
    // Both forms in the file, or both in the environment, stay an error.
    assert.throws(
      () => loadConfig(file, { ...env, RUAWATCH_MAILBOX_DMARC_PASSWORD: 'x' }),
      /RUAWATCH_MAILBOX_DMARC_PASSWORD.* and RUAWATCH_MAILBOX_DMARC_PASSWORD_FILE both set the same secret|both set the same secret/,
    );
    fs.writeFileSync(file, `[[mailbox]]\nname = "dmarc"\nhost = "h"\nuser = "u"\npassword = "a"\npassword_file = "pw"\n`);
    assert.throws(() => loadConfig(file, {}), /mailbox "dmarc"\.password_file: set either password or password_file, not both/);
  });

  it('configuration errors exit 2 in every command that reads the configuration', async () => {
    const { file } = configFile(
      MAILBOX('dmarc', 'ca_file = "/nonexistent/ca.pem"') +
        '[alerts.email]\nhost = "127.0.0.1"\nport = 1\nsecurity = "none"\nfrom = "a@b.c"\nto = ["d@e.f"]\n',
    );
    const commands = [
      ['ingest', fixture('dmarc-aggregate/drv_google.xml')],
      ['report'],
      ['fetch'],
      ['alerts', '--dry-run'],
      ['digest', '--dry-run'],
      ['notify', 'test'],
      ['notify', 'status'],
      ['run'],
      ['config', 'check'],
    ];
    for (const argv of commands) {
      const r = await runCli([...argv, '--config', file]);
      assert.equal(r.code, 2, `${argv.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, /mailbox "dmarc"\.ca_file: cannot read \/nonexistent\/ca\.pem/, argv.join(' '));
    }
  });
});
