import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import Database from 'better-sqlite3';
import { parse as parseYaml } from 'yaml';
import { PASSWORD, findDovecot, startDovecot, type Dovecot } from '../devtools/dovecot.js';
import { CLI, ROOT, tempDir } from './helpers/common.js';
import {
  contextFiles,
  dockerignore,
  execForm,
  parseCopy,
  parseDockerfile,
  parseEnv,
  parseHealthcheck,
  type Copy,
  type Healthcheck,
  type Stage,
} from './helpers/dockerfile.js';
import { base64Lines, dmarcXml, gzip, mail, record } from './helpers/synth.js';

/*
 * The container image without a Docker engine: the Dockerfile's build stage runs on a copy of the
 * build context, its run stage is laid out in a folder, and the image's ENTRYPOINT runs there in a
 * mount and PID namespace of its own (unshare), chrooted, as the image's USER (setpriv), with the
 * image's environment only (env -i), the root read-only and only the /data volume writable; the
 * volumes, the config file and the secret come from compose.yaml. The host's /usr and /etc stand in
 * for the Debian base image, and the Node running this test for the image's /usr/local/bin/node
 * (.ci/run installs the version the Dockerfile names). The network is the host's.
 */

const isRoot = process.getuid?.() === 0;
const have = (cmd: string) => spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;
const missing = [
  ...(isRoot ? [] : ['root']),
  ...['unshare', 'setpriv', 'nsenter', 'chroot', 'mount', 'tini'].filter((c) => !have(c)),
  ...(findDovecot() ? [] : ['dovecot']),
];
if (missing.length && process.env.CI) throw new Error(`the container test needs ${missing.join(', ')} under CI`);
const skip = missing.length > 0 && `needs ${missing.join(', ')}`;

const dockerfileText = fs.readFileSync(path.join(ROOT, 'Dockerfile'), 'utf8');
const dockerfile = parseDockerfile(dockerfileText);
const compose = parseYaml(fs.readFileSync(path.join(ROOT, 'compose.yaml'), 'utf8')) as {
  services: Record<string, ComposeService>;
  volumes?: Record<string, unknown>;
  secrets?: Record<string, { file: string }>;
};
interface ComposeService {
  build?: string;
  read_only?: boolean;
  ports?: string[];
  volumes?: string[];
  secrets?: string[];
  environment?: Record<string, string>;
  healthcheck?: { test: string[]; interval: string; timeout: string; start_period: string; retries: number };
  stop_grace_period?: string;
}
const service = Object.values(compose.services)[0]!;

/** What the run stage of the Dockerfile says, read once. */
interface Image {
  env: Record<string, string>;
  workdir: string;
  uid: number;
  gid: number;
  home: string;
  volumes: string[];
  expose: number[];
  healthcheck: Healthcheck;
  entrypoint: string[];
  cmd: string[];
}

// The Node base image's own environment (docker inspect node:24-bookworm-slim).
const BASE_ENV = { PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' };

function q(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

function sh(cmd: string, cwd: string, env: NodeJS.ProcessEnv = process.env): void {
  const r = spawnSync('sh', ['-c', cmd], { cwd, env, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${cmd}: exit ${r.status}\n${r.stdout}${r.stderr}`);
}

/** Copies a COPY source from the build context, only the files .dockerignore lets through. */
function copyFromContext(context: string[], src: string, dest: string): void {
  const clean = path.posix.normalize(src).replace(/\/$/, '');
  const files = context.filter((f) => f === clean || f.startsWith(`${clean}/`));
  if (files.length === 0) throw new Error(`COPY ${src}: not in the build context (.dockerignore)`);
  for (const f of files) {
    const to = f === clean ? dest : path.join(dest, f.slice(clean.length + 1));
    fs.mkdirSync(path.dirname(to), { recursive: true });
    fs.copyFileSync(path.join(ROOT, f), to);
    fs.chmodSync(to, fs.statSync(path.join(ROOT, f)).mode & 0o777);
  }
}

function copyTarget(c: Copy, src: string, root: string, workdir: string, isDir: boolean): string {
  const dest = path.posix.isAbsolute(c.dest) ? c.dest : path.posix.join(workdir, c.dest);
  // COPY a b ./ puts files into the folder; COPY dir ./dir puts the folder's contents there.
  if (!isDir && (c.dest.endsWith('/') || c.sources.length > 1)) return path.join(root, dest, path.posix.basename(src));
  return path.join(root, dest);
}

/**
 * The build stage's steps on a copy of the context in `dir` (its WORKDIR). `npm ci` alone is not
 * run again: this checkout's node_modules, installed by `npm ci` from the same lockfile on this
 * Node, is linked in (hard links; npm prune and rm only unlink, and the one file npm rewrites in
 * place, node_modules/.package-lock.json, is a real copy).
 */
function runBuildStage(stage: Stage, context: string[], dir: string): string {
  let workdir: string | null = null;
  const env = { ...process.env, PATH: `${path.dirname(process.execPath)}:${process.env.PATH ?? ''}` };
  for (const step of stage.steps) {
    if (step.cmd === 'WORKDIR') workdir = step.args;
    else if (!workdir) throw new Error(`build stage: ${step.cmd} before WORKDIR`);
    else if (step.cmd === 'COPY') {
      const c = parseCopy(step.args);
      if (c.from) throw new Error('build stage: COPY --from is not reproduced');
      for (const src of c.sources) {
        const isDir = !context.includes(path.posix.normalize(src));
        copyFromContext(context, src, copyTarget(c, src, dir, workdir, isDir).replace(path.join(dir, workdir), dir));
      }
    } else if (step.cmd === 'RUN') {
      if (/(^|\s)\/app\b/.test(step.args)) throw new Error(`build stage: RUN must work relative to WORKDIR: ${step.args}`);
      if (/^npm ci(\s|$)/.test(step.args)) {
        if (spawnSync('cp', ['-al', path.join(ROOT, 'node_modules'), path.join(dir, 'node_modules')]).status !== 0) {
          sh(`cp -a ${q(path.join(ROOT, 'node_modules'))} node_modules`, dir);
        }
        const hidden = path.join(dir, 'node_modules/.package-lock.json');
        fs.rmSync(hidden, { force: true });
        fs.copyFileSync(path.join(ROOT, 'node_modules/.package-lock.json'), hidden);
      } else sh(step.args, dir, env);
    } else throw new Error(`build stage: ${step.cmd} is not reproduced by this test`);
  }
  return workdir!;
}

/**
 * The run stage laid out in `root`. Its RUN steps are read, not run (they would change this
 * machine): each command must be one this function knows how to reproduce.
 */
function layOutRunStage(stage: Stage, context: string[], buildDir: string, buildWorkdir: string, root: string): Image {
  const img: Image = {
    env: { ...BASE_ENV },
    workdir: '/',
    uid: 0,
    gid: 0,
    home: '/root',
    volumes: [],
    expose: [],
    healthcheck: null!,
    entrypoint: [],
    cmd: [],
  };
  const users = new Map<string, { uid: number; gid: number; home: string }>();
  const groups = new Map<string, number>();
  for (const step of stage.steps) {
    switch (step.cmd) {
      case 'RUN':
        for (const command of step.args.split('&&').map((s) => s.trim())) {
          const words = command.split(/\s+/);
          const opt = (name: string) => words[words.indexOf(name) + 1]!;
          if (/^apt-get update$/.test(command) || /^rm -rf \/var\/lib\/apt\/lists\/\*$/.test(command)) continue;
          if (words[0] === 'apt-get' && words[1] === 'install') {
            for (const pkg of words.slice(2).filter((w) => !w.startsWith('-'))) {
              assert.equal(spawnSync('dpkg', ['-s', pkg]).status, 0, `the image installs ${pkg}: install it here too (.ci/run)`);
            }
          } else if (words[0] === 'groupadd') groups.set(words.at(-1)!, Number(opt('--gid')));
          else if (words[0] === 'useradd')
            users.set(words.at(-1)!, { uid: Number(opt('--uid')), gid: Number(opt('--gid')), home: opt('--home-dir') });
          else if (words[0] === 'mkdir' && words[1] === '-p')
            for (const d of words.slice(2)) fs.mkdirSync(path.join(root, d), { recursive: true });
          else if (words[0] === 'chown') {
            const [u, g] = words[1]!.split(':').map(Number) as [number, number];
            for (const p of words.slice(2)) fs.chownSync(path.join(root, p), u, g);
          } else if (words[0] === 'chmod') for (const p of words.slice(2)) fs.chmodSync(path.join(root, p), parseInt(words[1]!, 8));
          else throw new Error(`run stage: the container test does not know how to reproduce "${command}"`);
        }
        break;
      case 'ENV':
        Object.assign(img.env, parseEnv(step.args));
        break;
      case 'WORKDIR':
        img.workdir = step.args;
        fs.mkdirSync(path.join(root, step.args), { recursive: true });
        break;
      case 'COPY': {
        const c = parseCopy(step.args);
        for (const src of c.sources) {
          if (c.from) {
            assert.equal(c.from, 'build');
            assert.ok(src.startsWith(`${buildWorkdir}/`), `COPY --from=build ${src}: outside the build WORKDIR`);
            const from = path.join(buildDir, src.slice(buildWorkdir.length + 1));
            const to = copyTarget(c, src, root, img.workdir, fs.statSync(from).isDirectory());
            fs.mkdirSync(path.dirname(to), { recursive: true });
            sh(`cp -a ${q(from)} ${q(to)}`, root);
          } else {
            const isDir = !context.includes(path.posix.normalize(src));
            copyFromContext(context, src, copyTarget(c, src, root, img.workdir, isDir));
          }
        }
        break;
      }
      case 'USER': {
        const [u, g] = step.args.split(':') as [string, string | undefined];
        const user = users.get(u) ?? [...users.values()].find((x) => x.uid === Number(u));
        img.uid = user?.uid ?? Number(u);
        img.gid = g === undefined ? (user?.gid ?? img.uid) : (groups.get(g) ?? Number(g));
        img.home = user?.home ?? '/';
        assert.ok(Number.isInteger(img.uid) && Number.isInteger(img.gid), `USER ${step.args}`);
        break;
      }
      case 'VOLUME':
        img.volumes.push(...execForm(step.args));
        break;
      case 'EXPOSE':
        img.expose.push(...step.args.split(/\s+/).map(Number));
        break;
      case 'HEALTHCHECK':
        img.healthcheck = parseHealthcheck(step.args);
        break;
      case 'ENTRYPOINT':
        img.entrypoint = execForm(step.args);
        break;
      case 'CMD':
        img.cmd = execForm(step.args);
        break;
      default:
        throw new Error(`run stage: ${step.cmd} is not reproduced by this test`);
    }
  }
  // Docker sets HOME from the user's passwd entry.
  img.env.HOME = img.home;
  return img;
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

async function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.once('error', () => resolve(false));
    srv.listen(port, '0.0.0.0', () => srv.close(() => resolve(true)));
  });
}

async function waitFor<T>(
  what: string,
  timeoutMs: number,
  probe: () => Promise<T | null | undefined | false> | T | null | undefined | false,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      const v = await probe();
      if (v) return v;
    } catch (err) {
      last = err;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${String(last)}` : ''}`);
}

interface Mount {
  src: string;
  dst: string;
  ro: boolean;
}

interface Container {
  proc: ChildProcess;
  /** The container's PID 1 as this test sees it. */
  pid: () => Promise<number>;
  stdout: () => string;
  stderr: () => string;
  exited: Promise<{ code: number | null; at: number }>;
}

/** The shell steps that build the container's root from the laid-out image folder, in a new mount namespace. */
function mountScript(root: string, mounts: Mount[]): string {
  const r = (p: string) => q(path.join(root, p));
  const lines = [
    'set -e',
    `mount --bind ${q(root)} ${q(root)}`,
    // The Debian base image: this machine's /usr (bin, lib, sbin are links into it) and /etc.
    `mount --bind /usr ${r('usr')}`,
    `mount -o remount,bind,ro ${r('usr')}`,
    // The official Node image's binary in /usr/local/bin.
    `mount -t tmpfs -o mode=0755 tmpfs ${r('usr/local')}`,
    `mkdir -p ${r('usr/local/bin')}`,
    `touch ${r('usr/local/bin/node')}`,
    `mount --bind ${q(process.execPath)} ${r('usr/local/bin/node')}`,
    `mount -o remount,ro ${r('usr/local')}`,
    `mount --bind /etc ${r('etc')}`,
    `mount -o remount,bind,ro ${r('etc')}`,
    `mount --rbind /dev ${r('dev')}`,
    `mount -t proc proc ${r('proc')}`,
    `mount --bind /sys ${r('sys')}`,
    `mount -o remount,bind,ro ${r('sys')}`,
  ];
  for (const m of mounts) {
    lines.push(`mount --bind ${q(m.src)} ${r(m.dst)}`);
    if (m.ro) lines.push(`mount -o remount,bind,ro ${r(m.dst)}`);
  }
  // Like compose's read_only: true, everything but the mounts above is read-only.
  lines.push(`mount -o remount,bind,ro ${q(root)}`);
  return lines.join('\n');
}

function containerEnv(img: Image, extra: Record<string, string>): string[] {
  return Object.entries({ ...img.env, HOSTNAME: 'ruawatch', ...extra }).map(([k, v]) => `${k}=${v}`);
}

function startContainer(img: Image, root: string, mounts: Mount[], opts: { cmd?: string[]; env?: Record<string, string> } = {}): Container {
  for (const m of mounts) {
    const at = path.join(root, m.dst);
    if (!fs.existsSync(at)) {
      fs.mkdirSync(path.dirname(at), { recursive: true });
      if (fs.statSync(m.src).isDirectory()) fs.mkdirSync(at);
      else fs.writeFileSync(at, '');
    }
  }
  for (const d of ['usr', 'etc', 'dev', 'proc', 'sys', 'tmp']) fs.mkdirSync(path.join(root, d), { recursive: true });
  for (const [link, to] of [
    ['bin', 'usr/bin'],
    ['sbin', 'usr/sbin'],
    ['lib', 'usr/lib'],
    ['lib64', 'usr/lib64'],
  ] as const) {
    if (!fs.lstatSync(path.join(root, link), { throwIfNoEntry: false })) fs.symlinkSync(to, path.join(root, link));
  }
  const argv = [...img.entrypoint, ...(opts.cmd ?? img.cmd)];
  const script = `${mountScript(root, mounts)}\nexec chroot ${q(root)} /usr/bin/setpriv --reuid=${img.uid} --regid=${img.gid} --clear-groups /usr/bin/env -i -C ${q(img.workdir)} ${containerEnv(
    img,
    opts.env ?? {},
  )
    .map(q)
    .join(' ')} ${argv.map(q).join(' ')}`;
  const proc = spawn('unshare', ['--mount', '--pid', '--fork', '--kill-child', '--propagation', 'private', 'sh', '-c', script], {
    stdio: 'pipe',
  });
  let stdout = '';
  let stderr = '';
  proc.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<{ code: number | null; at: number }>((resolve) =>
    proc.on('exit', (code) => resolve({ code, at: Date.now() })),
  );
  return {
    proc,
    stdout: () => stdout,
    stderr: () => stderr,
    exited,
    collectStdout() {
      proc.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    },
    pid: () =>
      waitFor('the container’s PID 1', 5_000, () => {
        const children = fs.readFileSync(`/proc/${proc.pid}/task/${proc.pid}/children`, 'utf8').trim();
        return children ? Number(children.split(/\s+/)[0]) : null;
      }),
  } as Container & { collectStdout(): void };
}

/** A command run inside a running container as its user, as `docker exec` and HEALTHCHECK do. */
function execIn(img: Image, pid: number, command: string[], env: Record<string, string> = {}) {
  return spawnSync(
    'nsenter',
    [
      `--target=${pid}`,
      '--mount',
      '--pid',
      '--root',
      '--wd',
      '--',
      '/usr/bin/setpriv',
      `--reuid=${img.uid}`,
      `--regid=${img.gid}`,
      '--clear-groups',
      '/usr/bin/env',
      '-i',
      ...containerEnv(img, env),
      ...command,
    ],
    { encoding: 'utf8', timeout: 30_000 },
  );
}

/** A new named volume: Docker fills it from the image's folder, owner and mode included. */
function namedVolume(root: string, at: string): string {
  const dir = tempDir('ruawatch-volume-');
  const st = fs.statSync(path.join(root, at));
  fs.chownSync(dir, st.uid, st.gid);
  fs.chmodSync(dir, st.mode & 0o7777);
  return dir;
}

function reportMail(id: string): string {
  const xml = dmarcXml({ reportId: id, records: [record({ ip: '198.51.100.7', count: 3 })] });
  return mail([
    {
      headers:
        'Content-Type: application/gzip\r\nContent-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename="r.xml.gz"',
      body: base64Lines(gzip(xml)),
    },
  ]);
}

function duBytes(p: string): number {
  const r = spawnSync('du', ['-sb', p], { encoding: 'utf8' });
  return Number(r.stdout.split('\t')[0]);
}

const MiB = 1024 * 1024;

describe('.dockerignore and compose.yaml', () => {
  it('keeps report samples, secrets, local configs, databases and test output out of the build context', () => {
    const { ignored } = dockerignore(fs.readFileSync(path.join(ROOT, '.dockerignore'), 'utf8'));
    for (const p of [
      'fixtures/dmarc-aggregate/x.xml',
      'secrets/dmarc-imap',
      'ruawatch.toml',
      'config/local.toml',
      'data/ruawatch.sqlite',
      'src/x.sqlite',
      'test-artifacts/dashboard.png',
      'test/run.test.ts',
      'bench/run.ts',
      'devtools/dovecot.ts',
      'node_modules/x/index.js',
      'dist/src/cli/main.js',
      '.git/config',
      '.env',
    ]) {
      assert.ok(ignored(p), `${p} is sent to docker build`);
    }
    for (const p of ['config.example.toml', 'package.json', 'package-lock.json', 'src/cli/main.ts', 'migrations/0001_create_reports.sql']) {
      assert.ok(!ignored(p), `${p} is not sent to docker build`);
    }
    const tops = new Set(contextFiles(ROOT).map((f) => f.split('/')[0]));
    assert.deepEqual([...tops].sort(), [
      'config.example.toml',
      'migrations',
      'package-lock.json',
      'package.json',
      'src',
      'tsconfig.build.json',
      'tsconfig.json',
    ]);
  });

  it('compose.yaml runs the image as it is: the web port on 127.0.0.1 only, the named volume on /data, the config and secret read-only, the image’s health check', () => {
    const run = dockerfile.stages.at(-1)!;
    const env = Object.assign({}, ...run.steps.filter((s) => s.cmd === 'ENV').map((s) => parseEnv(s.args))) as Record<string, string>;
    const health = parseHealthcheck(run.steps.find((s) => s.cmd === 'HEALTHCHECK')!.args);
    const volumes = run.steps.filter((s) => s.cmd === 'VOLUME').flatMap((s) => execForm(s.args));
    const listenPort = /:(\d+)$/.exec(env.RUAWATCH_LISTEN ?? '')?.[1];
    assert.ok(listenPort, 'the image sets RUAWATCH_LISTEN');
    assert.equal(service.build, '.');
    assert.equal(service.read_only, true);
    assert.ok(service.ports?.length);
    for (const p of service.ports) {
      const m = /^127\.0\.0\.1:(\d+):(\d+)$/.exec(p);
      assert.ok(m, `port ${p} is not bound to 127.0.0.1 on the host`);
      assert.equal(m[2], listenPort, `port ${p} does not reach the image's listen port`);
    }
    const named = (service.volumes ?? []).map((v) => v.split(':')).filter(([src]) => !src!.startsWith('.') && !src!.startsWith('/'));
    assert.deepEqual(
      named.map(([, dst]) => dst),
      volumes,
    );
    for (const [src] of named) assert.ok(compose.volumes && src! in compose.volumes, `volume ${src} is not declared`);
    const config = (service.volumes ?? []).find((v) => v.split(':')[1] === env.RUAWATCH_CONFIG);
    assert.ok(config?.endsWith(':ro'), `no read-only mount on ${env.RUAWATCH_CONFIG}`);
    for (const s of service.secrets ?? []) assert.ok(compose.secrets?.[s]?.file, `secret ${s} has no file`);
    // The same check as the image's, so `docker compose ps` and `docker inspect` agree.
    const hc = service.healthcheck!;
    assert.deepEqual(hc.test, ['CMD', ...health.cmd]);
    assert.deepEqual(
      [hc.interval, hc.timeout, hc.start_period, String(hc.retries)],
      [health.options.interval, health.options.timeout, health.options['start-period'], health.options.retries],
    );
    // The image's environment sets defaults only: nothing that would override the config file.
    for (const k of Object.keys(env))
      assert.ok(!/^RUAWATCH_[A-Z]+_[A-Z_]+$/.test(k), `the image sets ${k}, which overrides the config file`);
  });

  it('is shown line for line in the deployment documentation', () => {
    const text = fs.readFileSync(path.join(ROOT, 'compose.yaml'), 'utf8');
    const docs = [
      path.join(ROOT, 'README.md'),
      ...(fs.existsSync(path.join(ROOT, 'docs')) ? fs.readdirSync(path.join(ROOT, 'docs')).map((f) => path.join(ROOT, 'docs', f)) : []),
    ];
    const blocks = docs
      .filter((f) => f.endsWith('.md'))
      .flatMap((f) => [...fs.readFileSync(f, 'utf8').matchAll(/```yaml\n([\s\S]*?)```/g)].map((m) => m[1]));
    assert.ok(blocks.includes(text), 'no ```yaml block in README.md or docs/ equals compose.yaml');
  });
});

describe('the container image, laid out from the Dockerfile and run without Docker', { skip }, () => {
  let work: string;
  let root: string;
  let img: Image;
  let buildDir: string;
  let dovecot: Dovecot;
  const running: Container[] = [];

  before(async () => {
    work = tempDir('ruawatch-image-');
    fs.chmodSync(work, 0o755);
    buildDir = path.join(work, 'build');
    root = path.join(work, 'root');
    fs.mkdirSync(buildDir);
    fs.mkdirSync(root);
    const context = contextFiles(ROOT);
    const build = dockerfile.stages.find((s) => s.name === 'build');
    assert.ok(build, 'a stage named build');
    const buildWorkdir = runBuildStage(build, context, buildDir);
    img = layOutRunStage(dockerfile.stages.at(-1)!, context, buildDir, buildWorkdir, root);
    dovecot = await startDovecot(['dmarc@example.com']);
  });

  after(async () => {
    for (const c of running) c.proc.kill('SIGKILL');
    await dovecot?.stop();
    if (work) fs.rmSync(work, { recursive: true, force: true });
  });

  it('runs on the Node version the Dockerfile names', (t) => {
    const want = `v${dockerfile.args.NODE_VERSION}`;
    if (process.env.CI) assert.equal(process.version, want, '.ci/run installs the Dockerfile’s NODE_VERSION');
    else if (process.version !== want) t.diagnostic(`this Node is ${process.version}; the image has ${want}`);
    assert.match(dockerfile.stages.at(-1)!.image, new RegExp(`^node:${dockerfile.args.NODE_VERSION}-`));
  });

  it('holds production dependencies only, src/ compiled and no test code, in little space', (t) => {
    const app = path.join(root, img.workdir);
    assert.deepEqual(fs.readdirSync(app).sort(), ['dist', 'migrations', 'node_modules', 'package.json']);
    assert.deepEqual(fs.readdirSync(path.join(app, 'dist')), ['src']);
    const mods = path.join(app, 'node_modules');
    // Every package the lockfile marks dev-only (direct or pulled in by one) is absent.
    const lock = JSON.parse(fs.readFileSync(path.join(ROOT, 'package-lock.json'), 'utf8')) as {
      packages: Record<string, { dev?: boolean }>;
    };
    const devOnly = Object.entries(lock.packages).filter(([p, v]) => p && v.dev);
    assert.ok(devOnly.length > 50);
    for (const [p] of devOnly) assert.ok(!fs.existsSync(path.join(app, p)), `dev dependency ${p} is in the image`);
    const sqlite = path.join(mods, 'better-sqlite3');
    for (const leftover of ['deps', 'src', 'binding.gyp'])
      assert.ok(!fs.existsSync(path.join(sqlite, leftover)), `better-sqlite3/${leftover} is in the image`);
    assert.deepEqual(fs.readdirSync(path.join(sqlite, 'prebuilds')), [`${process.platform}-${process.arch}.node`]);
    const bytes = duBytes(mods);
    t.diagnostic(`node_modules ${(bytes / MiB).toFixed(1)} MiB, dist/src ${(duBytes(path.join(app, 'dist')) / MiB).toFixed(1)} MiB`);
    assert.ok(bytes < 64 * MiB, `node_modules is ${(bytes / MiB).toFixed(1)} MiB`);
    // Files the image copies are root's: the image's user cannot change its own code.
    assert.equal(fs.statSync(path.join(app, 'dist/src/cli/main.js')).uid, 0);
  });

  it('runs config.example.toml with a mailbox as the image user: /healthz 200, the HEALTHCHECK passes, the report stored under /data, SIGTERM exits 0 within 10 s', async (t) => {
    // The compose project's folder, as the deployment documentation has it set up.
    const project = tempDir('ruawatch-compose-');
    const secretName = service.secrets![0]!;
    const secretFile = path.join(project, compose.secrets![secretName]!.file);
    fs.mkdirSync(path.dirname(secretFile), { recursive: true });
    fs.writeFileSync(secretFile, `${PASSWORD}\n`, { mode: 0o600 });
    fs.chownSync(secretFile, img.uid, img.gid);
    const example = fs.readFileSync(path.join(ROOT, 'config.example.toml'), 'utf8');
    fs.writeFileSync(
      path.join(project, 'ruawatch.toml'),
      `${example}\n[[mailbox]]\nname = "dmarc"\nhost = "127.0.0.1"\nport = ${dovecot.port}\nsecurity = "none"\nuser = "dmarc@example.com"\npassword_file = "/run/secrets/${secretName}"\n`,
    );
    const mounts: Mount[] = [];
    for (const v of service.volumes ?? []) {
      const [src, dst, mode] = v.split(':') as [string, string, string | undefined];
      const named = !src.startsWith('.') && !src.startsWith('/');
      mounts.push({ src: named ? namedVolume(root, dst) : path.resolve(project, src), dst, ro: mode === 'ro' });
    }
    for (const s of service.secrets ?? [])
      mounts.push({ src: path.resolve(project, compose.secrets![s]!.file), dst: `/run/secrets/${s}`, ro: true });
    const volume = mounts.find((m) => m.dst === '/data')!.src;

    await dovecot.append('dmarc@example.com', reportMail('container-1'));
    // The image listens on 8080; on a shared machine that port may be taken, and this test shares
    // the host's network, so then another port is given the way a user would, by the environment.
    const env: Record<string, string> = { ...(service.environment ?? {}) };
    let port = Number(/:(\d+)$/.exec(img.env.RUAWATCH_LISTEN!)![1]);
    if (!(await portFree(port))) {
      port = await freePort();
      env.RUAWATCH_WEB_LISTEN = `0.0.0.0:${port}`;
      t.diagnostic(`8080 is taken here: RUAWATCH_WEB_LISTEN=0.0.0.0:${port}`);
    }
    const c = startContainer(img, root, mounts, { env }) as Container & { collectStdout(): void };
    c.collectStdout();
    running.push(c);
    const pid = await c.pid();
    const health = await waitFor('/healthz to answer 200 after a poll', 30_000, async () => {
      const res = await fetch(`http://127.0.0.1:${port}/healthz`);
      const body = (await res.json()) as { status: string; last_success: string | null };
      return res.status === 200 && body.last_success !== null && body;
    }).catch((err: Error) => {
      throw new Error(`${err.message}\n${c.stderr()}`);
    });
    assert.equal(health.status, 'ok');
    const db = path.join(volume, path.basename(img.env.RUAWATCH_DB!));
    await waitFor('the report in /data', 10_000, () => {
      if (!fs.existsSync(db)) return false;
      const d = new Database(db, { readonly: true, fileMustExist: true });
      try {
        return (d.prepare(`SELECT COUNT(*) AS n FROM reports`).get() as { n: number }).n === 1;
      } finally {
        d.close();
      }
    });
    assert.equal(fs.statSync(db).uid, img.uid);
    assert.equal(await dovecot.count('dmarc@example.com', 'Processed'), 1);
    assert.match(c.stderr(), new RegExp(`"database":"${img.env.RUAWATCH_DB}"`));

    const check = execIn(img, pid, img.healthcheck.cmd, env);
    assert.equal(check.status, 0, `${check.stdout}${check.stderr}`);
    assert.match(check.stdout, /\/healthz: 200 /);
    t.diagnostic(`HEALTHCHECK: ${check.stdout.trim()}`);

    const t0 = Date.now();
    process.kill(pid, 'SIGTERM');
    const { code, at } = await c.exited;
    assert.equal(code, 0, c.stderr());
    assert.ok(at - t0 < 10_000, `stopped in ${at - t0} ms`);
    t.diagnostic(`stopped ${at - t0} ms after SIGTERM`);
    // Nothing but the database was written, and only in the volume.
    assert.deepEqual(
      fs.readdirSync(volume).filter((f) => !/^ruawatch\.sqlite(-wal|-shm)?$/.test(f)),
      [],
    );
  });

  it('adds a report to the rollups, with the root read-only, when SQLite sorts it on disk: its temporary files go to /data', async () => {
    const volume = namedVolume(root, '/data');
    // 40,000 sources over two days: the sorts of its settle outgrow their memory and go to files.
    const input = path.join(tempDir(), 'wide.xml');
    const records = Array.from({ length: 40_000 }, (_, i) => record({ ip: `10.${i >> 16}.${(i >> 8) & 255}.${i & 255}`, count: 1 }));
    fs.writeFileSync(input, dmarcXml({ reportId: 'wide', begin: 1_700_000_000, end: 1_700_086_399, records }));
    fs.chmodSync(input, 0o644);
    const inImage = async (cmd: string[]) => {
      const c = startContainer(
        img,
        root,
        [
          { src: volume, dst: '/data', ro: false },
          { src: input, dst: '/in/wide.xml', ro: true },
        ],
        { cmd },
      );
      running.push(c);
      const { code } = await c.exited;
      return { code, stdout: c.stdout(), stderr: c.stderr() };
    };
    const ingest = await inImage(['ingest', '/in/wide.xml']);
    assert.equal(ingest.code, 0, ingest.stderr);
    assert.doesNotMatch(ingest.stderr, /rollups/, 'the settle failed');
    const db = new Database(path.join(volume, path.basename(img.env.RUAWATCH_DB!)), { readonly: true });
    try {
      assert.equal(db.prepare(`SELECT COUNT(*) FROM rollup_pending`).pluck().get(), 0);
      assert.equal(Math.round(db.prepare(`SELECT SUM(messages) FROM dmarc_daily`).pluck().get() as number), 40_000);
      assert.equal(db.prepare(`SELECT COUNT(DISTINCT source_ip) FROM dmarc_daily`).pluck().get(), 40_000);
    } finally {
      db.close();
    }
  });

  it('stops one-shot commands on SIGTERM and SIGINT when they are the container’s only process: ingest waiting on stdin, report blocked writing', async (t) => {
    const volume = namedVolume(root, '/data');
    // Enough sources that `report --json` fills the pipe nobody reads and blocks in write().
    const db = path.join(volume, path.basename(img.env.RUAWATCH_DB!));
    const input = path.join(tempDir(), 'big.xml');
    fs.writeFileSync(
      input,
      dmarcXml({ reportId: 'many', records: Array.from({ length: 4000 }, (_, i) => record({ ip: `10.${i >> 8}.${i & 255}.1` })) }),
    );
    const ing = spawnSync(process.execPath, [CLI, 'ingest', '--db', db, input], { encoding: 'utf8' });
    assert.equal(ing.status, 0, ing.stderr);
    for (const f of fs.readdirSync(volume)) fs.chownSync(path.join(volume, f), img.uid, img.gid);
    for (const signal of ['SIGTERM', 'SIGINT'] as const) {
      for (const cmd of [
        ['ingest', '-'],
        ['report', '--json'],
      ]) {
        const c = startContainer(img, root, [{ src: volume, dst: '/data', ro: false }], { cmd });
        running.push(c);
        const pid = await c.pid();
        // Long enough for Node to start and reach its read or write.
        await new Promise((r) => setTimeout(r, 1500));
        const early = await Promise.race([c.exited, new Promise((r) => setTimeout(() => r(null), 0))]);
        assert.equal(early, null, `${cmd.join(' ')} ended by itself: ${c.stderr()}`);
        const t0 = Date.now();
        process.kill(pid, signal);
        const result = await Promise.race([c.exited, new Promise<null>((r) => setTimeout(() => r(null), 5_000))]);
        assert.ok(result, `${cmd.join(' ')} as PID 1 ignored ${signal}`);
        assert.equal(result.code, 128 + (signal === 'SIGTERM' ? 15 : 2), c.stderr());
        t.diagnostic(`${cmd.join(' ')}: ${signal} -> exit ${result.code} in ${result.at - t0} ms`);
      }
    }
  });
});
