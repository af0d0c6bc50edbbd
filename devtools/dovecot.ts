import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { ImapFlow } from 'imapflow';

/**
 * A real Dovecot IMAP server for the tests and the IMAP benchmark: its own throwaway configuration, a passwd-file user per
 * mailbox, maildirs in a temp folder, plain IMAP and implicit TLS (self-signed) on free loopback
 * ports. Started and stopped by the tests themselves. In OAuth2 mode (`oauth2`) it also takes bearer
 * tokens, validated by Dovecot's oauth2 password database against a token introspection endpoint.
 */
export interface Dovecot {
  port: number;
  tlsPort: number;
  certFile: string;
  dir: string;
  start(): Promise<void>;
  /** SIGKILL to the whole process group: master, login and imap processes. */
  kill(): Promise<void>;
  /**
   * SIGSTOP to the whole process group: connections stay open and new ones are accepted by the
   * kernel, but nothing answers (a server that hangs). thaw() sends SIGCONT.
   */
  freeze(): void;
  thaw(): void;
  stop(): Promise<void>;
  client(user: string): ImapFlow;
  append(user: string, raw: string | Buffer, folder?: string): Promise<void>;
  count(user: string, folder: string): Promise<number>;
  folders(user: string): Promise<string[]>;
}

export const PASSWORD = 'test-password';

export function findDovecot(): string | null {
  for (const p of ['/usr/sbin/dovecot', '/usr/local/sbin/dovecot']) if (fs.existsSync(p)) return p;
  const r = spawnSync('sh', ['-c', 'command -v dovecot'], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : null;
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}

async function waitForPort(port: number, timeoutMs: number): Promise<void> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect(port, '127.0.0.1', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > until) throw new Error(`dovecot did not listen on ${port} within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export interface DovecotOptions {
  /** Hierarchy delimiter of the personal namespace (RFC 2342), "/" by default. */
  separator?: string;
  /** Namespace prefix, e.g. "INBOX." as Courier-style servers have it. */
  prefix?: string;
  /**
   * Logins with an OAuth2 bearer token as well (SASL XOAUTH2 and/or OAUTHBEARER, RFC 7628), checked
   * by Dovecot's oauth2 passdb (Dovecot 2.3: driver = oauth2, introspection_mode = post) against this
   * token introspection endpoint (RFC 7662): a token is good when the answer has "active": true and a
   * "username" equal to the login. Passwords still work for PLAIN and LOGIN (the tests' appends).
   */
  oauth2?: { introspectionUrl: string; mechanisms?: ('xoauth2' | 'oauthbearer')[] };
}

export async function startDovecot(users: string[], opts: DovecotOptions = {}): Promise<Dovecot> {
  const binary = findDovecot();
  if (!binary) throw new Error('dovecot is not installed (Debian package dovecot-imapd)');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ruawatch-dovecot-'));
  fs.chmodSync(dir, 0o755);
  for (const sub of ['run', 'state', 'home']) fs.mkdirSync(path.join(dir, sub), { mode: 0o755 });
  // Mail processes may not run as root; as root, run them as nobody.
  const uid = process.getuid?.() === 0 ? 65534 : (process.getuid?.() ?? 65534);
  const gid = process.getuid?.() === 0 ? 65534 : (process.getgid?.() ?? 65534);
  fs.chownSync(path.join(dir, 'home'), uid, gid);
  fs.writeFileSync(path.join(dir, 'passwd'), users.map((u) => `${u}:{PLAIN}${PASSWORD}\n`).join(''));
  const certFile = path.join(dir, 'cert.pem');
  const keyFile = path.join(dir, 'key.pem');
  const ssl = spawnSync(
    'openssl',
    [
      'req',
      '-x509',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-days',
      '2',
      '-subj',
      '/CN=localhost',
      '-addext',
      'subjectAltName=IP:127.0.0.1,DNS:localhost',
      '-keyout',
      keyFile,
      '-out',
      certFile,
    ],
    { encoding: 'utf8' },
  );
  if (ssl.status !== 0) throw new Error(`openssl failed: ${ssl.stderr}`);
  const port = await freePort();
  const tlsPort = await freePort();
  const conf = path.join(dir, 'dovecot.conf');
  const oauthMechanisms = opts.oauth2 ? (opts.oauth2.mechanisms ?? ['xoauth2']) : [];
  let oauthPassdb = '';
  let oauthSettings = '';
  if (opts.oauth2) {
    const ext = path.join(dir, 'dovecot-oauth2.conf.ext');
    fs.writeFileSync(
      ext,
      `introspection_mode = post
introspection_url = ${opts.oauth2.introspectionUrl}
force_introspection = yes
username_attribute = username
active_attribute = active
active_value = true
timeout_msecs = 10000
`,
    );
    // Why a token was refused goes to the log, and a refusal is answered at once, not after 2 s
    // (and the anvil's penalty delays for earlier failures are off, below): a token renewed after
    // a refusal is checked before its short test life runs out.
    oauthSettings = `auth_verbose = yes
auth_failure_delay = 0
`;
    oauthPassdb = `passdb {
  driver = oauth2
  mechanisms = ${oauthMechanisms.join(' ')}
  args = ${ext}
}
`;
  }
  fs.writeFileSync(
    conf,
    `base_dir = ${dir}/run
state_dir = ${dir}/state
log_path = ${dir}/dovecot.log
instance_name = ruawatch-test-${port}
protocols = imap
listen = 127.0.0.1
ssl = yes
ssl_cert = <${certFile}
ssl_key = <${keyFile}
disable_plaintext_auth = no
${oauthSettings}auth_mechanisms = plain login ${oauthMechanisms.join(' ')}
first_valid_uid = ${Math.min(uid, 500)}
mail_location = maildir:${dir}/home/%u/Maildir
default_internal_user = dovecot
default_login_user = dovenull
${oauthPassdb}passdb {
  driver = passwd-file
  ${opts.oauth2 ? 'mechanisms = plain login\n  ' : ''}args = scheme=PLAIN username_format=%u ${dir}/passwd
}
userdb {
  driver = static
  args = uid=${uid} gid=${gid} home=${dir}/home/%u
}
namespace inbox {
  inbox = yes
  separator = ${opts.separator ?? '/'}
  prefix = ${opts.prefix ?? ''}
}
service imap-login {
  chroot =
  inet_listener imap {
    address = 127.0.0.1
    port = ${port}
  }
  inet_listener imaps {
    address = 127.0.0.1
    port = ${tlsPort}
    ssl = yes
  }
}
service anvil {
  chroot =
${opts.oauth2 ? '  unix_listener anvil-auth-penalty {\n    mode = 0\n  }\n' : ''}}
`,
  );
  let proc: ChildProcess | null = null;
  const d: Dovecot = {
    port,
    tlsPort,
    certFile,
    dir,
    async start() {
      proc = spawn(binary, ['-F', '-c', conf], { detached: true, stdio: 'ignore' });
      await waitForPort(port, 10_000);
      await waitForPort(tlsPort, 10_000);
    },
    async kill() {
      const p = proc;
      if (!p?.pid) return;
      const exited = new Promise((r) => p.once('exit', r));
      try {
        process.kill(-p.pid, 'SIGKILL');
      } catch {
        // already gone
      }
      await exited;
      proc = null;
    },
    freeze() {
      if (proc?.pid) process.kill(-proc.pid, 'SIGSTOP');
    },
    thaw() {
      if (proc?.pid) process.kill(-proc.pid, 'SIGCONT');
    },
    async stop() {
      const p = proc;
      if (!p?.pid) return;
      const exited = new Promise((r) => p.once('exit', r));
      process.kill(-p.pid, 'SIGTERM');
      await exited;
      proc = null;
    },
    client(user) {
      const c = new ImapFlow({ host: '127.0.0.1', port, secure: false, doSTARTTLS: false, auth: { user, pass: PASSWORD }, logger: false });
      c.on('error', () => undefined);
      return c;
    },
    async append(user, raw, folder = 'INBOX') {
      const c = d.client(user);
      await c.connect();
      try {
        await c.append(folder, typeof raw === 'string' ? Buffer.from(raw) : raw);
      } finally {
        await c.logout();
      }
    },
    async folders(user) {
      const c = d.client(user);
      await c.connect();
      try {
        return (await c.list()).map((m) => m.path).sort();
      } finally {
        await c.logout();
      }
    },
    async count(user, folder) {
      const c = d.client(user);
      await c.connect();
      try {
        const list = await c.list();
        if (!list.some((m) => m.path === folder)) return 0;
        const st = await c.status(folder, { messages: true });
        return st ? (st.messages ?? 0) : 0;
      } finally {
        await c.logout();
      }
    },
  };
  await d.start();
  return d;
}
