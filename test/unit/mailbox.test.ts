import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { RuawatchError } from '../../src/errors.js';
import { createLogger } from '../../src/log.js';
import { fetchAll } from '../../src/pipeline/fetch.js';
import type { IngestInput, InputResult } from '../../src/pipeline/ingest.js';
import { MailboxError, batches, readMailbox, type MailboxPassOptions, type WaitingMessage } from '../../src/pipeline/mailbox.js';
import type { IngestRunner } from '../../src/pipeline/pool.js';
import { LEASE_SECONDS, MailboxStore, leaseHolder } from '../../src/store/mailboxes.js';
import { defaultLimits, type Limits } from '../../src/unpack/limits.js';
import { count, freshStore } from '../helpers/common.js';
import { FakeMailbox, dropped } from '../helpers/fake-mailbox.js';
import { dmarcXml, record } from '../helpers/synth.js';

const log = createLogger('silent');

function report(id: string): string {
  return dmarcXml({ reportId: id, records: [record({ ip: '192.0.2.1' })] });
}

/** An ingest runner that fails chosen inputs with a code, as a worker thread or the database would. */
function failing(inner: IngestRunner, codes: Record<string, string>): IngestRunner {
  return {
    inFlight: inner.inFlight,
    ingest(input: IngestInput): Promise<InputResult> {
      const code = codes[input.name];
      if (!code) return inner.ingest(input);
      return Promise.resolve({ input: input.name, leaves: [{ input: input.name, status: 'failed', code, error: `injected ${code}` }] });
    },
  };
}

function setup(limits: Limits = defaultLimits) {
  const { db, ingestor, file } = freshStore(limits);
  const positions = new MailboxStore(db);
  const results: InputResult[] = [];
  const opts: MailboxPassOptions = {
    ingestor,
    positions,
    limits,
    log,
    onResult: (r) => results.push(r),
    baseDelayMs: 1,
    maxDelayMs: 2,
  };
  const reports = () => count(db, 'SELECT COUNT(*) FROM reports');
  const all = { ingestor, positions, limits, log, command: 'fetch' };
  return { db, file, positions, results, opts, reports, all };
}

describe('mailbox loop (pipeline/mailbox.ts) over a mailbox in memory', () => {
  it('batches by count and by bytes, a message larger than a batch alone', () => {
    const m = (order: number, size: number): WaitingMessage => ({ id: String(order), order, size });
    const sizes = (b: WaitingMessage[][]) => b.map((x) => x.map((y) => y.order));
    assert.deepEqual(
      sizes([
        ...batches(
          [1, 2, 3, 4, 5].map((i) => m(i, 10)),
          1000,
          2,
        ),
      ]),
      [[1, 2], [3, 4], [5]],
    );
    assert.deepEqual(sizes([...batches([m(1, 40), m(2, 40), m(3, 40), m(4, 500), m(5, 1)], 100, 50)]), [[1, 2], [3], [4], [5]]);
  });

  it('acknowledges only what is committed, processed and invalid apart, and keeps the position', async () => {
    const { positions, results, opts, reports, db } = setup();
    const box = new FakeMailbox();
    box.add(report('a'));
    box.add('plain words, not a report');
    box.add(report('b'));
    box.add(report('a')); // the same report again: a duplicate, still processed
    const seenAtAck: number[] = [];
    box.onAcknowledge = () => seenAtAck.push(reports());
    await readMailbox(box, opts);
    assert.deepEqual([box.processed, box.invalid, [...box.inbox.keys()]], [[1, 3, 4], [2], []]);
    // Every report was in the database before the first acknowledgement was sent.
    assert.ok(seenAtAck.every((n) => n === 2));
    assert.deepEqual(
      results.map((r) => r.leaves.map((l) => l.status)),
      [['stored'], ['none'], ['stored'], ['duplicate']],
    );
    assert.deepEqual(positions.position('fake', 'INBOX', 1), { uidvalidity: 1, lastUid: 4 });
    const reason = db.prepare(`SELECT reason FROM mailbox_messages WHERE uid = 2`).get() as { reason: string };
    assert.match(reason.reason, /plain text, not a report/);
    // A second pass lists from the position and finds nothing.
    results.length = 0;
    await readMailbox(box, opts);
    assert.equal(results.length, 0);
    assert.deepEqual(box.events.filter((e) => e.op === 'list').at(-1), { op: 'list', after: 4 });
  });

  it('downloads the next batch while the current one is ingested (two batches in flight)', async () => {
    const { opts } = setup();
    const box = new FakeMailbox();
    for (let i = 0; i < 5; i++) box.add(report(`f${i}`));
    await readMailbox(box, { ...opts, batchMessages: 2 });
    const ops = box.events.filter((e) => e.op === 'download' || e.op === 'acknowledge').map((e) => `${e.op}:${e.ids.join(',')}`);
    assert.deepEqual(ops, ['download:1,2', 'download:3,4', 'acknowledge:1,2', 'download:5', 'acknowledge:3,4', 'acknowledge:5']);
  });

  it('leaves a message that failed for an infrastructure reason in place, and moves the position only past a contiguous run', async () => {
    const { positions, opts, results } = setup();
    const box = new FakeMailbox();
    for (let i = 0; i < 4; i++) box.add(report(`r${i}`));
    await readMailbox(box, { ...opts, ingestor: failing(opts.ingestor, { 'fake:2': 'E_WORKER' }) });
    assert.deepEqual([box.processed, [...box.inbox.keys()]], [[1, 3, 4], [2]]);
    assert.equal(positions.position('fake', 'INBOX', 1).lastUid, 1);
    assert.equal(results.length, 4);
    // Next pass: only message 2 is read again (3 and 4 are known as handled).
    results.length = 0;
    await readMailbox(box, opts);
    assert.deepEqual([results.map((r) => r.input), box.processed], [['fake:2'], [1, 3, 4, 2]]);
    // As far as this pass acknowledged; 3 and 4 stay known as handled.
    assert.equal(positions.position('fake', 'INBOX', 1).lastUid, 2);
  });

  it('with mark_seen_only reads each message once, and a new epoch (UIDVALIDITY) reads the folder again', async () => {
    const { opts, results } = setup();
    const box = new FakeMailbox();
    box.markSeenOnly = true;
    box.add(report('s1'));
    box.add(report('s2'));
    await readMailbox(box, opts);
    await readMailbox(box, opts);
    assert.deepEqual([results.length, box.seen.size, box.inbox.size], [2, 2, 2]);
    box.epoch = 2;
    await readMailbox(box, opts);
    assert.deepEqual(
      results.slice(2).map((r) => r.leaves[0]!.status),
      ['duplicate', 'duplicate'],
    );
  });

  it('reconnects after a dropped connection and reports each message once, even when the acknowledgement was cut off', async () => {
    const { opts, results, reports } = setup();
    const box = new FakeMailbox();
    for (let i = 0; i < 6; i++) box.add(report(`d${i}`));
    // The second MOVE is lost with the connection (the server did not get it).
    box.faults = [{ op: 'acknowledge', at: 2, error: dropped() }];
    await readMailbox(box, { ...opts, batchMessages: 3 });
    assert.deepEqual([box.processed, reports()], [[1, 2, 3, 4, 5, 6], 6]);
    assert.equal(box.events.filter((e) => e.op === 'open').length, 2);
    // Messages 4-6 were committed before the drop and came back as duplicates: reported once, as stored.
    assert.deepEqual(
      results.map((r) => [r.input, r.leaves[0]!.status]),
      [1, 2, 3, 4, 5, 6].map((i) => [`fake:${i}`, 'stored']),
    );
  });

  it('fails at once, with the hint, when the connection never succeeded', async () => {
    const { opts } = setup();
    const box = new FakeMailbox();
    box.add(report('x'));
    box.faults = [
      {
        op: 'open',
        at: 1,
        error: new MailboxError('E_IMAP', 'mailbox fake (h): connect ECONNREFUSED', { retryable: true, hint: 'a wrong port?' }),
      },
    ];
    await assert.rejects(readMailbox(box, opts), /^RuawatchError: mailbox fake \(h\): connect ECONNREFUSED; a wrong port\?$/);
    assert.equal(box.events.filter((e) => e.op === 'open').length, 1);
    // Refused for good (a wrong password): not retried either, even after a drop.
    box.faults = [
      { op: 'download', at: 1, error: dropped() },
      { op: 'open', at: 3, error: new MailboxError('E_IMAP', 'mailbox fake: authentication failed', { retryable: false }) },
    ];
    await assert.rejects(readMailbox(box, opts), /authentication failed/);
    assert.equal(box.events.filter((e) => e.op === 'open').length, 3);
  });

  it('gives up after the configured reconnects', async () => {
    const { opts } = setup();
    const box = new FakeMailbox();
    box.add(report('g'));
    box.faults = [1, 2, 3].map((at) => ({ op: 'list' as const, at, error: dropped() }));
    await assert.rejects(readMailbox(box, { ...opts, reconnects: 2 }), /connection reset; gave up after 2 reconnects/);
    assert.equal(box.events.filter((e) => e.op === 'open').length, 3);
  });

  it('stops the pass at the first database error: nothing more acknowledged, no reconnect, the error names the database', async () => {
    const { opts, results, file } = setup();
    const box = new FakeMailbox();
    for (let i = 0; i < 9; i++) box.add(i === 4 ? 'not a report' : report(`e${i}`));
    const ingestor = failing(opts.ingestor, { 'fake:5': 'SQLITE_FULL' });
    const err = await readMailbox(box, { ...opts, ingestor, batchMessages: 3 }).then(
      () => null,
      (e: unknown) => e,
    );
    assert.ok(err instanceof RuawatchError);
    assert.equal(err.code, 'E_DB');
    assert.equal(err.message, `database ${file}: injected SQLITE_FULL [SQLITE_FULL]; the pass stopped, the messages wait in the folder`);
    // The first batch (1-3) was acknowledged; the batch holding the failure (4-6) is not, not even 4.
    assert.deepEqual([box.processed, box.invalid, [...box.inbox.keys()]], [[1, 2, 3], [], [4, 5, 6, 7, 8, 9]]);
    assert.equal(box.events.filter((e) => e.op === 'open').length, 1);
    assert.deepEqual(
      results.map((r) => r.input),
      ['fake:1', 'fake:2', 'fake:3', 'fake:5'],
    );
  });

  it('turns an error of its own bookkeeping into the database error, not a dropped connection', async () => {
    const { opts, db, file } = setup();
    const box = new FakeMailbox();
    box.add(report('b1'));
    box.onAcknowledge = () => undefined;
    db.exec(`CREATE TRIGGER no_positions BEFORE INSERT ON mailbox_state BEGIN SELECT RAISE(ABORT, 'disk I/O error'); END`);
    await assert.rejects(
      readMailbox(box, opts),
      (e: RuawatchError) => e.code === 'E_DB' && e.message.startsWith(`database ${file}: disk I/O error`),
    );
    assert.deepEqual([box.processed, box.events.filter((e) => e.op === 'open').length], [[], 1]);
  });

  it('reports the messages it moved even when recording them fails after the move (the database locked meanwhile)', async () => {
    const { opts, db, results } = setup();
    const box = new FakeMailbox();
    for (let i = 0; i < 5; i++) box.add(report(`m${i}`));
    // Another process locks the database while the first batch is being moved: the record of the
    // moved messages then fails. They left the folder, so no later pass will see them again.
    box.onAcknowledge = () => {
      box.onAcknowledge = null;
      db.exec(`CREATE TRIGGER locked BEFORE INSERT ON mailbox_messages BEGIN SELECT RAISE(ABORT, 'database is locked'); END`);
    };
    await assert.rejects(readMailbox(box, { ...opts, batchMessages: 3 }), (e: RuawatchError) => e.code === 'E_DB');
    assert.deepEqual(
      [box.processed, [...box.inbox.keys()]],
      [
        [1, 2, 3],
        [4, 5],
      ],
    );
    assert.deepEqual(
      results.map((r) => r.input),
      ['fake:1', 'fake:2', 'fake:3'],
    );
  });

  it('reports once each message moved before the connection dropped between two destinations', async () => {
    for (const markSeenOnly of [false, true]) {
      const { opts, results, reports } = setup();
      const box = new FakeMailbox();
      box.markSeenOnly = markSeenOnly;
      box.add(report('d1'));
      box.add('Subject: hello\r\n\r\nno report\r\n');
      // The move to Processed succeeds, the one to Invalid finds the connection gone.
      box.faults = [{ op: 'acknowledge', at: 2, error: dropped() }];
      await readMailbox(box, opts);
      assert.equal(box.events.filter((e) => e.op === 'open').length, 2);
      assert.deepEqual(
        results.map((r) => [r.input, r.leaves[0]!.status]),
        [
          ['fake:1', 'stored'],
          ['fake:2', 'none'],
        ],
        `mark_seen_only = ${markSeenOnly}`,
      );
      assert.equal(reports(), 1);
      if (markSeenOnly) assert.deepEqual([...box.seen], [1, 2]);
      else assert.deepEqual([box.processed, box.invalid], [[1], [2]]);
    }
  });

  it('skips a message that vanished before its download (not invalid, not counted), and one too large is invalid with its size', async () => {
    const limits = { ...defaultLimits, maxMessageBytes: 4000 };
    const { opts, results, positions } = setup(limits);
    const box = new FakeMailbox();
    box.add(report('v1'));
    box.add(report('v2'));
    box.add(Buffer.alloc(5000, 'x'));
    box.vanishing.add(2);
    await readMailbox(box, opts);
    assert.deepEqual([box.processed, box.invalid], [[1], [3]]);
    assert.deepEqual(
      results.map((r) => r.input),
      ['fake:1', 'fake:3'],
    );
    assert.match((results[1]!.leaves[0] as { error: string }).error, /the mail is 4\.9 KiB; not downloaded/);
    // The position stays below the vanished message, which is looked for again next time.
    assert.equal(positions.position('fake', 'INBOX', 1).lastUid, 1);
  });

  it('acknowledges nothing once another process has taken the mailbox over', async () => {
    const { opts } = setup();
    const box = new FakeMailbox();
    box.add(report('l1'));
    await assert.rejects(readMailbox(box, { ...opts, holdsLease: () => false }), (e: RuawatchError) => e.code === 'E_BUSY');
    assert.deepEqual([box.processed, box.inbox.size], [[], 1]);
  });

  it('on stop, finishes and acknowledges what is committed; on kill, destroys a session that hangs', async () => {
    const { opts, results } = setup();
    const box = new FakeMailbox();
    for (let i = 0; i < 6; i++) box.add(report(`k${i}`));
    const stop = new AbortController();
    let n = 0;
    await readMailbox(box, {
      ...opts,
      batchMessages: 2,
      signal: stop.signal,
      onResult: (r) => {
        results.push(r);
        if (++n === 1) stop.abort();
      },
    });
    assert.deepEqual([box.processed, box.inbox.size], [[1, 2], 4]);

    const kill = new AbortController();
    const frozen = new FakeMailbox('frozen');
    frozen.add(report('k9'));
    frozen.faults = [{ op: 'download', at: 1, error: 'hang' }];
    const t0 = Date.now();
    setTimeout(() => kill.abort(), 50);
    await assert.rejects(readMailbox(frozen, { ...opts, kill: kill.signal }), (e: RuawatchError) => e.code === 'E_TIMEOUT');
    assert.ok(Date.now() - t0 < 5000);
    assert.deepEqual(
      frozen.events.map((e) => e.op),
      ['open', 'list', 'destroy'],
    );
    assert.equal(frozen.inbox.size, 1);
  });
});

describe('mailbox lease (store/mailboxes.ts) and fetchAll', () => {
  it('skips a mailbox whose lease another live process holds, and says so without failing', async () => {
    const { all, positions, results } = setup();
    const box = new FakeMailbox('dmarc');
    box.add(report('busy'));
    // Another process, alive (this test's parent), on this host.
    const other = { ...leaseHolder('run'), id: 'other', pid: process.ppid };
    assert.deepEqual(positions.takeLease('dmarc', other), { held: true });
    const r = await fetchAll([box], all);
    assert.deepEqual([r.summary.failed, r.summary.inputs, r.busy.map((b) => b.mailbox)], [[], 0, ['dmarc']]);
    assert.match(
      r.summary.skipped[0]!.reason,
      new RegExp(`^not read: another ruawatch \\(run, pid ${process.ppid} on .+\\) has been reading`),
    );
    assert.deepEqual([box.events.length, results.length], [0, 0]);
    // Released by its holder: read, and the lease released again.
    positions.releaseLease('dmarc', other.id);
    const again = await fetchAll([box], all);
    assert.deepEqual([again.summary.reports.dmarc, again.busy.length, box.processed], [1, 0, [1]]);
    assert.equal(positions.lease('dmarc'), null);
  });

  it('takes a lease over when it expired, or at once when its holder on this host is gone', () => {
    const { positions, db } = setup();
    const me = leaseHolder('fetch');
    // A process that no longer exists: a pid above the kernel's pid_max.
    const dead = { ...leaseHolder('fetch'), id: 'dead', pid: 4_194_305 };
    assert.deepEqual(positions.takeLease('a', dead), { held: true });
    assert.deepEqual(positions.takeLease('a', me), { held: true });
    assert.equal(positions.lease('a')!.id, me.id);
    // Alive elsewhere (another host): only expiry frees it.
    const remote = { ...leaseHolder('run'), id: 'remote', host: 'elsewhere', pid: 1 };
    assert.deepEqual(positions.takeLease('b', remote), { held: true });
    assert.equal(positions.takeLease('b', me).held, false);
    db.prepare('UPDATE mailbox_leases SET expires_at = ? WHERE mailbox = ?').run(Math.floor(Date.now() / 1000) - 1, 'b');
    assert.deepEqual(positions.takeLease('b', me), { held: true });
    // The former holder cannot renew what it lost; the new one can, for LEASE_SECONDS more.
    assert.equal(positions.renewLease('b', remote.id), false);
    assert.equal(positions.renewLease('b', me.id), true);
    assert.ok(positions.lease('b')!.expiresAt >= Math.floor(Date.now() / 1000) + LEASE_SECONDS - 1);
  });

  it('stops every mailbox at a database error, and reports a failing mailbox by name', async () => {
    const { all, db } = setup();
    const a = new FakeMailbox('a');
    const b = new FakeMailbox('b');
    a.add(report('a1'));
    b.add(report('b1'));
    a.faults = [{ op: 'open', at: 1, error: new MailboxError('E_IMAP', 'mailbox a (h): authentication failed', { retryable: false }) }];
    const first = await fetchAll([a, b], all);
    assert.deepEqual(
      first.summary.failed.map((f) => [f.input, f.code]),
      [['a', 'E_IMAP']],
    );
    assert.equal(first.summary.reports.dmarc, 1);
    db.exec(
      `CREATE TRIGGER no_leases BEFORE INSERT ON mailbox_leases BEGIN SELECT RAISE(ABORT, 'attempt to write a readonly database'); END`,
    );
    a.faults = [];
    const second = await fetchAll([a, b], all);
    assert.deepEqual(
      second.summary.failed.map((f) => [f.input, f.code]),
      [['a', 'E_DB']],
    );
    assert.match(second.summary.failed[0]!.error, /^mailbox a: database .*: attempt to write a readonly database/);
    assert.deepEqual([a.events.filter((e) => e.op === 'open').length, b.events.filter((e) => e.op === 'open').length], [1, 1]);
  });

  it('stops at its deadline: what is under way finishes, the mailbox is reported as stopped, a hung server is cut off', async () => {
    const { all } = setup();
    const box = new FakeMailbox('slow');
    for (let i = 0; i < 3; i++) box.add(report(`t${i}`));
    box.faults = [{ op: 'download', at: 1, error: 'hang' }];
    const t0 = Date.now();
    const r = await fetchAll([box], { ...all, timeoutMs: 20, killGraceMs: 30 });
    assert.ok(Date.now() - t0 < 5000);
    assert.equal(r.timedOut, true);
    assert.deepEqual(
      r.summary.failed.map((f) => f.code),
      ['E_TIMEOUT'],
    );
    assert.match(r.summary.failed[0]!.error, /^mailbox slow: the pass stopped at its deadline/);
    assert.equal(box.inbox.size, 3);
    // A server that accepts the connection but never greets: the opening is cut off too.
    const mute = new FakeMailbox('mute');
    mute.add(report('m1'));
    mute.faults = [{ op: 'open', at: 1, error: 'hang' }];
    const m = await fetchAll([mute], { ...all, timeoutMs: 20, killGraceMs: 30 });
    assert.deepEqual(
      m.summary.failed.map((f) => f.code),
      ['E_TIMEOUT'],
    );
  });
});
