import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Worker } from 'node:worker_threads';
import { createLogger } from '../src/log.js';
import { addToSummary, emptySummary, type IngestInput, type IngestSummary } from '../src/pipeline/ingest.js';
import { ingestEach, inOrder, IngestPool, type IngestRunner } from '../src/pipeline/pool.js';
import { expandPaths } from '../src/sources/files.js';
import type { Db } from '../src/store/db.js';
import { SharedLock } from '../src/store/lock.js';
import { defaultLimits } from '../src/unpack/limits.js';
import { bufferInput, count, FIXTURES, freshStore } from './helpers/common.js';
import { dmarcXml, gzip, record } from './helpers/synth.js';

const silent = createLogger('silent');

async function ingestAll(runner: IngestRunner, inputs: Parameters<typeof ingestEach>[0]): Promise<IngestSummary> {
  const summary = emptySummary();
  await ingestEach(inputs, runner, (r) => addToSummary(summary, r));
  return summary;
}

/** Everything stored, without row ids (which depend on the order writers took turns in). */
function contents(db: Db): Record<string, unknown[]> {
  const q = (sql: string) => db.prepare(sql).all();
  return {
    reports: q(`SELECT kind, reporter, reporter_email, report_id, policy_domain, begin_ts, end_ts, schema_version, version_text, generator,
      contact_info, errors, record_count, message_count, raw_sha256, raw_size, input FROM reports ORDER BY input, kind, report_id, policy_domain, begin_ts`),
    policies: q(`SELECT r.input, r.report_id, p.domain, p.adkim, p.aspf, p.p, p.sp, p.np, p.pct, p.fo, p.testing, p.discovery_method
      FROM dmarc_policies p JOIN reports r ON r.id = p.report_id ORDER BY r.input, r.report_id`),
    records:
      q(`SELECT r.input, r.report_id, d.source_ip, d.count, d.disposition, d.dkim_aligned, d.spf_aligned, d.header_from, d.envelope_from,
      d.envelope_to, d.reasons, d.dkim_results, d.spf_results FROM dmarc_records d JOIN reports r ON r.id = d.report_id ORDER BY r.input, r.report_id, d.id`),
    tls: q(`SELECT r.input, p.policy_type, p.policy_domain, p.policy_strings, p.mx_hosts, p.successful, p.failed, f.result_type, f.sending_mta_ip,
      f.receiving_mx_hostname, f.failed_sessions FROM tls_policies p JOIN reports r ON r.id = p.report_id LEFT JOIN tls_failures f ON f.policy_id = p.id
      ORDER BY r.input, p.id, f.rowid`),
    failures: q(
      `SELECT r.input, f.source_ip, f.reported_domain, f.auth_failure, f.dkim_selector FROM failure_reports f JOIN reports r ON r.id = f.report_id ORDER BY r.input`,
    ),
    ingestFailures: q('SELECT input, outcome, error_code, message, sha256, size FROM ingest_failures ORDER BY input, error_code, message'),
  };
}

describe('ingest on worker threads', () => {
  it('stores every fixture exactly as one thread does: the same summary, in the same order, and the same rows', async () => {
    // Which of several copies of one report is kept depends on which thread commits first, so the
    // inputs compared are those that are not a copy of an earlier one (the next test has copies).
    const all: IngestInput[] = [];
    for await (const input of expandPaths([FIXTURES], defaultLimits.maxReportBytes)) all.push(input);
    const copies = new Set<string>();
    await ingestEach(all, freshStore().ingestor, (r) => {
      if (r.leaves.some((l) => l.status === 'duplicate')) copies.add(r.input);
    });
    const inputs = all.filter((i) => !copies.has(i.name));
    assert.ok(copies.size > 0 && inputs.length > 100, `${copies.size} copies, ${inputs.length} inputs`);

    const one = freshStore();
    const single = await ingestAll(one.ingestor, inputs);
    const many = freshStore();
    const pool = new IngestPool(many.file, defaultLimits, silent, 3);
    const pooled = await ingestAll(pool, inputs);
    await pool.close();
    assert.ok(
      single.records > 2000 && single.failed.length > 5 && single.skipped.length > 5 && single.duplicates === 0,
      JSON.stringify(single).slice(0, 300),
    );
    assert.deepEqual(pooled, single);
    const a = contents(one.db);
    const b = contents(many.db);
    for (const table of Object.keys(a)) {
      assert.ok(a[table]!.length > 0, `${table} is empty`);
      assert.deepEqual(b[table], a[table], table);
    }
  });

  it(
    'stores a report that arrives many times at once exactly once, big (streamed in its transaction) and small alike',
    { timeout: 120_000 },
    async () => {
      const { db, file } = freshStore();
      // 12,000 records: more than a writer buffers, so its transaction stays open while it is parsed.
      const big = gzip(
        dmarcXml({ reportId: 'big', records: Array.from({ length: 12_000 }, (_, i) => record({ ip: `198.51.${i >> 8}.${i & 255}` })) }),
      );
      const inputs = [];
      for (let copy = 0; copy < 3; copy++) {
        inputs.push(bufferInput(`big-${copy}.xml.gz`, big));
        for (let i = 0; i < 30; i++)
          inputs.push(
            bufferInput(
              `small-${i}-${copy}.xml`,
              dmarcXml({ reportId: `small-${i}`, records: [record({}), record({ ip: '192.0.2.77' })] }),
            ),
          );
      }
      const pool = new IngestPool(file, defaultLimits, silent, 4);
      const s = await ingestAll(pool, inputs);
      await pool.close();
      assert.deepEqual([s.inputs, s.reports.dmarc, s.duplicates, s.records, s.failed.length], [93, 31, 62, 12_000 + 60, 0]);
      assert.equal(count(db, 'SELECT COUNT(*) FROM reports'), 31);
      assert.equal(count(db, 'SELECT COUNT(*) FROM dmarc_records'), 12_060);
      assert.equal(count(db, "SELECT record_count FROM reports WHERE report_id = 'big'"), 12_000);
    },
  );

  it(
    'fails the inputs of a thread that dies with E_WORKER (to be retried), frees its lock, and carries on with a new thread',
    { timeout: 120_000 },
    async () => {
      const { db, file } = freshStore();
      const big = gzip(
        dmarcXml({
          reportId: 'lost',
          records: Array.from({ length: 60_000 }, (_, i) => record({ ip: `198.51.${(i >> 8) & 255}.${i & 255}` })),
        }),
      );
      const pool = new IngestPool(file, defaultLimits, silent, 1);
      const lost = pool.ingest(bufferInput('lost.xml.gz', big));
      // Past 5,000 records the thread holds the write lock while it parses the rest: end it then.
      const inside = pool as unknown as { slots: { worker: Worker }[]; lock: SharedArrayBuffer };
      const cell = new Int32Array(inside.lock);
      for (let i = 0; i < 2000 && Atomics.load(cell, 0) === 0; i++) await new Promise((r) => setTimeout(r, 5));
      assert.equal(Atomics.load(cell, 0), inside.slots[0]!.worker.threadId + 1, 'the thread holds the lock');
      await inside.slots[0]!.worker.terminate();
      const result = await lost;
      assert.equal(result.leaves.length, 1);
      assert.deepEqual([result.leaves[0]!.status, (result.leaves[0] as { code: string }).code], ['failed', 'E_WORKER']);
      const next = await pool.ingest(bufferInput('next.xml', dmarcXml({ reportId: 'next' })));
      assert.deepEqual(
        next.leaves.map((l) => l.status),
        ['stored'],
      );
      await pool.close();
      assert.equal(count(db, "SELECT COUNT(*) FROM reports WHERE report_id = 'lost'"), 0);
      assert.equal(count(db, "SELECT COUNT(*) FROM reports WHERE report_id = 'next'"), 1);
    },
  );
});

describe('inOrder', () => {
  const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

  it('delivers in item order, starts past a slow item, and never runs more than asked', async () => {
    let running = 0;
    let most = 0;
    const startedAt: Record<number, number> = {};
    const delivered: number[] = [];
    const t0 = Date.now();
    await inOrder(
      [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
      async (n) => {
        startedAt[n] = Date.now() - t0;
        most = Math.max(most, ++running);
        await sleep(n === 0 ? 300 : 10 + ((n * 37) % 30)); // item 0 is slow, the rest finish out of order
        running--;
        return n * n;
      },
      3,
      (n, square) => {
        assert.equal(square, n * n);
        delivered.push(n);
      },
    );
    assert.deepEqual(delivered, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    assert.equal(most, 3);
    assert.ok(startedAt[9]! < 250, `item 9 started at ${startedAt[9]} ms, while item 0 was still running`);
  });

  it('stops starting when asked, finishing and delivering what was started; a failure surfaces in order', async () => {
    const delivered: number[] = [];
    let stop = false;
    await inOrder(
      [1, 2, 3, 4, 5, 6],
      async (n) => {
        if (n === 2) stop = true;
        await sleep(5);
        return n;
      },
      2,
      (n) => void delivered.push(n),
      () => stop,
    );
    assert.deepEqual(delivered, [1, 2]);
    const seen: number[] = [];
    await assert.rejects(
      inOrder(
        [1, 2, 3],
        async (n) => {
          if (n === 2) throw new Error('two failed');
          return n;
        },
        3,
        (n) => void seen.push(n),
      ),
      /two failed/,
    );
    assert.deepEqual(seen, [1]);
  });
});

describe('the write lock shared between threads', () => {
  const helper = new URL('./helpers/lock-worker.js', import.meta.url);
  const run = (data: object) =>
    new Promise<{ worker: Worker; message: string }>((resolve, reject) => {
      const worker = new Worker(helper, { workerData: data });
      worker.once('message', (message: string) => resolve({ worker, message }));
      worker.once('error', reject);
    });

  it('lets one thread at a time in: 4 threads x 2,000 unguarded increments lose none', async () => {
    const lock = SharedLock.buffer();
    const counter = new SharedArrayBuffer(4);
    const done = await Promise.all(Array.from({ length: 4 }, () => run({ lock, counter, iterations: 2000, die: false })));
    assert.deepEqual(
      done.map((d) => d.message),
      ['done', 'done', 'done', 'done'],
    );
    assert.equal(new Int32Array(counter)[0], 8000);
  });

  it('is freed when the thread holding it has ended, and only then', async () => {
    const lock = SharedLock.buffer();
    const { worker, message } = await run({ lock, counter: new SharedArrayBuffer(4), iterations: 0, die: true });
    assert.equal(message, 'holding');
    const id = worker.threadId;
    await new Promise((r) => worker.once('exit', r));
    assert.equal(SharedLock.freeIfHeldBy(lock, id + 1), false, 'another thread id frees nothing');
    assert.equal(SharedLock.freeIfHeldBy(lock, id), true);
    const mine = new SharedLock(lock);
    mine.acquire();
    assert.equal(SharedLock.freeIfHeldBy(lock, id), false, 'held by this thread now');
    mine.release();
  });
});
