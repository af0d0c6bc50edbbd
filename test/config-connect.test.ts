import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { PASSWORD, findDovecot, startDovecot, type Dovecot } from '../devtools/dovecot.js';
import type { Connections } from '../src/cli/connect-check.js';
import { startDiscord, startMatrix, startSmtp, type DiscordStub, type MatrixStub, type SmtpSink } from './helpers/chat-servers.js';
import { runCli } from './helpers/cli.js';
import { tempDir } from './helpers/common.js';
import { dmarcXml, mail } from './helpers/synth.js';

const haveDovecot = findDovecot() !== null;
if (!haveDovecot && process.env.CI) throw new Error('dovecot is missing under CI');

describe('config check --connect', { skip: !haveDovecot && 'dovecot is not installed' }, () => {
  let dovecot: Dovecot;
  let smtp: SmtpSink;
  let matrix: MatrixStub;
  let discord: DiscordStub;
  before(async () => {
    [dovecot, smtp, matrix, discord] = await Promise.all([
      startDovecot(['dmarc@example.com', 'tls@example.com']),
      startSmtp(),
      startMatrix({ token: 'syt_token', roomId: '!alerts:example.org' }),
      startDiscord({ webhookId: '123456789012345678', webhookToken: 'hook-token', botToken: 'bot.token', channelId: '987654321098765432' }),
    ]);
    await dovecot.append('dmarc@example.com', mail([{ headers: 'Content-Type: text/xml', body: dmarcXml({ reportId: 'waiting' }) }]));
    const client = dovecot.client('dmarc@example.com');
    await client.connect();
    await client.mailboxCreate('Processed');
    await client.logout();
    await dovecot.append(
      'dmarc@example.com',
      mail([{ headers: 'Content-Type: text/xml', body: dmarcXml({ reportId: 'done' }) }]),
      'Processed',
    );
  });
  after(() => Promise.all([dovecot?.stop(), smtp?.close(), matrix?.close(), discord?.close()]));

  function config(extra = ''): string {
    const file = path.join(tempDir(), 'ruawatch.toml');
    fs.writeFileSync(
      file,
      `[database]\npath = "r.sqlite"\n\n` +
        `[[mailbox]]\nname = "dmarc"\nhost = "127.0.0.1"\nport = ${dovecot.port}\nsecurity = "none"\nuser = "dmarc@example.com"\npassword = "${PASSWORD}"\n\n` +
        `[[mailbox]]\nname = "tlsrpt"\nhost = "127.0.0.1"\nport = ${dovecot.tlsPort}\nsecurity = "tls"\nuser = "tls@example.com"\npassword = "${PASSWORD}"\nca_file = "${dovecot.certFile}"\nfolder = "Reports/TLS"\n\n` +
        `[alerts.email]\nhost = "127.0.0.1"\nport = ${smtp.port}\nsecurity = "none"\nfrom = "ruawatch@example.com"\nto = ["postmaster@example.com"]\n\n` +
        `[alerts.matrix]\nhomeserver = "${matrix.url}"\naccess_token = "syt_token"\nroom_id = "!alerts:example.org"\n\n` +
        `[alerts.discord]\nwebhook_url = "${discord.webhookUrl}"\n${extra}`,
    );
    return file;
  }

  it('logs in to each mailbox and server, says what it found, and sends, moves and creates nothing', async () => {
    const file = config();
    const before = { smtp: smtp.messages.length, matrix: matrix.events.length, discord: discord.messages.length };
    const r = await runCli(['config', 'check', '--config', file, '--connect']);
    assert.equal(r.code, 1, r.stderr);
    const lines = r.stdout.split('\n');
    assert.deepEqual(lines.slice(0, 4), [
      `mailbox dmarc (127.0.0.1:${dovecot.port}, security = "none"): logged in as dmarc@example.com without TLS`,
      '  folder           INBOX: 1 message, 1 unseen',
      '  processed_folder Processed: 1 message',
      '  invalid_folder   Invalid: missing; created by the first fetch',
    ]);
    assert.match(
      lines[4]!,
      new RegExp(
        `^mailbox tlsrpt \\(127\\.0\\.0\\.1:${dovecot.tlsPort}, security = "tls"\\): logged in as tls@example\\.com over TLSv1\\.[23] \\(\\S+\\)$`,
      ),
    );
    assert.equal(lines[5], '  folder           Reports/TLS: FAILED: no such folder');
    assert.equal(
      lines.at(-4),
      `email: 127.0.0.1:${smtp.port} without TLS, no login; mail from ruawatch@example.com to postmaster@example.com`,
    );
    assert.equal(lines.at(-3), `matrix: ${matrix.url}: the token is @ruawatch:example.org's, who is in !alerts:example.org`);
    assert.equal(lines.at(-2), 'discord: webhook "ruawatch" posting to channel 987654321098765432');
    // Nothing sent, nothing moved, no folder created.
    assert.deepEqual({ smtp: smtp.messages.length, matrix: matrix.events.length, discord: discord.messages.length }, before);
    assert.deepEqual([await dovecot.count('dmarc@example.com', 'INBOX'), await dovecot.count('dmarc@example.com', 'Processed')], [1, 1]);
    assert.ok(!(await dovecot.folders('dmarc@example.com')).includes('Invalid'));
    assert.ok(!(await dovecot.folders('tls@example.com')).some((f) => /Processed|Reports/.test(f)));
    assert.deepEqual([matrix.violations, discord.violations], [[], []]);
  });

  it('--json; a wrong password, a wrong token and an unknown channel fail each on its own', async () => {
    const file = config(`\n`);
    fs.writeFileSync(
      file,
      fs
        .readFileSync(file, 'utf8')
        .replace(`user = "tls@example.com"\npassword = "${PASSWORD}"`, 'user = "tls@example.com"\npassword = "wrong"')
        .replace('access_token = "syt_token"', 'access_token = "stale"')
        .replace(`webhook_url = "${discord.webhookUrl}"`, `bot_token = "bot.token"\nchannel_id = "1"\napi_url = "${discord.url}/api"`),
    );
    const r = await runCli(['config', 'check', '--config', file, '--connect', '--json']);
    assert.equal(r.code, 1, r.stderr);
    const found = JSON.parse(r.stdout) as Connections;
    assert.deepEqual(
      found.mailboxes.map((m) => [m.name, m.ok]),
      [
        ['dmarc', true],
        ['tlsrpt', false],
      ],
    );
    assert.match(found.mailboxes[1]!.error!, /^authentication failed for tls@example\.com/);
    assert.deepEqual(found.mailboxes[0]!.tls, null);
    assert.deepEqual(found.mailboxes[0]!.folders[0], { role: 'folder', name: 'INBOX', exists: true, messages: 1, unseen: 1 });
    assert.deepEqual(
      found.channels.map((c) => [c.channel, c.ok]),
      [
        ['email', true],
        ['matrix', false],
        ['discord', false],
      ],
    );
    assert.equal(found.channels[1]!.error, '/account/whoami: 401 M_UNKNOWN_TOKEN Invalid access token');
    assert.match(found.channels[2]!.error!, /^404 Unknown Channel/);
  });
});
