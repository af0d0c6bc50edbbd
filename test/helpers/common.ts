import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createLogger } from '../../src/log.js';
import { Ingestor, type IngestInput, type InputResult } from '../../src/pipeline/ingest.js';
import { fileInput } from '../../src/sources/files.js';
import type { ChannelName } from '../../src/notify/types.js';
import { openDb, type Db } from '../../src/store/db.js';
import { leaseHolder } from '../../src/store/leases.js';
import { ReportStore } from '../../src/store/reports.js';
import { fromBuffer } from '../../src/unpack/bytes.js';
import { defaultLimits, type Limits } from '../../src/unpack/limits.js';

/** The repository root (this file runs from dist/test/helpers/). */
export const ROOT = path.resolve(fileURLToPath(new URL('../../../', import.meta.url)));
export const FIXTURES = path.join(ROOT, 'fixtures');
export const CLI = path.join(ROOT, 'dist/src/cli/main.js');

export function fixture(rel: string): string {
  return path.join(FIXTURES, rel);
}

/** Fixture files whose names end with `suffix`, in every folder, as paths relative to FIXTURES. */
export function fixtureFiles(suffix: string): string[] {
  const out: string[] = [];
  const walk = (dir: string) => {
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
      const p = path.join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.name.endsWith(suffix)) out.push(path.relative(FIXTURES, p));
    }
  };
  walk(FIXTURES);
  return out;
}

/**
 * Writes a self-signed certificate (valid from now, for two days) to `file`, as a private CA's
 * certificate for ca_file. openssl is needed, as for the Dovecot tests.
 */
export function selfSignedCert(file: string): string {
  const key = `${file}.key`;
  const r = spawnSync(
    'openssl',
    [
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:P-256',
      '-nodes',
      '-days',
      '2',
      '-subj',
      '/CN=ruawatch test CA',
      '-keyout',
      key,
      '-out',
      file,
    ],
    { encoding: 'utf8' },
  );
  if (r.status !== 0) throw new Error(`openssl failed: ${r.stderr}`);
  fs.rmSync(key);
  return file;
}

export function tempDir(prefix = 'ruawatch-test-'): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

/** A fresh SQLite database file on disk, and an ingestor writing to it (on the given clock, in ms). */
/**
 * Ingests on the calling thread and then settles (ReportStore.settle), as a command does before it
 * ends: what a test ingests is in the rollups when the call returns.
 */
class SettlingIngestor extends Ingestor {
  constructor(
    private readonly reportStore: ReportStore,
    limits: Limits,
    clock?: () => number,
  ) {
    super(reportStore, limits, createLogger('silent'), clock);
  }

  override async ingest(input: IngestInput): Promise<InputResult> {
    const result = await super.ingest(input);
    this.reportStore.settle();
    return result;
  }
}

/**
 * A database in a new folder and an ingestor into it that settles after each input, unless
 * `settle` is false (then the test settles when it wants).
 */
export function freshStore(
  limits: Limits = defaultLimits,
  clock?: () => number,
  opts: { settle?: boolean } = {},
): { db: Db; ingestor: Ingestor; file: string } {
  const file = path.join(tempDir(), 'ruawatch.sqlite');
  const db = openDb(file);
  const store = new ReportStore(db);
  const ingestor =
    opts.settle === false ? new Ingestor(store, limits, createLogger('silent'), clock) : new SettlingIngestor(store, limits, clock);
  return { db, file, ingestor };
}

export function bufferInput(name: string, bytes: Uint8Array | string): IngestInput {
  const buf = typeof bytes === 'string' ? Buffer.from(bytes) : bytes;
  return { name, open: () => fromBuffer(buf), portable: { name, bytes: buf } };
}

export async function ingestFile(ingestor: Ingestor, file: string): Promise<InputResult> {
  return ingestor.ingest(fileInput(file, defaultLimits.maxReportBytes));
}

export function count(db: Db, sql: string, ...params: unknown[]): number {
  const row = db.prepare(sql).get(...params) as Record<string, number>;
  return Object.values(row)[0]!;
}

/**
 * Another live process on this host holding a channel's delivery lease, as its deliverPending
 * would (channel_leases); kill it to let go.
 */
export async function otherHolder(db: Db, channel: ChannelName): Promise<ChildProcess> {
  const other = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 60_000)'], { stdio: 'ignore' });
  await new Promise((resolve) => other.once('spawn', resolve));
  const now = Math.floor(Date.now() / 1000);
  db.prepare(
    `INSERT INTO channel_leases (channel, holder, host, pid, command, acquired_at, expires_at) VALUES (?, 'other', ?, ?, 'run', ?, ?)`,
  ).run(channel, leaseHolder('test').host, other.pid, now, now + 600);
  return other;
}
