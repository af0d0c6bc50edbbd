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
    // Copies of one report among the fixtures included: inputs commit in input order, so the copy
    // kept is the same on any number of threads.
    const inputs: IngestInput[] = [];
    for await (const input of expandPaths([FIXTURES], defaultLimits.maxReportBytes)) inputs.push(input);
    assert.ok(inputs.length > 100, `${inputs.length} inputs`);

    const one = freshStore();
    const single = await ingestAll(one.ingestor, inputs);
    const many = freshStore();
    const pool = new IngestPool(many.file, defaultLimits, silent, 3);
    const pooled = await ingestAll(pool, inputs);
    await pool.close();
    assert.ok(
      single.records > 2000 && single.failed.length > 5 && single.skipped.length > 5 && single.duplicates + single.conflicts.length > 5,
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
    'keeps the earliest input of reports sharing a key, and lists the later ones with other bytes as conflicts, on 1, 2 and 4 threads alike',
    { timeout: 300_000 },
    async () => {
      const records = (n: number, net: number) => Array.from({ length: n }, (_, i) => record({ ip: `10.${net}.${i >> 8}.${i & 255}` }));
      const tls = (successful: number) =>
        JSON.stringify({
          'organization-name': 'Receiver Inc.',
          'date-range': { 'start-datetime': '2023-11-14T00:00:00Z', 'end-datetime': '2023-11-14T23:59:59Z' },
          'report-id': 'tls-same',
          policies: [
            { policy: { 'policy-type': 'sts', 'policy-domain': 'example.com' }, summary: { 'total-successful-session-count': successful } },
          ],
        });
      const small = dmarcXml({ reportId: 'k1', records: records(1, 9) });
      const k2a = dmarcXml({ reportId: 'k2', records: records(2, 2) });
      // Early inputs are slow to read (thousands of records, the first past a writer's buffer) and
      // later ones quick: a thread with a later one would otherwise commit first.
      const inputs = () => [
        bufferInput('00-k1-big.xml.gz', gzip(dmarcXml({ reportId: 'k1', records: records(6000, 1) }))),
        bufferInput('01-k1-small.xml', small),
        bufferInput('02-k1-small-again.xml', small),
        bufferInput('03-k2-a.xml', k2a),
        bufferInput('04-k2-b.xml', dmarcXml({ reportId: 'k2', records: records(3, 3) })),
        bufferInput('05-k2-a-again.xml', k2a),
        ...Array.from({ length: 6 }, (_, i) => bufferInput(`06-other-${i}.xml`, dmarcXml({ reportId: `other-${i}` }))),
        bufferInput('07-tls-a.json', tls(10)),
        bufferInput('08-tls-b.json', tls(11)),
        bufferInput('09-k3-big.xml.gz', gzip(dmarcXml({ reportId: 'k3', records: records(3000, 4) }))),
        bufferInput('10-k3-small.xml', dmarcXml({ reportId: 'k3', records: records(1, 5) })),
      ];
      const conflict = (input: string, stored: string, kind: string, reportId: string) => ({
        input,
        stored_input: stored,
        kind,
        reporter: kind === 'tlsrpt' ? 'Receiver Inc.' : 'receiver.example',
        report_id: reportId,
      });
      const expected = [
        conflict('01-k1-small.xml', '00-k1-big.xml.gz', 'dmarc', 'k1'),
        conflict('02-k1-small-again.xml', '00-k1-big.xml.gz', 'dmarc', 'k1'),
        conflict('04-k2-b.xml', '03-k2-a.xml', 'dmarc', 'k2'),
        conflict('08-tls-b.json', '07-tls-a.json', 'tlsrpt', 'tls-same'),
        conflict('10-k3-small.xml', '09-k3-big.xml.gz', 'dmarc', 'k3'),
      ];
      for (const threads of [1, 2, 4]) {
        for (let run = 0; run < 4; run++) {
          const { db, file, ingestor } = freshStore();
          const pool = threads > 1 ? new IngestPool(file, defaultLimits, silent, threads) : null;
          const s = await ingestAll(pool ?? ingestor, inputs());
          await pool?.close();
          const what = `${threads} thread(s), run ${run + 1}`;
          assert.deepEqual(s.conflicts, expected, what);
          assert.deepEqual([s.reports.dmarc, s.reports.tlsrpt, s.duplicates, s.failed.length], [9, 1, 1, 0], what);
          assert.deepEqual(
            db.prepare("SELECT report_id, input FROM reports WHERE report_id IN ('k1', 'k2', 'k3', 'tls-same') ORDER BY report_id").all(),
            [
              { report_id: 'k1', input: '00-k1-big.xml.gz' },
              { report_id: 'k2', input: '03-k2-a.xml' },
              { report_id: 'k3', input: '09-k3-big.xml.gz' },
              { report_id: 'tls-same', input: '07-tls-a.json' },
            ],
            what,
          );
        }
      }
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

describe('write turns when a thread dies', () => {
  it(
    'passes the turns of a dead thread on, so a later input waiting for its turn on another thread is stored',
    { timeout: 120_000 },
    async () => {
      const { db, file } = freshStore();
      const big = gzip(
        dmarcXml({
          reportId: 'lost',
          records: Array.from({ length: 60_000 }, (_, i) => record({ ip: `198.51.${(i >> 8) & 255}.${i & 255}` })),
        }),
      );
      const pool = new IngestPool(file, defaultLimits, silent, 2);
      const lost = pool.ingest(bufferInput('lost.xml.gz', big));
      // The second thread's input comes later in input order: it cannot write before 'lost' is done.
      const waiting = pool.ingest(bufferInput('waiting.xml', dmarcXml({ reportId: 'waiting' })));
      const inside = pool as unknown as { slots: { worker: Worker }[]; lock: SharedArrayBuffer };
      const cell = new Int32Array(inside.lock);
      for (let i = 0; i < 2000 && Atomics.load(cell, 0) === 0; i++) await new Promise((r) => setTimeout(r, 5));
      assert.equal(Atomics.load(cell, 0), inside.slots[0]!.worker.threadId + 1, 'the first thread holds the lock');
      await inside.slots[0]!.worker.terminate();
      assert.deepEqual(
        (await lost).leaves.map((l) => (l.status === 'failed' ? l.code : l.status)),
        ['E_WORKER'],
      );
      assert.deepEqual(
        (await waiting).leaves.map((l) => l.status),
        ['stored'],
      );
      const after = await pool.ingest(bufferInput('after.xml', dmarcXml({ reportId: 'after' })));
      assert.deepEqual(
        after.leaves.map((l) => l.status),
        ['stored'],
      );
      await pool.close();
      assert.deepEqual(db.prepare('SELECT report_id FROM reports ORDER BY id').pluck().all(), ['waiting', 'after']);
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
