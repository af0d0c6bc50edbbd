import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { loadConfig } from '../src/config/load.js';
import { authOf } from '../src/config/schema.js';
import { ROOT, selfSignedCert, tempDir } from './helpers/common.js';

const example = fs.readFileSync(path.join(ROOT, 'config.example.toml'), 'utf8');

/** The example with every commented-out setting switched on, secrets pointing at a real file. */
function everythingOn(secret: string): string {
  return example
    .split('\n')
    .map((l) => (/^# (\[|[a-z_]+ = )/.test(l) ? l.slice(2) : l))
    .join('\n')
    .replace(/"\/run\/secrets\/[^"]+"/g, JSON.stringify(secret));
}

function leafKeys(v: unknown, out = new Set<string>()): Set<string> {
  if (Array.isArray(v)) v.forEach((x) => leafKeys(x, out));
  else if (v && typeof v === 'object') {
    for (const [k, x] of Object.entries(v)) {
      if (x && typeof x === 'object') leafKeys(x, out);
      else out.add(k);
    }
  }
  return out;
}

describe('config.example.toml', () => {
  it('is valid as shipped', () => {
    const file = path.join(tempDir(), 'c.toml');
    fs.writeFileSync(file, example);
    assert.doesNotThrow(() => loadConfig(file, {}));
  });

  it('is valid with every documented setting switched on, and documents every setting there is', () => {
    const dir = tempDir();
    const secret = path.join(dir, 'secret');
    fs.writeFileSync(secret, 'https://discord.com/api/webhooks/1/secret\n');
    const ca = selfSignedCert(path.join(dir, 'ca.pem'));
    const file = path.join(dir, 'c.toml');
    fs.writeFileSync(
      file,
      everythingOn(secret)
        .replace(/"\/etc\/ssl\/private-ca\.pem"/g, JSON.stringify(ca))
        .replace(/"\/etc\/ruawatch\/app\.crt"/g, JSON.stringify(ca)),
    );
    const { config } = loadConfig(file, {});
    // One mailbox of each kind and way of logging in: IMAP with a password, Microsoft 365 over IMAP
    // and over Graph, Google Workspace, a token command, a token file.
    assert.deepEqual(
      config.mailbox.map((m) => [m.kind, authOf(m)]),
      [
        ['imap', 'password'],
        ['imap', 'microsoft'],
        ['graph', 'microsoft'],
        ['imap', 'google'],
        ['imap', 'command'],
        ['imap', 'file'],
      ],
    );
    assert.ok(config.alerts.email && config.alerts.matrix && config.alerts.discord);
    const secrets = new Set(['password', 'access_token', 'webhook_url', 'bot_token']);
    const undocumented = [...leafKeys(config)].filter((k) => !new RegExp(`^#? ?${k}(_file)? = `, 'm').test(example) && !secrets.has(k));
    assert.deepEqual(undocumented, []);
  });

  it('reads environment variables over the file, and rejects unknown ones', () => {
    const { config } = loadConfig(undefined, {
      RUAWATCH_DATABASE_PATH: '/var/lib/ruawatch/db.sqlite',
      RUAWATCH_LIMITS_MAX_XML_DEPTH: '12',
      RUAWATCH_ALERTS_EMAIL_TO: 'a@example.com, b@example.com',
      RUAWATCH_ALERTS_EMAIL_HOST: 'smtp.example.com',
      RUAWATCH_ALERTS_EMAIL_FROM: 'r@example.com',
    });
    assert.equal(config.database.path, '/var/lib/ruawatch/db.sqlite');
    assert.equal(config.limits.max_xml_depth, 12);
    assert.deepEqual(config.alerts.email?.to, ['a@example.com', 'b@example.com']);
    assert.throws(() => loadConfig(undefined, { RUAWATCH_LIMITS_MAX_BANANAS: '1' }), /RUAWATCH_LIMITS_MAX_BANANAS: no such setting/);
  });

  it('refuses a secret given twice, and a secret file that cannot be read', () => {
    const dir = tempDir();
    const file = path.join(dir, 'c.toml');
    fs.writeFileSync(
      file,
      '[alerts.matrix]\nhomeserver = "https://m.example"\nroom_id = "!a:m.example"\naccess_token = "x"\naccess_token_file = "/nonexistent"\n',
    );
    assert.throws(() => loadConfig(file, {}), /alerts\.matrix\.access_token_file: set either access_token or access_token_file, not both/);
    fs.writeFileSync(
      file,
      '[alerts.matrix]\nhomeserver = "https://m.example"\nroom_id = "!a:m.example"\naccess_token_file = "/nonexistent/token"\n',
    );
    assert.throws(() => loadConfig(file, {}), /alerts\.matrix\.access_token_file: cannot read \/nonexistent\/token/);
  });

  it('takes the analysis thresholds and alert settings from the environment too, and checks their ranges', () => {
    const { config } = loadConfig(undefined, {
      RUAWATCH_ANALYSIS_RECENT_DAYS: '14',
      RUAWATCH_ANALYSIS_REVERSE_DNS: 'false',
      RUAWATCH_ANALYSIS_DROP_POINTS: '12.5',
      RUAWATCH_ALERTS_RENOTIFY_HOURS: '6',
    });
    assert.equal(config.analysis.recent_days, 14);
    assert.equal(config.analysis.baseline_days, 28);
    assert.equal(config.analysis.reverse_dns, false);
    assert.equal(config.analysis.drop_points, 12.5);
    assert.equal(config.alerts.renotify_hours, 6);
    assert.throws(() => loadConfig(undefined, { RUAWATCH_ANALYSIS_DROP_POINTS: '150' }), /analysis\.drop_points: Too big/);
    assert.throws(() => loadConfig(undefined, { RUAWATCH_ANALYSIS_RECENT_DAYS: '0' }), /analysis\.recent_days:/);
    const dir = tempDir();
    const file = path.join(dir, 'c.toml');
    fs.writeFileSync(file, '[alerts.discord]\nchannel_id = "123"\n');
    assert.throws(() => loadConfig(file, {}), /set webhook_url, or bot_token together with channel_id/);
    fs.writeFileSync(file, '[alerts.discord]\nwebhook_url = "https://discord.com/channels/1/2"\n');
    assert.throws(() => loadConfig(file, {}), /alerts\.discord\.webhook_url: expected a webhook URL ending in \/webhooks\/<id>\/<token>/);
  });
});

describe('[[mailbox]] kinds and ways of logging in', () => {
  const load = (box: string, env: NodeJS.ProcessEnv = {}) => {
    const file = path.join(tempDir(), 'c.toml');
    fs.writeFileSync(file, `[[mailbox]]\nname = "m"\nuser = "dmarc@example.com"\n${box}`);
    return loadConfig(file, env).config.mailbox[0]!;
  };

  it('takes each way of logging in with its own keys, secrets from files or the environment', () => {
    const dir = tempDir();
    const secret = path.join(dir, 'secret');
    fs.writeFileSync(secret, 'from-a-file\n');
    const ms = load(
      `host = "outlook.office365.com"\nauth = "microsoft"\ntenant_id = "contoso.onmicrosoft.com"\nclient_id = "c"\nclient_secret_file = "${secret}"\n`,
    );
    assert.equal(ms.client_secret, 'from-a-file');
    const graph = load('kind = "graph"\ntenant_id = "t"\nclient_id = "c"\n', { RUAWATCH_MAILBOX_M_CLIENT_SECRET_FILE: secret });
    assert.deepEqual([graph.kind, authOf(graph), graph.client_secret], ['graph', 'microsoft', 'from-a-file']);
    const cmd = load('host = "h"\nauth = "command"\n', { RUAWATCH_MAILBOX_M_TOKEN_COMMAND: '/bin/get-token,dmarc' });
    assert.deepEqual(cmd.token_command, ['/bin/get-token', 'dmarc']);
    const file = path.join(dir, 'c.toml');
    fs.writeFileSync(file, '[[mailbox]]\nname = "m"\nhost = "h"\nuser = "u"\nauth = "file"\ntoken_path = "tokens/m"\n');
    assert.equal(loadConfig(file, {}).config.mailbox[0]!.token_path, path.join(dir, 'tokens/m'), 'relative to the config file');
  });

  it('names what is missing, misplaced or left over, by its full path; reads the certificate file', () => {
    const refuse = (box: string, pattern: RegExp) => assert.throws(() => load(box), pattern);
    refuse('password = "p"\n', /mailbox "m"\.host: required for kind = "imap"/);
    refuse('host = "h"\n', /mailbox "m"\.password: required \(or password_file\)/);
    refuse(
      'host = "h"\nauth = "microsoft"\nclient_id = "c"\nclient_secret = "s"\n',
      /mailbox "m"\.tenant_id: required with auth = "microsoft"/,
    );
    refuse('host = "h"\nauth = "microsoft"\ntenant_id = "t"\nclient_id = "c"\n', /mailbox "m"\.client_secret: set client_secret/);
    refuse(
      'host = "h"\nauth = "microsoft"\ntenant_id = "t"\nclient_id = "c"\ncertificate_file = "/x.crt"\n',
      /mailbox "m"\.private_key: certificate_file and private_key/,
    );
    refuse(
      'host = "h"\npassword = "p"\ntenant_id = "t"\n',
      /mailbox "m"\.tenant_id: used only with auth = "microsoft" \(this mailbox has auth = "password"\)/,
    );
    refuse(
      'kind = "graph"\nhost = "h"\ntenant_id = "t"\nclient_id = "c"\nclient_secret = "s"\n',
      /mailbox "m"\.host: used only with kind = "imap"/,
    );
    refuse(
      'kind = "graph"\nauth = "password"\npassword = "p"\n',
      /mailbox "m"\.auth: kind = "graph" logs in with auth = "microsoft", "command" or "file"/,
    );
    refuse(
      'host = "h"\nauth = "google"\nservice_account_key = "{}"\ntoken_url = "http://accounts.example.com/token"\n',
      /mailbox "m"\.token_url: expected an https URL \(http only to a loopback address\)/,
    );
    // A certificate_file is checked when the config loads, as ca_file is.
    refuse(
      'kind = "graph"\ntenant_id = "t"\nclient_id = "c"\ncertificate_file = "/nonexistent/app.crt"\nprivate_key = "k"\n',
      /mailbox "m"\.certificate_file: cannot read \/nonexistent\/app\.crt/,
    );
  });
});
