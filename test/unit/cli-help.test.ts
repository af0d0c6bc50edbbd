import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { formatHelp, synopsis } from '../../src/cli/command.js';
import { COMMANDS, commandReference } from '../../src/cli/program.js';
import { runCli } from '../helpers/cli.js';
import { ROOT } from '../helpers/common.js';

const names = COMMANDS.map((c) => c.spec.name);

describe('ruawatch --help', () => {
  it('every command and subcommand answers --help and -h with its flags and an example, exit 0', async () => {
    assert.deepEqual(names, [
      'ingest',
      'report',
      'fetch',
      'alerts',
      'digest',
      'notify test',
      'notify status',
      'notify requeue',
      'prune',
      'run',
      'config check',
      'healthcheck',
      'whois',
    ]);
    for (const c of COMMANDS) {
      for (const flag of ['--help', '-h']) {
        const r = await runCli([...c.spec.name.split(' '), flag]);
        assert.equal(r.code, 0, `${c.spec.name} ${flag}: ${r.stderr}`);
        assert.equal(r.stderr, '');
        assert.equal(r.stdout, formatHelp(c.spec));
      }
      const help = formatHelp(c.spec);
      assert.ok(help.startsWith(`usage: ${synopsis(c.spec)}\n`));
      for (const [name, f] of Object.entries(c.spec.flags)) {
        assert.match(help, new RegExp(`^ {2}--${name}${f.type === 'string' ? ` ${f.value.replace(/\|/g, '\\|')}` : ''} +\\S`, 'm'));
      }
      assert.match(help, /^ {2}-h, --help +print this help$/m);
      assert.match(help, /^Examples?:\n {2}ruawatch /m);
      for (const e of c.spec.examples) assert.ok(e.startsWith(`ruawatch ${c.spec.name}`) || e.includes(`| ruawatch ${c.spec.name}`), e);
      // Within 100 columns, but for the usage line and examples, which are not wrapped.
      for (const line of help.split('\n').filter((l) => !l.startsWith('usage:') && !l.startsWith('  ruawatch'))) {
        assert.ok(line.length <= 100, `${c.spec.name}: a line of ${line.length} columns: ${line}`);
      }
    }
  });

  it('help wins over everything else on the line, a bad flag or a missing argument included', async () => {
    for (const argv of [
      ['ingest', '--bogus', '--help'],
      ['ingest', '-h'],
      ['help', 'ingest'],
      ['report', '--since', 'never', '-h'],
    ]) {
      const r = await runCli(argv);
      assert.equal(r.code, 0, argv.join(' '));
      assert.match(r.stdout, /^usage: ruawatch (ingest|report) /);
    }
    // After "--" it is an argument like any other: a PATH named --help that does not exist.
    const literal = await runCli(['ingest', '--db', ':memory:', '--', '--help']);
    assert.equal(literal.code, 1);
    assert.match(literal.stdout, /--help: .*E_IO/);
  });

  it('bare ruawatch lists the commands (exit 2), --help and help list them with exit 0, --version prints the version', async () => {
    const bare = await runCli([]);
    assert.equal(bare.code, 2);
    for (const n of names) assert.match(bare.stdout, new RegExp(`^ {2}${n} {2,}\\S`, 'm'));
    for (const argv of [['--help'], ['-h'], ['help']]) {
      const r = await runCli(argv);
      assert.deepEqual([r.code, r.stdout], [0, bare.stdout]);
    }
    const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { version: string };
    assert.deepEqual(await runCli(['--version']), { code: 0, stdout: `ruawatch ${pkg.version}\n`, stderr: '' });
  });

  it('a group lists its subcommands; a missing or unknown one is a usage error', async () => {
    for (const group of ['notify', 'config']) {
      const help = await runCli([group, '--help']);
      assert.equal(help.code, 0);
      for (const n of names.filter((x) => x.startsWith(`${group} `))) assert.match(help.stdout, new RegExp(`^ {2}${n} `, 'm'));
      const none = await runCli([group]);
      assert.equal(none.code, 2);
      assert.match(none.stderr, new RegExp(`ruawatch ${group} needs a subcommand`));
      assert.equal((await runCli([group, 'frobnicate'])).code, 2);
    }
    const unknown = await runCli(['frobnicate']);
    assert.equal(unknown.code, 2);
    assert.match(unknown.stderr, /^ruawatch: unknown command "frobnicate"/);
  });

  it('unknown flags and stray arguments are usage errors that show the usage line', async () => {
    const bad = await runCli(['report', '--bogus']);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /Unknown option '--bogus'/);
    assert.match(bad.stderr, /usage: ruawatch report \[--db FILE\]/);
    const stray = await runCli(['report', 'example.com']);
    assert.equal(stray.code, 2);
    assert.match(stray.stderr, /unexpected argument "example\.com"/);
  });
});

describe('the command reference cannot drift from --help', () => {
  it('docs/commands.md is the --help of every command (npm run docs:commands writes it)', () => {
    const file = fs.readFileSync(path.join(ROOT, 'docs/commands.md'), 'utf8');
    assert.equal(file, commandReference(), 'docs/commands.md is out of date: run npm run docs:commands');
  });

  it("the README's command headings are the commands' usage lines, in order", () => {
    const readme = fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8');
    const section = readme.slice(readme.indexOf('\n## Commands'), readme.indexOf('\n## ', readme.indexOf('\n## Commands') + 1));
    const headings = [...section.matchAll(/^### `(.+)`$/gm)].map((m) => m[1]);
    assert.deepEqual(
      headings,
      COMMANDS.map((c) => synopsis(c.spec)),
    );
  });
});
