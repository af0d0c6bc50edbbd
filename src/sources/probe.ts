import type { Logger } from 'pino';
import { authOf, type AuthMode, type MailboxConfig } from '../config/schema.js';
import { errorCode, errorMessage } from '../errors.js';
import { GraphMailbox } from './graph.js';
import { probeImap } from './imap.js';
import { tokensOf } from './mailboxes.js';

/** What `config check --connect` found for a mailbox. */
export interface MailboxProbe {
  mailbox: string;
  kind: MailboxConfig['kind'];
  auth: AuthMode;
  ok: boolean;
  /** With OAuth2: where the token came from and how long it is good for (never the token). */
  token?: { source: string; expires_in_seconds: number | null };
  /** The folder read and the destination folders, with their message counts; null: missing (created by the first fetch). */
  folders?: { role: string; name: string; messages: number | null }[];
  /** Where it failed: getting a token, or connecting and opening the folder. */
  error?: { stage: 'token' | 'open'; code: string; message: string };
}

/**
 * Whether a mailbox can be read: a token got (for OAuth2), a login, the folders looked at. Nothing
 * is created, moved or marked. Never rejects: a failure is in the answer.
 */
export async function probeMailbox(box: MailboxConfig, log: Logger, timeoutMs: number, maxMessageBytes: number): Promise<MailboxProbe> {
  const probe: MailboxProbe = { mailbox: box.name, kind: box.kind, auth: authOf(box), ok: false };
  const fail = (stage: 'token' | 'open', err: unknown) => {
    probe.error = { stage, code: errorCode(err), message: errorMessage(err) };
    return probe;
  };
  let tokens;
  try {
    tokens = tokensOf(box, log);
    if (tokens) {
      const t = await tokens.token(AbortSignal.timeout(timeoutMs));
      probe.token = {
        source: tokens.source,
        expires_in_seconds: t.expiresAt === null ? null : Math.round((t.expiresAt - Date.now()) / 1000),
      };
    }
  } catch (err) {
    return fail('token', err);
  }
  try {
    const found =
      box.kind === 'graph'
        ? await new GraphMailbox(box, log, tokens!, maxMessageBytes).probe(timeoutMs)
        : await probeImap(box, log, tokens, timeoutMs);
    probe.folders = found.folders;
    probe.ok = true;
  } catch (err) {
    return fail('open', err);
  }
  return probe;
}
