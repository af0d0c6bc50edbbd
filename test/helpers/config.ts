import type { MailboxConfig } from '../../src/config/schema.js';

/** An IMAP [[mailbox]] as the schema leaves it after defaults, with `extra` on top. */
export function mailboxConfig(extra: Partial<MailboxConfig>): MailboxConfig {
  return {
    name: 'm',
    kind: 'imap',
    security: 'tls',
    user: 'dmarc@example.com',
    folder: 'INBOX',
    processed_folder: 'Processed',
    invalid_folder: 'Invalid',
    mark_seen_only: false,
    timeout_seconds: 5,
    ...extra,
  };
}
