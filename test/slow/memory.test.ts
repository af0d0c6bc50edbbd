import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { ROOT, tempDir } from '../helpers/common.js';
import { gzipBomb } from '../helpers/synth.js';

// Slow tier: run by `npm test` (and so by CI), left out of `npm run test:unit`.
describe('memory while refusing a bomb', () => {
  it('streams a bomb of well-formed XML up to the size cap without holding it, in a heap smaller than the data', (t) => {
    const dir = tempDir();
    const file = path.join(dir, 'bomb.xml.gz');
    // Valid, endless XML (<x/> repeated), so neither sniffing nor parsing stops it: only the cap does.
    fs.writeFileSync(file, gzipBomb(1024 * 1024 * 1024, '<?xml version="1.0"?><feedback>', '<x/>'));
    const mod = (m: string) => JSON.stringify(path.join(ROOT, 'dist/src', m));
    const peakGrowth = (capMiB: number, heapMiB: number) => {
      const script = `
        const { Ingestor } = await import(${mod('pipeline/ingest.js')});
        const { openDb } = await import(${mod('store/db.js')});
        const { ReportStore } = await import(${mod('store/reports.js')});
        const { fileInput } = await import(${mod('sources/files.js')});
        const { defaultLimits } = await import(${mod('unpack/limits.js')});
        const { createLogger } = await import(${mod('log.js')});
        const limits = { ...defaultLimits, maxCompressionRatio: 1e9, maxDecompressedBytes: ${capMiB} * 1048576, maxInputDecompressedBytes: 1e12 };
        const ing = new Ingestor(new ReportStore(openDb(${JSON.stringify(path.join(dir, `db${capMiB}.sqlite`))})), limits, createLogger('silent'));
        const before = process.resourceUsage().maxRSS;
        const r = await ing.ingest(fileInput(${JSON.stringify(file)}, 1e12));
        console.log(JSON.stringify({ before, after: process.resourceUsage().maxRSS, leaf: r.leaves[0] }));`;
      // The young generation pinned at 16 MiB per semi-space: Node 22+ lets V8 grow it further
      // by default (peak RSS of this run: 98 MiB on Node 20, 136 MiB on Node 24 at the default
      // cap, 107 MiB on Node 24 pinned), short-lived garbage that says nothing about holding data.
      const args = [`--max-old-space-size=${heapMiB}`, '--max-semi-space-size=16', '--input-type=module', '-e', script];
      const out = JSON.parse(execFileSync(process.execPath, args, { encoding: 'utf8' })) as {
        before: number;
        after: number;
        leaf: { code: string; error: string };
      };
      assert.equal(out.leaf.code, 'E_LIMIT');
      assert.match(out.leaf.error, new RegExp(`decompresses to more than ${capMiB} MiB`));
      return (out.after - out.before) / 1024;
    };
    // 256 MiB of XML through a 64 MiB JavaScript heap: were any of it held, the process would die
    // out of memory instead of refusing the input at the cap.
    const grew = peakGrowth(256, 64);
    t.diagnostic(`peak RSS grew by ${grew.toFixed(0)} MiB while streaming 256 MiB to the cap with a 64 MiB heap`);
    assert.ok(grew < 120, `peak RSS grew by ${grew.toFixed(0)} MiB`);
    // At the default cap and heap, the growth stays well under the 200 MiB budget.
    const atDefault = peakGrowth(50, 2048);
    t.diagnostic(`peak RSS grew by ${atDefault.toFixed(0)} MiB at the default 50 MiB cap`);
    assert.ok(atDefault < 120, `peak RSS grew by ${atDefault.toFixed(0)} MiB`);
  });
});
