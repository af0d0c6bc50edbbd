import assert from 'node:assert/strict';
import net from 'node:net';
import fs from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { runCli } from '../helpers/cli.js';
import { fixture, freshStore, tempDir } from '../helpers/common.js';
import { D0, dayIso, ingestDays } from '../helpers/scenario.js';

/** A loopback port nothing listens on. */
async function closedPort(): Promise<number> {
  const probe = net.createServer();
  await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
  const port = (probe.address() as net.AddressInfo).port;
  await new Promise((resolve) => probe.close(resolve));
  return port;
}

describe('one-shot commands log only what their output does not say', () => {
  it('ingest: a failed input is in the summary, and not again as a warning on stderr', async () => {
    const db = path.join(tempDir(), 'r.sqlite');
    const r = await runCli([
      'ingest',
      '--db',
      db,
      fixture('dmarc-aggregate/kimon_malformed.xml'),
      fixture('dmarc-aggregate/drv_google.xml'),
    ]);
    assert.equal(r.code, 1);
    assert.match(r.stdout, /failed {6}1\n {2}.*kimon_malformed\.xml: not well-formed XML/);
    assert.equal(r.stderr, '');
    // At info, the trace is there, each line with its keys once.
    const info = await runCli(['ingest', '--db', db, fixture('dmarc-aggregate/kimon_malformed.xml')], { RUAWATCH_LOG_LEVEL: 'info' });
    assert.match(info.stderr, /"msg":"input failed: not well-formed XML/);
  });

  it('alerts: an undelivered notification is in the output once, the channel named once, and not logged as an error', async () => {
    const store = freshStore();
    await ingestDays(store, 0, 34);
    store.db.close();
    const dir = tempDir();
    const config = path.join(dir, 'c.toml');
    const port = await closedPort();
    fs.writeFileSync(
      config,
      `[analysis]\nreverse_dns = false\n\n[alerts.email]\nhost = "127.0.0.1"\nport = ${port}\nsecurity = "none"\nfrom = "r@example.com"\nto = ["p@example.com"]\n`,
    );
    const r = await runCli(['alerts', '--db', store.file, '--config', config, '--at', dayIso(D0 + 34)]);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stdout, /^Notifications: 0 sent, 1 failed, 3 waiting for the next run\.\n {2}email: .*ECONNREFUSED/m);
    assert.doesNotMatch(r.stdout, /email: .*email:/);
    assert.equal(r.stderr, '');
    const status = await runCli(['notify', 'status', '--db', store.file, '--config', config]);
    assert.match(status.stdout, /^email: FAILING since .*: (?!email:).*ECONNREFUSED/m);
  });
});
