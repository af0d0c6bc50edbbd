import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { loadConfig } from '../src/config/load.js';
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
    fs.writeFileSync(file, everythingOn(secret).replace(/"\/etc\/ssl\/private-ca\.pem"/g, JSON.stringify(ca)));
    const { config } = loadConfig(file, {});
    assert.equal(config.mailbox.length, 1);
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
