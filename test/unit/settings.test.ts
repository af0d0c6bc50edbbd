import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { ANALYSIS_SETTINGS, defaultSettings, type AnalysisSettings } from '../../src/analyse/index.js';
import { z } from 'zod';
import { applyEnv, limitsOf } from '../../src/config/load.js';
import { SECRET_KEYS, configSchema, type Config } from '../../src/config/schema.js';
import { LIMIT_NAMES, defaultLimits, limitSetting, type LimitSetting } from '../../src/unpack/limits.js';
import { settingsOf } from '../../src/pipeline/alerts.js';
import { ROOT } from '../helpers/common.js';

describe('[analysis] settings, stated once (analyse/settings.ts)', () => {
  it('gives the defaults the rules use when nothing is configured', () => {
    assert.deepEqual(settingsOf(configSchema.parse({})), defaultSettings);
    // The figures themselves, as docs/configuration.md states them.
    assert.equal(defaultSettings.recentDays, 7);
    assert.equal(defaultSettings.dropMinBaselineRate, 0.9);
    assert.equal(defaultSettings.tlsMinFailureRate, 0.05);
  });

  it('has a schema key for every table entry, and a table entry for every schema key but reverse_dns', () => {
    const schemaKeys = Object.keys(configSchema.shape.analysis.unwrap().shape).sort();
    const tableKeys = Object.values(ANALYSIS_SETTINGS)
      .map((s) => s.key)
      .sort();
    assert.deepEqual(
      schemaKeys.filter((k) => k !== 'reverse_dns'),
      tableKeys,
    );
    assert.ok(schemaKeys.includes('reverse_dns'));
    assert.equal(new Set(tableKeys).size, tableKeys.length, 'no config key twice');
    // And every name the rules read comes from the table.
    assert.deepEqual(Object.keys(defaultSettings).sort(), Object.keys(ANALYSIS_SETTINGS).sort());
  });

  it('divides a percent by 100 and takes a count as it is', () => {
    const s = settingsOf(configSchema.parse({ analysis: { drop_points: 30, tls_min_failure_rate: 2.5, recent_days: 14 } }));
    assert.equal(s.dropPoints, 0.3);
    assert.equal(s.tlsMinFailureRate, 0.025);
    assert.equal(s.recentDays, 14);
    // The others keep their defaults.
    assert.deepEqual(
      { ...s, dropPoints: 0, tlsMinFailureRate: 0, recentDays: 0 },
      { ...defaultSettings, dropPoints: 0, tlsMinFailureRate: 0, recentDays: 0 },
    );
  });

  it('states each default as config.example.toml and docs/configuration.md do', () => {
    const example = fs.readFileSync(path.join(ROOT, 'config.example.toml'), 'utf8');
    const section = /^\[analysis\]\n([\s\S]*?)^\[/m.exec(example)?.[1] ?? '';
    const docs = fs.readFileSync(path.join(ROOT, 'docs/configuration.md'), 'utf8');
    const table = /^## `\[analysis\]`\n([\s\S]*?)^## /m.exec(docs)?.[1] ?? '';
    for (const spec of Object.values(ANALYSIS_SETTINGS)) {
      assert.equal(new RegExp(`^${spec.key} = (\\S+)`, 'm').exec(section)?.[1], String(spec.default), `config.example.toml: ${spec.key}`);
      assert.equal(
        new RegExp(`^\\| \`${spec.key}\` \\| ([^|]+) \\|`, 'm').exec(table)?.[1],
        String(spec.default),
        `configuration.md: ${spec.key}`,
      );
    }
  });

  it('checks each entry by its unit: a count is a whole number above 0, a percent 0..100', () => {
    for (const spec of Object.values(ANALYSIS_SETTINGS)) {
      const at = (v: unknown) => configSchema.safeParse({ analysis: { [spec.key]: v } }).success;
      assert.equal(at(spec.default), true, spec.key);
      assert.equal(at(0), spec.unit === 'percent', `${spec.key} = 0`);
      assert.equal(at(100.5), false, `${spec.key} = 100.5`);
      assert.equal(at(101), spec.unit === 'count', `${spec.key} = 101`);
    }
  });

  it('keeps the config typed: a key is a number, a misspelt one does not compile', () => {
    const config: Config = configSchema.parse({});
    const days: number = config.analysis.recent_days;
    const dns: boolean = config.analysis.reverse_dns;
    // @ts-expect-error: no such key
    const none: unknown = config.analysis.recent_dayz;
    const rules: AnalysisSettings = settingsOf(config);
    // @ts-expect-error: the rules' names are camelCase
    const wrong: unknown = rules.recent_days;
    assert.deepEqual([days, dns, none, wrong], [7, true, undefined, undefined]);
  });

  it('is plain data: nothing in src/analyse imports the schema library or the config', () => {
    const dir = path.join(ROOT, 'src', 'analyse');
    const files = fs.readdirSync(dir).filter((f) => f.endsWith('.ts'));
    assert.ok(files.includes('settings.ts'));
    for (const f of files) {
      const text = fs.readFileSync(path.join(dir, f), 'utf8');
      assert.doesNotMatch(text, /from '(zod|\.\.\/config\/[^']*)'/, f);
    }
  });
});

describe('[limits], typed by the caps of unpack/limits.ts', () => {
  it('has one snake-case key per cap, each a number', () => {
    const config = configSchema.parse({ limits: { max_xml_depth: 12 } });
    const depth: number = config.limits.max_xml_depth;
    // @ts-expect-error: a misspelt key is a type error
    const none: unknown = config.limits.max_xml_depht;
    const key: 'max_decompressed_bytes' = limitSetting('maxDecompressedBytes');
    // @ts-expect-error: the key of a cap is its own, not another's
    const other: 'max_zip_entries' = limitSetting('maxNesting');
    assert.deepEqual([depth, none, key, other], [12, undefined, 'max_decompressed_bytes', 'max_nesting']);
    const keys: LimitSetting[] = LIMIT_NAMES.map((k) => limitSetting(k));
    assert.deepEqual(Object.keys(config.limits).sort(), keys.sort());
  });

  it('gives the caps a configured value or their defaults', () => {
    assert.deepEqual(limitsOf(configSchema.parse({})), defaultLimits);
    const limits = limitsOf(configSchema.parse({ limits: { max_xml_depth: 12, max_zip_entries: 7 } }));
    assert.deepEqual(limits, { ...defaultLimits, maxXmlDepth: 12, maxZipEntries: 7 });
  });
});

interface JsonSchema {
  type?: string;
  properties?: Record<string, JsonSchema>;
  items?: JsonSchema;
}

/** Every leaf key of a JSON Schema (a list of objects, as [[mailbox]], counts as its object). */
function leavesOf(s: JsonSchema, path: string[] = [], out: { path: string[]; type: string }[] = []) {
  if (s.properties) for (const [k, v] of Object.entries(s.properties)) leavesOf(v, [...path, k], out);
  else if (s.type === 'array' && s.items?.properties) leavesOf(s.items, path, out);
  else out.push({ path, type: s.type ?? 'string' });
  return out;
}

function nested(path: string[], value: unknown): Record<string, unknown> {
  return path.reduceRight<Record<string, unknown>>((inner, k) => ({ [k]: inner }), value as Record<string, unknown>);
}

describe('RUAWATCH_ variables, read off the schema', () => {
  // The leaves as zod's JSON Schema export lists them: a walk of the schema apart from load.ts's own.
  const leaves = leavesOf(z.toJSONSchema(configSchema, { io: 'input' }) as JsonSchema);

  it('set every leaf key of the schema, each by exactly one variable (and a secret by its _FILE too)', () => {
    assert.ok(leaves.length > 100, `${leaves.length} leaves`);
    const names = new Map<string, string>();
    for (const { path, type } of leaves) {
      const [raw, value] =
        type === 'integer' || type === 'number'
          ? ['7', 7]
          : type === 'boolean'
            ? ['true', true]
            : type === 'array'
              ? ['a, b', ['a', 'b']]
              : ['x', 'x'];
      const key = path[path.length - 1] ?? '';
      const box = path[0] === 'mailbox';
      // A mailbox's name is the part of its variables between MAILBOX_ and the key.
      if (box && key === 'name') continue;
      const name = `RUAWATCH_${(box ? ['mailbox', 'dmarc', key] : path).join('_').toUpperCase()}`;
      const at = (k: string, v: unknown) => (box ? { mailbox: [{ name: 'dmarc', [k]: v }] } : nested([...path.slice(0, -1), k], v));
      assert.equal(names.get(name), undefined, `${name} names both ${names.get(name)} and ${path.join('.')}`);
      names.set(name, path.join('.'));
      const tree = {};
      applyEnv(tree, { [name]: raw });
      assert.deepEqual(tree, at(key, value), `${name} sets ${path.join('.')}`);
      if (SECRET_KEYS.has(key)) {
        const fromFile = {};
        applyEnv(fromFile, { [`${name}_FILE`]: '/run/secrets/s' });
        assert.deepEqual(fromFile, at(`${key}_file`, '/run/secrets/s'), `${name}_FILE`);
      }
    }
  });

  it('refuses a variable that names no key', () => {
    for (const name of [
      'RUAWATCH_ANALYSIS_RECENT',
      'RUAWATCH_ALERTS_EMAIL',
      'RUAWATCH_LIMITS_MAX_XML_DEPTH_FILE',
      'RUAWATCH_MAILBOX_DMARC_NOPE',
    ]) {
      assert.throws(() => applyEnv({}, { [name]: '1' }), /no such (mailbox )?setting/, name);
    }
  });
});
