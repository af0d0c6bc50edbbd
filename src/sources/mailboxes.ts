import type { Config } from '../config/schema.js';
import type { Logger } from '../log.js';
import type { Mailbox } from '../pipeline/mailbox.js';
import { ImapMailbox } from './imap.js';

/**
 * The configured mailboxes as the pipeline reads them. Every kind of mailbox is built here, and
 * only here: the pipeline knows the Mailbox interface (pipeline/mailbox.ts), not the kinds.
 */
export function mailboxesOf(config: Config, log: Logger): Mailbox[] {
  return config.mailbox.map((box) => new ImapMailbox(box, log));
}
