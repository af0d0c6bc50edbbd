import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { ANALYSIS_SETTINGS, defaultSettings, type AnalysisSettings } from '../../src/analyse/index.js';
import { limitsOf } from '../../src/config/load.js';
import { configSchema, type Config } from '../../src/config/schema.js';
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
