import { randomUUID } from 'node:crypto';
import { RuawatchError, errorMessage } from '../errors.js';
import { renderTest } from '../notify/render.js';
import { CHANNEL_NAMES, defaultRetry, withRetry, type RetryPolicy } from '../notify/types.js';
import { channelsOf } from '../pipeline/alerts.js';
import { EXIT_FAILED, EXIT_OK, openConfig, parseFlags, type Io } from './common.js';

export const notifyUsage = `usage: ruawatch notify test [--config FILE] [--channel email|matrix|discord] [--json]
  Sends a test message through every configured [alerts] channel, or the one named.`;

// A test should answer quickly: one retry, one second apart.
const TEST_RETRY: RetryPolicy = { ...defaultRetry, attempts: 2 };

export async function notifyCommand(args: string[], io: Io): Promise<number> {
  const [sub, ...rest] = args;
  if (sub !== 'test') throw new RuawatchError('E_USAGE', `expected "notify test"\n${notifyUsage}`);
  const { values } = parseFlags(
    rest,
    { config: { type: 'string' }, channel: { type: 'string' }, json: { type: 'boolean', default: false } },
    false,
  );
  if (values.channel !== undefined && !CHANNEL_NAMES.includes(values.channel as never)) {
    throw new RuawatchError('E_USAGE', `--channel is one of ${CHANNEL_NAMES.join(', ')}, not "${values.channel}"`);
  }
  const loaded = openConfig(values.config, io);
  const channels = channelsOf(loaded.config, TEST_RETRY).filter((c) => values.channel === undefined || c.name === values.channel);
  if (channels.length === 0) {
    throw new RuawatchError(
      'E_CONFIG',
      values.channel ? `[alerts.${values.channel}] is not configured` : 'no [alerts] channel is configured',
    );
  }
  const results: { channel: string; ok: boolean; error?: string }[] = [];
  try {
    const now = Math.floor(Date.now() / 1000);
    await Promise.all(
      channels.map(async (c) => {
        try {
          // A fresh id per send: a second test within the same second must not be taken for a retry.
          const txnId = `rw-${randomUUID()}`;
          await withRetry(TEST_RETRY, () => c.send(renderTest(c.name, now), txnId));
          results.push({ channel: c.name, ok: true });
        } catch (err) {
          results.push({ channel: c.name, ok: false, error: errorMessage(err) });
        }
      }),
    );
  } finally {
    await Promise.all(channels.map((c) => c.close()));
  }
  results.sort((a, b) => CHANNEL_NAMES.indexOf(a.channel as never) - CHANNEL_NAMES.indexOf(b.channel as never));
  if (values.json) io.stdout.write(`${JSON.stringify({ results })}\n`);
  else for (const r of results) io.stdout.write(`${r.channel}: ${r.ok ? 'sent' : `FAILED: ${r.error}`}\n`);
  return results.every((r) => r.ok) ? EXIT_OK : EXIT_FAILED;
}
