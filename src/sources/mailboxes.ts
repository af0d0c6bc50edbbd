import { tokenProviderFor } from '../auth/providers.js';
import type { TokenProvider } from '../auth/tokens.js';
import { limitsOf } from '../config/load.js';
import type { Config, MailboxConfig } from '../config/schema.js';
import type { Logger } from '../log.js';
import type { Mailbox } from '../pipeline/mailbox.js';
import { GraphMailbox } from './graph.js';
import { ImapMailbox } from './imap.js';

/**
 * Token providers by mailbox configuration: `run` builds its mailboxes anew for every poll from the
 * same config objects, and a token is reused across polls until shortly before it expires.
 */
const providers = new WeakMap<MailboxConfig, TokenProvider | null>();

/** The token provider of a mailbox (null: it logs in with a password), one per mailbox config. */
export function tokensOf(box: MailboxConfig, log: Logger): TokenProvider | null {
  if (!providers.has(box)) providers.set(box, tokenProviderFor(box, log));
  return providers.get(box)!;
}

/**
 * The configured mailboxes as the pipeline reads them. Every kind of mailbox is built here, and
 * only here: the pipeline knows the Mailbox interface (pipeline/mailbox.ts), not the kinds.
 */
export function mailboxesOf(config: Config, log: Logger): Mailbox[] {
  const limits = limitsOf(config);
  return config.mailbox.map((box) =>
    box.kind === 'graph'
      ? new GraphMailbox(box, log, tokensOf(box, log)!, limits.maxMessageBytes)
      : new ImapMailbox(box, log, tokensOf(box, log)),
  );
}
