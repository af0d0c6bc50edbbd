import { Writable } from 'node:stream';
import type { Io } from '../../src/cli/common.js';
import { main } from '../../src/cli/program.js';

export interface CliRun {
  code: number;
  stdout: string;
  stderr: string;
}

/** A stream that keeps what is written to it. */
class Collect extends Writable {
  text = '';
  isTTY = false;
  override _write(chunk: Buffer | string, _enc: BufferEncoding, cb: () => void): void {
    this.text += chunk.toString();
    cb();
  }
}

/**
 * Runs a ruawatch command line in this process, as the program would: its output, its log lines
 * (stderr) and its exit code. The environment is only what `env` holds, so the test machine's own
 * RUAWATCH_* variables never leak in; `overrides` stand in for parts of the App (reverse DNS,
 * channels). Signals, the real binary's exit and standard input need a
 * process (test/cli.test.ts).
 */
export async function runCli(argv: string[], env: Record<string, string> = {}, overrides?: Io['overrides']): Promise<CliRun> {
  const stdout = new Collect();
  const stderr = new Collect();
  const io: Io = { stdout, stderr, env, ...(overrides ? { overrides } : {}) };
  const code = await main(argv, io);
  return { code, stdout: stdout.text, stderr: stderr.text };
}
