import { errorMessage } from '../errors.js';
import type { App } from '../app.js';
import { probeMailbox, type MailboxProbe } from '../sources/probe.js';
import { defaultRetry } from '../notify/types.js';

export interface ChannelProbe {
  channel: string;
  ok: boolean;
  /** What was found: the login, the account, the room or channel. */
  found?: string;
  error?: string;
}

export interface Connections {
  mailboxes: MailboxProbe[];
  channels: ChannelProbe[];
}

/** A probe answers within this long, or counts as failed. */
const PROBE_TIMEOUT_MS = 15_000;

/**
 * `config check --connect`: logs in to every mailbox and asks every channel whether it could send,
 * all at once, each on its own: one that fails does not hide the others. Nothing is sent, moved or
 * created.
 */
export async function checkConnections(app: App): Promise<Connections> {
  const config = app.config;
  const channels = app.channels({ ...defaultRetry, timeoutMs: PROBE_TIMEOUT_MS });
  try {
    const [mailboxes, probes] = await Promise.all([
      Promise.all(config.mailbox.map((box) => probeMailbox(box, PROBE_TIMEOUT_MS / 1000, app.log, app.limits.maxMessageBytes))),
      Promise.all(
        channels.map(async (c): Promise<ChannelProbe> => {
          try {
            return { channel: c.name, ok: true, found: c.probe ? await c.probe() : 'cannot be checked without sending' };
          } catch (err) {
            return { channel: c.name, ok: false, error: errorMessage(err) };
          }
        }),
      ),
    ]);
    return { mailboxes, channels: probes };
  } finally {
    await Promise.all(channels.map((c) => c.close()));
  }
}

export function formatConnections(c: Connections): string {
  const lines: string[] = [];
  if (c.mailboxes.length === 0 && c.channels.length === 0)
    lines.push('No [[mailbox]] and no [alerts] channel is configured: nothing to connect to.');
  for (const m of c.mailboxes) {
    const graph = m.kind === 'graph';
    const head = graph
      ? `mailbox ${m.name} (Microsoft Graph at ${m.server})`
      : `mailbox ${m.name} (${m.server}, security = "${m.security}")`;
    // With OAuth2: the token first (never the token itself), then the login.
    const token =
      m.token?.expires_in_seconds !== undefined
        ? ` with a token from ${m.token.source}${m.token.expires_in_seconds === null ? '' : ` (good for ${m.token.expires_in_seconds} s)`}`
        : '';
    // Not logged in: nothing more is known.
    if (graph ? m.folders.length === 0 : m.tls === undefined) {
      lines.push(`${head}: FAILED: ${m.token?.error ? 'no access token: ' : ''}${m.error}`);
      continue;
    }
    const tls = m.tls ? `over ${m.tls.protocol} (${m.tls.cipher})` : 'without TLS';
    lines.push(graph ? `${head}: opened ${m.user}${token}` : `${head}: logged in as ${m.user}${token} ${tls}`);
    for (const f of m.folders) {
      const what = f.exists
        ? `${f.messages} message${f.messages === 1 ? '' : 's'}${f.role === 'folder' ? `, ${f.unseen} unseen` : ''}`
        : f.role === 'folder'
          ? `FAILED: ${f.error ?? 'no such folder'}`
          : 'missing; created by the first fetch';
      lines.push(`  ${f.role.padEnd(16)} ${f.name}: ${what}`);
    }
  }
  for (const p of c.channels) lines.push(`${p.channel}: ${p.ok ? p.found : `FAILED: ${p.error}`}`);
  return `${lines.join('\n')}\n`;
}
