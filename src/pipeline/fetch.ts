import type { MailboxConfig } from '../sources/imap.js';
import { fetchMailbox, type FetchOptions } from '../sources/imap.js';
import { errorCode, errorMessage } from '../errors.js';
import { addToSummary, emptySummary, type IngestSummary } from './ingest.js';

export interface FetchAllResult {
  summary: IngestSummary;
  /** Mailboxes that could not be read at all (unreachable, login refused). */
  mailboxErrors: { mailbox: string; error: string }[];
}

/**
 * One pass over every mailbox, for `ruawatch fetch` and the worker alike. A mailbox that cannot
 * be read is listed under `failed` and in `mailboxErrors`; the others are still read.
 */
export async function fetchAll(
  boxes: MailboxConfig[],
  opts: Omit<FetchOptions, 'onResult' | 'onPlan'> & {
    onPlan?(box: MailboxConfig, count: number): void;
    onResult?(): void;
    onMailboxDone?(box: MailboxConfig): void;
  },
): Promise<FetchAllResult> {
  const summary = emptySummary();
  const mailboxErrors: FetchAllResult['mailboxErrors'] = [];
  for (const box of boxes) {
    if (opts.signal?.aborted) break;
    try {
      await fetchMailbox(box, {
        ...opts,
        onPlan: (n) => opts.onPlan?.(box, n),
        onResult: (r) => {
          addToSummary(summary, r);
          opts.onResult?.();
        },
      });
    } catch (err) {
      summary.failed.push({ input: box.name, error: errorMessage(err), code: errorCode(err) });
      mailboxErrors.push({ mailbox: box.name, error: errorMessage(err) });
      // Reported by the caller: fetch's summary lists it, run logs the poll as failed with it.
      opts.log.info({ mailbox: box.name, err: errorMessage(err) }, 'mailbox failed');
    } finally {
      opts.onMailboxDone?.(box);
    }
  }
  return { summary, mailboxErrors };
}
