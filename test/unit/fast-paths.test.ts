/**
 * The code that does by hand what a library does (ARCHITECTURE.md, "Fast paths") says so where it
 * is: a header naming the invariant and the test that holds it. The table in ARCHITECTURE.md and
 * those headers name the same files and the same tests.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { ROOT } from '../helpers/common.js';

const HEADER = 'Fast path (ARCHITECTURE.md, "Fast paths")';

interface Row {
  files: string[];
  tests: string[];
}

function tableRows(): Row[] {
  const doc = fs.readFileSync(path.join(ROOT, 'ARCHITECTURE.md'), 'utf8');
  const section = doc.slice(doc.indexOf('## Fast paths'));
  const table = section.slice(0, section.indexOf('\n## '));
  const rows: Row[] = [];
  for (const line of table.split('\n')) {
    const cells = line.split('|').slice(1, -1);
    if (cells.length !== 3 || /^-+$/.test(cells[0]!.trim()) || cells[0]!.trim() === 'fast path') continue;
    const ticked = (cell: string) => [...cell.matchAll(/`([^`]+)`/g)].map((m) => m[1]!);
    rows.push({
      files: ticked(cells[0]!).filter((t) => /^[a-z-]+\/[a-z-]+\.ts$/.test(t)),
      tests: ticked(cells[2]!).filter((t) => /^test\/.+\.test\.ts$/.test(t)),
    });
  }
  return rows;
}

/** Each fast-path header of a file: its text from the header's first line to the end of its comment. */
function headers(file: string): string[] {
  const text = fs.readFileSync(path.join(ROOT, 'src', file), 'utf8');
  const out: string[] = [];
  for (let i = text.indexOf(HEADER); i >= 0; i = text.indexOf(HEADER, i + 1)) {
    out.push(text.slice(i, text.indexOf('*/', i)).replace(/\n\s*\*\s?/g, ' '));
  }
  return out;
}

function sourceFiles(dir = path.join(ROOT, 'src')): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) return sourceFiles(p);
    return e.name.endsWith('.ts') ? [path.relative(path.join(ROOT, 'src'), p)] : [];
  });
}

describe('fast paths (ARCHITECTURE.md)', () => {
  const rows = tableRows();

  it('are listed in a table of at least the known ones, each with its files and tests', () => {
    assert.ok(rows.length >= 6, `${rows.length} rows`);
    for (const row of rows) {
      assert.ok(row.files.length > 0 && row.tests.length > 0, JSON.stringify(row));
      for (const t of row.tests) assert.ok(fs.existsSync(path.join(ROOT, t)), `${t} exists`);
    }
  });

  it('say so where they are: a header with the invariant and the tests of its row', () => {
    for (const row of rows) {
      for (const file of row.files) {
        const found = headers(file).filter((h) => row.tests.every((t) => h.includes(t)));
        assert.equal(found.length, 1, `${file}: one header "${HEADER}" naming ${row.tests.join(', ')}`);
        assert.match(found[0]!, /Invariant: .+Held by: /, `${file}: the header states the invariant, then what holds it`);
      }
    }
  });

  it('have a header only where the table lists them', () => {
    const listed = rows.flatMap((r) => r.files);
    for (const file of sourceFiles()) {
      const n = headers(file).length;
      assert.equal(n, listed.filter((f) => f === file).length, `${file}: ${n} fast-path headers`);
    }
  });
});
