import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { ERROR_CODES, RuawatchError, errorCode, isRetryable, ownCode } from '../../src/errors.js';
import { createLogger } from '../../src/log.js';
import { readMailbox, type MailboxPassOptions } from '../../src/pipeline/mailbox.js';
import { DeliveryError, withRetry } from '../../src/notify/types.js';
import { MailboxStore } from '../../src/store/mailboxes.js';
import { defaultLimits } from '../../src/unpack/limits.js';
import { ROOT, bufferInput, count, freshStore } from '../helpers/common.js';
import { FakeMailbox } from '../helpers/fake-mailbox.js';
import { dmarcXml, gzip, record, zip } from '../helpers/synth.js';

const SRC = path.join(ROOT, 'src');

/** Every TypeScript file under src/ that runs in Node (the dashboard's browser script does not). */
function sources(): { file: string; text: string }[] {
  const out: { file: string; text: string }[] = [];
  const walk = (dir: string) => {
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
      const p = path.join(dir, e.name);
      if (e.isDirectory()) {
        if (path.relative(SRC, p) !== path.join('web', 'client')) walk(p);
      } else if (e.name.endsWith('.ts')) out.push({ file: path.relative(ROOT, p), text: fs.readFileSync(p, 'utf8') });
    }
  };
  walk(SRC);
  return out;
}

describe('one error model (src/errors.ts)', () => {
  it('lists exactly the codes src/ raises or compares: none missing, none unused', () => {
    const used = new Map<string, string>();
    for (const { file, text } of sources()) {
      for (const m of text.matchAll(/['"`](E_[A-Z][A-Z0-9_]*)['"`]/g)) if (!used.has(m[1]!)) used.set(m[1]!, file);
    }
    const listed = Object.keys(ERROR_CODES);
    const unlisted = [...used].filter(([code]) => !listed.includes(code)).map(([code, file]) => `${code} (${file})`);
    assert.deepEqual(unlisted, [], 'codes used in src/ but not in ERROR_CODES');
    const unused = listed.filter((code) => !used.has(code));
    assert.deepEqual(unused, [], 'codes in ERROR_CODES that nothing in src/ raises');
  });

  it('raises nothing without a code: no plain Error thrown or rejected in src/', () => {
    const plain: string[] = [];
    for (const { file, text } of sources()) {
      for (const [i, line] of text.split('\n').entries()) {
        if (/\bnew (Error|TypeError|RangeError)\(/.test(line) || /\bextends Error\b/.test(line))
          plain.push(`${file}:${i + 1}: ${line.trim()}`);
      }
    }
    // The one class built on Error is RuawatchError itself; every other error is one of it.
    assert.deepEqual(
      plain.map((l) => l.replace(/:\d+:/, ':')),
      [`${path.join('src', 'errors.ts')}: export class RuawatchError extends Error {`],
    );
  });

  it('gives every error of its own a listed code, and any other error one of its own kind', () => {
    assert.equal(ownCode(new RuawatchError('E_ZIP', 'x')), 'E_ZIP');
    assert.equal(ownCode(Object.assign(new Error('database is locked'), { code: 'SQLITE_BUSY' })), 'E_DB');
    assert.equal(ownCode(Object.assign(new Error('reset'), { code: 'ECONNRESET' })), 'E_INTERNAL');
    assert.equal(errorCode(Object.assign(new Error('reset'), { code: 'ECONNRESET' })), 'ECONNRESET');
    assert.equal(errorCode('a string'), 'E_INTERNAL');
    const refused = new DeliveryError('403 forbidden', 'channel');
    const later = new DeliveryError('502 bad gateway', 'retry');
    assert.deepEqual([refused.code, refused.retryable, later.code, later.retryable], ['E_DELIVERY', false, 'E_DELIVERY', true]);
  });
});

describe('"not a report" is one outcome, with one code (E_NOT_REPORT)', () => {
  const notFeedback = '<?xml version="1.0"?><catalog><book/></catalog>';
  const settings = '{"settings": {"a": 1}}';
  const cases: [string, Buffer | string, RegExp][] = [
    ['plain.xml', notFeedback, /^XML whose root element is <catalog>, not <feedback>: not a DMARC aggregate report$/],
    ['plain.json', settings, /^JSON with no "policies" array: not an SMTP TLS report/],
    // The parsers' verdict is wrapped like a container's own: same prefix, same code.
    ['wrapped.xml.gz', gzip(notFeedback), /^gzip holding XML whose root element is <catalog>/],
    ['wrapped.json.gz', gzip(settings), /^gzip holding JSON with no "policies" array/],
    ['page.html.gz', gzip('<!DOCTYPE html><html><body>hello</body></html>'), /^gzip holding an HTML document, not a report$/],
    ['readme.zip', zip({ 'README.txt': 'nothing here' }), /^a zip archive with no report \(README\.txt: plain text/],
  ];
  for (const [name, bytes, reason] of cases) {
    it(`skips ${name} with its reason, and records it as E_NOT_REPORT`, async () => {
      const { db, ingestor } = freshStore();
      try {
        const result = await ingestor.ingest(bufferInput(name, bytes));
        assert.equal(result.leaves.length, 1);
        const leaf = result.leaves[0]!;
        assert.equal(leaf.status, 'none', JSON.stringify(leaf));
        assert.match(leaf.status === 'none' ? leaf.reason : '', reason);
        assert.deepEqual(db.prepare('SELECT input, outcome, error_code FROM ingest_failures').all(), [
          { input: name, outcome: 'skipped', error_code: 'E_NOT_REPORT' },
        ]);
      } finally {
        db.close();
      }
    });
  }
});

describe('retryable is a property of the error, whatever its class', () => {
  const report = dmarcXml({ reportId: 'r1', records: [record({ ip: '192.0.2.1' })] });

  function setup() {
    const { db, ingestor } = freshStore();
    const opts: MailboxPassOptions = {
      ingestor,
      positions: new MailboxStore(db),
      limits: defaultLimits,
      log: createLogger('silent'),
      onResult: () => undefined,
      baseDelayMs: 1,
      maxDelayMs: 2,
    };
    return { db, opts };
  }

  it('reconnects after a dropped connection reported by an adapter error of any class', async () => {
    const { db, opts } = setup();
    const box = new FakeMailbox();
    box.add(report);
    // Another adapter's own error class, saying retryable and carrying a code of its own.
    const lost = Object.assign(new Error('mailbox fake: socket hang up'), { code: 'E_IMAP', retryable: true });
    box.faults = [{ op: 'download', at: 1, error: lost }];
    await readMailbox(box, opts);
    assert.equal(box.events.filter((e) => e.op === 'open').length, 2);
    assert.equal(count(db, 'SELECT COUNT(*) FROM reports'), 1);
    assert.deepEqual(box.processed, [1]);
    db.close();
  });

  it('does not reconnect after an error that does not say it is retryable, even one of its own class', async () => {
    const { db, opts } = setup();
    const box = new FakeMailbox();
    box.add(report);
    box.faults = [{ op: 'download', at: 1, error: new RuawatchError('E_IMAP', 'mailbox fake: folder deleted') }];
    await assert.rejects(readMailbox(box, opts), /folder deleted/);
    assert.equal(box.events.filter((e) => e.op === 'open').length, 1);
    assert.deepEqual(box.processed, []);
    db.close();
  });

  it('sends again after a channel failure that says it is retryable, and only then', async () => {
    let calls = 0;
    const policy = { attempts: 3, baseMs: 1, maxWaitMs: 10 };
    const failWith = (err: unknown) => () => {
      calls++;
      return Promise.reject(err);
    };
    await assert.rejects(
      withRetry(policy, failWith(new DeliveryError('502', 'retry')), () => Promise.resolve()),
      /502/,
    );
    assert.equal(calls, 3);
    calls = 0;
    await assert.rejects(withRetry(policy, failWith(new DeliveryError('404 no such room', 'channel')), () => Promise.resolve()));
    assert.equal(calls, 1);
    assert.equal(isRetryable(new DeliveryError('x', 'message')), false);
  });
});
