import fs from 'node:fs';
import path from 'node:path';

/**
 * Just enough of the Dockerfile and .dockerignore formats to lay an image out from them without a
 * Docker engine (test/container.test.ts). Anything this reader does not know is an error, so a
 * Dockerfile step the test cannot reproduce fails the test instead of being skipped.
 */

export interface Instruction {
  cmd: string;
  args: string;
}

export interface Stage {
  image: string;
  name: string | null;
  steps: Instruction[];
}

export interface Dockerfile {
  args: Record<string, string>;
  stages: Stage[];
}

export function parseDockerfile(text: string): Dockerfile {
  const logical: string[] = [];
  let cur = '';
  for (const raw of text.split('\n')) {
    const line = raw.trimEnd();
    if (/^\s*#/.test(line)) continue; // comments, also between continuation lines
    if (line.endsWith('\\')) {
      cur += `${line.slice(0, -1)} `;
      continue;
    }
    cur += line;
    if (cur.trim()) logical.push(cur.trim());
    cur = '';
  }
  const out: Dockerfile = { args: {}, stages: [] };
  for (const l of logical) {
    const m = /^([A-Za-z]+)\s+(.*)$/s.exec(l);
    if (!m) throw new Error(`Dockerfile: cannot read "${l}"`);
    const cmd = m[1]!.toUpperCase();
    const args = m[2]!.trim();
    if (cmd === 'FROM') {
      const f = /^(\S+)(?:\s+AS\s+(\S+))?$/i.exec(args);
      if (!f) throw new Error(`Dockerfile: cannot read FROM ${args}`);
      const image = f[1]!.replace(/\$\{(\w+)\}/g, (_, k: string) => out.args[k] ?? '');
      out.stages.push({ image, name: f[2] ?? null, steps: [] });
    } else if (out.stages.length === 0) {
      if (cmd !== 'ARG') throw new Error(`Dockerfile: ${cmd} before the first FROM`);
      const a = /^(\w+)=(\S+)$/.exec(args);
      if (!a) throw new Error(`Dockerfile: ARG without a default: ${args}`);
      out.args[a[1]!] = a[2]!;
    } else {
      out.stages.at(-1)!.steps.push({ cmd, args });
    }
  }
  return out;
}

/** `ENV A=1 B="two words"` as an object; the legacy `ENV A 1` form is refused. */
export function parseEnv(args: string): Record<string, string> {
  const env: Record<string, string> = {};
  const re = /(\w+)=("(?:[^"\\]|\\.)*"|\S*)\s*/gy;
  let m: RegExpExecArray | null;
  let at = 0;
  while ((m = re.exec(args))) {
    env[m[1]!] = m[2]!.startsWith('"') ? (JSON.parse(m[2]!) as string) : m[2]!;
    at = re.lastIndex;
  }
  if (at !== args.length) throw new Error(`Dockerfile: cannot read ENV ${args}`);
  return env;
}

/** An exec-form (JSON array) argument list; the shell form is refused. */
export function execForm(args: string): string[] {
  const v = JSON.parse(args) as unknown;
  if (!Array.isArray(v) || !v.every((x) => typeof x === 'string')) throw new Error(`Dockerfile: expected a JSON array, not ${args}`);
  return v;
}

export interface Copy {
  from: string | null;
  sources: string[];
  dest: string;
}

export function parseCopy(args: string): Copy {
  const words = args.split(/\s+/);
  let from: string | null = null;
  while (words[0]?.startsWith('--')) {
    const flag = words.shift()!;
    const f = /^--from=(\S+)$/.exec(flag);
    if (!f) throw new Error(`Dockerfile: COPY flag ${flag} is not reproduced by the container test`);
    from = f[1]!;
  }
  if (words.length < 2) throw new Error(`Dockerfile: COPY ${args}`);
  return { from, sources: words.slice(0, -1), dest: words.at(-1)! };
}

export interface Healthcheck {
  options: Record<string, string>;
  cmd: string[];
}

export function parseHealthcheck(args: string): Healthcheck {
  const m = /^((?:--[\w-]+=\S+\s+)*)CMD\s+(\[.*\])$/s.exec(args);
  if (!m) throw new Error(`Dockerfile: HEALTHCHECK must be --options then CMD [exec form]: ${args}`);
  const options: Record<string, string> = {};
  for (const o of m[1]!.trim().split(/\s+/).filter(Boolean)) {
    const [k, v] = o.slice(2).split('=') as [string, string];
    options[k] = v;
  }
  return { options, cmd: execForm(m[2]!) };
}

/**
 * .dockerignore as Docker reads it: patterns in order, the last that matches a path or one of its
 * parent folders decides, `!` re-includes; `*` and `?` stay within one path segment, `**` spans any.
 */
export function dockerignore(text: string): { ignored: (rel: string) => boolean; reincludes: (dir: string) => boolean } {
  const rules = text
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('#'))
    .map((l) => {
      const negate = l.startsWith('!');
      const pattern = path.posix.normalize(negate ? l.slice(1) : l).replace(/^\/+|\/+$/g, '');
      let re = '';
      for (let i = 0; i < pattern.length; i++) {
        const c = pattern[i]!;
        if (c === '*' && pattern[i + 1] === '*') {
          re += '.*';
          i++;
          if (pattern[i + 1] === '/') i++;
        } else if (c === '*') re += '[^/]*';
        else if (c === '?') re += '[^/]';
        else re += c.replace(/[.+^${}()|[\]\\]/g, '\\$&');
      }
      return { negate, pattern, re: new RegExp(`^${re}$`) };
    });
  return {
    ignored: (rel) => {
      const parts = rel.split('/');
      const prefixes = parts.map((_, i) => parts.slice(0, i + 1).join('/'));
      let excluded = false;
      for (const r of rules) if (prefixes.some((p) => r.re.test(p))) excluded = !r.negate;
      return excluded;
    },
    // Whether an exception could bring back something inside an excluded folder.
    reincludes: (dir) => rules.some((r) => r.negate && (r.pattern.startsWith(`${dir}/`) || r.pattern.startsWith('*'))),
  };
}

/** Every file of the build context, relative and sorted: what `docker build .` would send. */
export function contextFiles(root: string): string[] {
  const { ignored, reincludes } = dockerignore(
    fs.existsSync(path.join(root, '.dockerignore')) ? fs.readFileSync(path.join(root, '.dockerignore'), 'utf8') : '',
  );
  const out: string[] = [];
  const walk = (rel: string) => {
    for (const e of fs.readdirSync(path.join(root, rel), { withFileTypes: true })) {
      const r = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory()) {
        if (!ignored(r) || reincludes(r)) walk(r);
      } else if (!ignored(r)) out.push(r);
    }
  };
  walk('');
  return out.sort();
}
