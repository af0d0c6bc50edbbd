import type { Logger } from 'pino';
import { GRAPH_URL } from '../auth/providers.js';
import type { TokenProvider } from '../auth/tokens.js';
import type { MailboxConfig } from '../config/schema.js';
import { messageWithHint } from '../errors.js';
import { GraphMailbox } from './graph.js';
import { probeMailbox as probeImap, type MailboxProbe } from './imap.js';
import { tokensOf } from './mailboxes.js';

export type { MailboxProbe };

/**
 * `config check --connect` for a mailbox of any kind: for OAuth2 a token first (where from and how
 * long it is good for, never the token), then the login and the folders, IMAP or Graph. Nothing is
 * created, moved or marked; a server gets `timeoutSeconds` at most. Never rejects: a failure is in
 * the answer.
 */
export async function probeMailbox(
  box: MailboxConfig,
  timeoutSeconds: number,
  log: Logger,
  maxMessageBytes: number,
): Promise<MailboxProbe> {
  const graph = box.kind === 'graph';
  const probe: MailboxProbe = {
    name: box.name,
    kind: box.kind,
    server: graph ? (box.graph_url ?? GRAPH_URL) : `${box.host}:${box.port ?? (box.security === 'tls' ? 993 : 143)}`,
    security: box.security,
    user: box.user,
    ok: false,
    folders: [],
  };
  const failed = (err: unknown) => {
    const text = messageWithHint(err);
    probe.error = text.replace(/^mailbox [^ ]+ \([^)]*\): /, '');
    return probe;
  };
  let tokens: TokenProvider | null;
  try {
    tokens = tokensOf(box, log);
  } catch (err) {
    return failed(err);
  }
  if (tokens) {
    try {
      const t = await tokens.token(AbortSignal.timeout(timeoutSeconds * 1000));
      probe.token = {
        source: tokens.source,
        expires_in_seconds: t.expiresAt === null ? null : Math.round((t.expiresAt - Date.now()) / 1000),
      };
    } catch (err) {
      failed(err);
      probe.token = { source: tokens.source, error: probe.error! };
      return probe;
    }
  }
  if (!graph) return { ...(await probeImap(box, timeoutSeconds, tokens)), kind: box.kind, ...(probe.token ? { token: probe.token } : {}) };
  try {
    probe.folders = await new GraphMailbox(box, log, tokens!, maxMessageBytes).probe(timeoutSeconds * 1000);
    probe.ok = true;
  } catch (err) {
    failed(err);
  }
  return probe;
}
