import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { loadConfig } from '../src/config/load.js';
import { healthzUrl } from '../src/cli/healthcheck.js';
import { CLI, fixture, selfSignedCert, tempDir } from './helpers/common.js';

function run(args: string[], opts: { env?: Record<string, string>; cwd?: string; timeoutMs?: number } = {}) {
  const env: Record<string, string> = { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp', ...opts.env };
  const r = spawnSync(process.execPath, [CLI, ...args], { env, cwd: opts.cwd, encoding: 'utf8', timeout: opts.timeoutMs ?? 60_000 });
  return { code: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr };
}

const isRoot = process.getuid?.() === 0;

describe('paths in the config file, the environment and on the command line', () => {
  it('reads a relative path in a config file from that file’s folder, whatever the working directory', () => {
    const dir = tempDir();
    const etc = path.join(dir, 'etc');
    fs.mkdirSync(path.join(etc, 'secrets'), { recursive: true });
    fs.writeFileSync(path.join(etc, 'secrets/imap'), 'pw-from-file\n');
    fs.writeFileSync(path.join(etc, 'secrets/smtp'), 'smtp-pw\n');
    // Certificate files are read at load time: they must be there.
    selfSignedCert(path.join(etc, 'ca.pem'));
    selfSignedCert(path.join(dir, 'ca2.pem'));
    const file = path.join(etc, 'ruawatch.toml');
    fs.writeFileSync(
      file,
      '[database]\npath = "db/r.sqlite"\n\n[[mailbox]]\nname = "d"\nhost = "h"\nuser = "u"\npassword_file = "secrets/imap"\nca_file = "./ca.pem"\n\n' +
        '[alerts.email]\nhost = "s"\nuser = "u"\npassword_file = "secrets/smtp"\nca_file = "../ca2.pem"\nfrom = "a@b.c"\nto = ["x@y.z"]\n',
    );
    for (const cwd of ['/', dir]) {
      const { config } = loadConfig(path.relative(cwd, file) || file, {}, cwd);
      assert.equal(config.database.path, path.join(etc, 'db/r.sqlite'));
      assert.equal(config.mailbox[0]!.password, 'pw-from-file');
      assert.equal(config.mailbox[0]!.ca_file, path.join(etc, 'ca.pem'));
      assert.equal(config.alerts.email!.password, 'smtp-pw');
      assert.equal(config.alerts.email!.ca_file, path.join(dir, 'ca2.pem'));
    }
    // An absolute path stays as written.
    fs.writeFileSync(file, '[database]\npath = "/var/lib/ruawatch/r.sqlite"\n');
    assert.equal(loadConfig(file, {}, '/').config.database.path, '/var/lib/ruawatch/r.sqlite');
  });

  it('reads a relative path from the environment from the working directory, and RUAWATCH_DB only where the file sets none', () => {
    const dir = tempDir();
    fs.writeFileSync(path.join(dir, 'pw'), 'env-pw');
    selfSignedCert(path.join(dir, 'ca.pem'));
    const env = {
      RUAWATCH_DATABASE_PATH: 'x/r.sqlite',
      RUAWATCH_MAILBOX_D_HOST: 'h',
      RUAWATCH_MAILBOX_D_USER: 'u',
      RUAWATCH_MAILBOX_D_PASSWORD_FILE: 'pw',
      RUAWATCH_MAILBOX_D_CA_FILE: 'ca.pem',
    };
    const { config } = loadConfig(undefined, env, dir);
    assert.equal(config.database.path, path.join(dir, 'x/r.sqlite'));
    assert.equal(config.mailbox[0]!.password, 'env-pw');
    assert.equal(config.mailbox[0]!.ca_file, path.join(dir, 'ca.pem'));
    assert.equal(loadConfig(undefined, { RUAWATCH_DB: 'd.sqlite' }, dir).config.database.path, path.join(dir, 'd.sqlite'));
    assert.equal(loadConfig(undefined, {}, dir).config.database.path, path.join(dir, 'data/ruawatch.sqlite'));
    const file = path.join(dir, 'c.toml');
    fs.writeFileSync(file, '[database]\npath = "mine.sqlite"\n');
    assert.equal(loadConfig(file, { RUAWATCH_DB: '/data/ruawatch.sqlite' }, '/').config.database.path, path.join(dir, 'mine.sqlite'));
  });

  it('takes [web] listen from the file over the image default RUAWATCH_LISTEN; RUAWATCH_WEB_LISTEN overrides both', () => {
    const dir = tempDir();
    const file = path.join(dir, 'c.toml');
    fs.writeFileSync(file, '[web]\nlisten = "127.0.0.1:9090"\n');
    assert.equal(loadConfig(file, { RUAWATCH_LISTEN: '0.0.0.0:8080' }).config.web.listen, '127.0.0.1:9090');
    assert.equal(loadConfig(undefined, { RUAWATCH_LISTEN: '0.0.0.0:8080' }).config.web.listen, '0.0.0.0:8080');
    assert.equal(loadConfig(undefined, {}).config.web.listen, '127.0.0.1:8080');
    assert.equal(loadConfig(file, { RUAWATCH_LISTEN: '0.0.0.0:8080', RUAWATCH_WEB_LISTEN: '[::]:7070' }).config.web.listen, '[::]:7070');
    assert.throws(() => loadConfig(undefined, { RUAWATCH_LISTEN: 'nonsense' }), /web\.listen: expected host:port/);
  });

  it('finds the database next to the config from any working directory (the cron line), and says which file it uses', () => {
    const dir = tempDir();
    const etc = path.join(dir, 'etc');
    fs.mkdirSync(etc);
    const config = path.join(etc, 'ruawatch.toml');
    fs.writeFileSync(config, '[database]\npath = "state/ruawatch.sqlite"\n\n[log]\nlevel = "info"\n');
    const ingest = run(['ingest', '--config', config, fixture('dmarc-aggregate/drv_google.xml')], { cwd: dir });
    assert.equal(ingest.code, 0, ingest.stderr);
    const db = path.join(etc, 'state/ruawatch.sqlite');
    assert.ok(fs.existsSync(db));
    assert.match(ingest.stderr, new RegExp(`"database":"${db}"`));
    // cron runs in the home folder: the same database, not a new empty one there.
    const home = tempDir();
    const report = run(['report', '--config', config, '--json'], { cwd: home });
    assert.equal(report.code, 0, report.stderr);
    assert.equal((JSON.parse(report.stdout) as { domains: unknown[] }).domains.length, 1);
    assert.match(report.stderr, new RegExp(`"database":"${db}"`));
    const digest = run(['digest', '--config', config, '--dry-run', '--at', '2026-01-01'], { cwd: home });
    assert.equal(digest.code, 0, digest.stderr);
    assert.deepEqual(fs.readdirSync(home), []);
    const check = run(['config', 'check', '--config', path.relative(home, config)], { cwd: home });
    assert.equal((JSON.parse(check.stdout) as { config: { database: { path: string } } }).config.database.path, db);
  });

  it('refuses to report, alert or digest from a database that does not exist, naming it, instead of creating an empty one', () => {
    const dir = tempDir();
    for (const args of [['report'], ['alerts', '--dry-run'], ['digest', '--dry-run']]) {
      const r = run(args, { cwd: dir });
      assert.equal(r.code, 2, `${args[0]}: ${r.stderr}`);
      assert.match(r.stderr, new RegExp(`no database at ${path.join(dir, 'data/ruawatch.sqlite')}`));
    }
    assert.deepEqual(fs.readdirSync(dir), []);
  });

  it(
    'names the database file when its folder cannot be written or created',
    { skip: !isRoot && 'needs root for a read-only mount' },
    () => {
      const dir = tempDir();
      const ro = path.join(dir, 'ro');
      fs.mkdirSync(ro);
      // A read-only mount refuses root too (EROFS), as a read-only volume or folder refuses ruawatch.
      const inRo = (db: string) => {
        const script = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && exec "$@"';
        const argv = [
          '--mount',
          '--propagation',
          'private',
          'sh',
          '-c',
          script,
          ro,
          process.execPath,
          CLI,
          'ingest',
          '--db',
          db,
          fixture('dmarc-aggregate/drv_google.xml'),
        ];
        const r = spawnSync('unshare', argv, { encoding: 'utf8', timeout: 60_000 });
        return { code: r.status, stderr: r.stderr };
      };
      const flat = inRo(path.join(ro, 'r.sqlite'));
      // A database that cannot be created where the configuration puts it: a configuration error.
      assert.equal(flat.code, 2, flat.stderr);
      assert.match(flat.stderr, new RegExp(`database ${ro}/r\\.sqlite: the folder ${ro} is not writable by uid 0 .*EROFS`));
      const below = inRo(path.join(ro, 'sub/r.sqlite'));
      assert.match(below.stderr, new RegExp(`database ${ro}/sub/r\\.sqlite: cannot create the folder ${ro}/sub by uid 0: EROFS`));
    },
  );

  it('stops at once with the file named for a path under /proc, where recursive mkdir would spin forever', () => {
    const r = run(['ingest', '--db', '/proc/ruawatch/data/r.sqlite', fixture('dmarc-aggregate/drv_google.xml')], { timeoutMs: 15_000 });
    assert.equal(r.signal, null, 'ingest was still running after 15 s');
    assert.equal(r.code, 2);
    assert.match(r.stderr, /database \/proc\/ruawatch\/data\/r\.sqlite: cannot create the folder \/proc\/ruawatch/);
  });

  it('names the file in an SQLite error', () => {
    const dir = tempDir();
    const notDb = path.join(dir, 'not.sqlite');
    fs.writeFileSync(notDb, 'this is not an SQLite database, just text long enough to have a header page'.repeat(20));
    const r = run(['ingest', '--db', notDb, fixture('dmarc-aggregate/drv_google.xml')]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, new RegExp(`database ${notDb}: file is not a database \\[SQLITE_NOTADB\\]`));
  });
});

describe('ruawatch healthcheck', () => {
  let server: http.Server;
  let port: number;
  let status = 200;
  before(async () => {
    server = http.createServer((req, res) => {
      res.writeHead(req.url === '/healthz' ? status : 404, { 'content-type': 'application/json' });
      res.end(`{"status":"${status === 200 ? 'ok' : 'failing'}"}\n`);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    port = (server.address() as AddressInfo).port;
  });
  after(() => server.close());

  it('maps [web] listen to the address to ask', () => {
    assert.equal(healthzUrl('0.0.0.0:8080'), 'http://127.0.0.1:8080/healthz');
    assert.equal(healthzUrl('[::]:8080'), 'http://[::1]:8080/healthz');
    assert.equal(healthzUrl('[2001:db8::5]:81'), 'http://[2001:db8::5]:81/healthz');
    assert.equal(healthzUrl('192.0.2.7:8080'), 'http://192.0.2.7:8080/healthz');
    assert.throws(() => healthzUrl('127.0.0.1:0'), /random port/);
  });

  it('follows the config file, then the environment, and exits 0 only on a 200', async () => {
    const dir = tempDir();
    const config = path.join(dir, 'c.toml');
    fs.writeFileSync(config, `[web]\nlisten = "127.0.0.1:${port}"\n`);
    // spawnSync would block the event loop this server answers on.
    const check = async (args: string[], env: Record<string, string> = {}) => {
      const { spawn } = await import('node:child_process');
      const p = spawn(process.execPath, [CLI, 'healthcheck', ...args], { env: { PATH: process.env.PATH ?? '', ...env } });
      let out = '';
      p.stdout.on('data', (d: Buffer) => (out += d.toString()));
      const code = await new Promise<number | null>((resolve) => p.on('exit', resolve));
      return { code, out };
    };
    const ok = await check(['--config', config]);
    assert.deepEqual([ok.code, ok.out], [0, `http://127.0.0.1:${port}/healthz: 200 {"status":"ok"}\n`]);
    // The image's default where the file says nothing, an explicit override over the file.
    assert.equal((await check([], { RUAWATCH_LISTEN: `0.0.0.0:${port}` })).code, 0);
    assert.equal((await check(['--config', config], { RUAWATCH_WEB_LISTEN: '127.0.0.1:1' })).code, 1);
    status = 503;
    const failing = await check(['--config', config]);
    assert.deepEqual([failing.code, failing.out], [1, `http://127.0.0.1:${port}/healthz: 503 {"status":"failing"}\n`]);
    status = 200;
    // A config that cannot be read is unhealthy (1), not Docker's reserved 2.
    const broken = await check(['--config', path.join(dir, 'missing.toml')]);
    assert.equal(broken.code, 1);
    assert.match(broken.out, /^unhealthy: cannot read the config file/);
  });
});
