import type { AddressObject } from 'mailparser';
import { RuawatchError, errorMessage } from '../errors.js';
import { parseSimpleMail } from './mime-simple.js';

export interface MailPart {
  /** File name from Content-Disposition / Content-Type (RFC 2231 continuations joined), if any. */
  filename: string | null;
  contentType: string;
  content: Buffer;
}

export interface Mail {
  fromAddress: string | null;
  messageId: string | null;
  date: Date | null;
  subject: string | null;
  text: string;
  /** Every non-body part: attachments, a non-text whole body, message/* parts. */
  parts: MailPart[];
}

/**
 * Parses an RFC 5322 message held in memory (its size already capped by the caller). The usual
 * shapes of report mail are read directly (mime-simple.ts); the rest by mailparser, which decodes
 * every transfer encoding and RFC 2231 / RFC 2047 file names. A report that is the whole body
 * (Google sends application/zip as the only part) comes back as an attachment too.
 */
export async function parseMail(raw: Buffer): Promise<Mail> {
  let simple: Mail | null = null;
  try {
    simple = parseSimpleMail(raw);
  } catch {
    // Whatever the direct reader cannot take, mailparser reads.
  }
  return simple ?? parseWithMailparser(raw);
}

/** The mailparser path alone (exported for the test that holds both paths to the same result). */
export async function parseWithMailparser(raw: Buffer): Promise<Mail> {
  // Loaded on first use: mailparser and its dependencies take ~100 ms to load, and a run over
  // plain report files never needs them.
  const { simpleParser } = await import('mailparser');
  let m;
  try {
    m = await simpleParser(raw, { skipHtmlToText: true, skipTextToHtml: true, skipImageLinks: true, maxHtmlLengthToParse: 1 });
  } catch (err) {
    throw new RuawatchError('E_MAIL', `the mail could not be parsed: ${errorMessage(err)}`, { cause: err });
  }
  return {
    fromAddress: firstAddress(m.from),
    messageId: m.messageId?.trim() || null,
    date: m.date && !Number.isNaN(m.date.getTime()) ? m.date : null,
    subject: m.subject ?? null,
    text: m.text ?? '',
    parts: m.attachments.map((a) => ({
      filename: a.filename ?? null,
      contentType: (a.contentType || 'application/octet-stream').toLowerCase(),
      content: a.content,
    })),
  };
}

function firstAddress(a: AddressObject | AddressObject[] | undefined): string | null {
  const obj = Array.isArray(a) ? a[0] : a;
  return obj?.value?.[0]?.address?.toLowerCase() ?? null;
}
