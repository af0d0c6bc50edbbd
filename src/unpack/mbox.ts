import { RuawatchError } from '../errors.js';
import type { ByteStream } from './bytes.js';
import { formatBytes, overLimit } from './limits.js';

export type MboxItem = { ok: true; message: Buffer } | { ok: false; error: RuawatchError };

const SEP = Buffer.from('\nFrom ');

/**
 * Splits an mbox stream (RFC 4155) into messages, one at a time, never holding more than one
 * message (capped) in memory. A message larger than the cap is reported and skipped; the split
 * carries on at the next "From " line.
 */
export async function* splitMbox(src: ByteStream, maxMessageBytes: number): AsyncGenerator<MboxItem> {
  let carry: Buffer = Buffer.alloc(0);
  let scanFrom = 0;
  let oversized = false;
  let started = false;

  const take = (msg: Buffer): MboxItem => {
    if (oversized) {
      oversized = false;
      return { ok: false, error: overLimit('maxMessageBytes', `mbox message larger than ${formatBytes(maxMessageBytes)}`) };
    }
    return { ok: true, message: stripFromLine(msg) };
  };

  for await (const chunk of src) {
    carry = carry.length ? Buffer.concat([carry, chunk]) : Buffer.from(chunk);
    if (!started) {
      started = true;
      if (!carry.subarray(0, 5).equals(Buffer.from('From '))) {
        throw new RuawatchError('E_MAIL', 'not an mbox file: it does not start with a "From " line');
      }
    }
    for (;;) {
      const i = carry.indexOf(SEP, Math.max(scanFrom, 1));
      if (i < 0) break;
      yield take(carry.subarray(0, i + 1));
      carry = carry.subarray(i + 1);
      scanFrom = 0;
    }
    scanFrom = Math.max(0, carry.length - SEP.length);
    if (carry.length > maxMessageBytes) {
      // Drop what we hold of the oversized message, keeping the tail in case a separator spans it.
      oversized = true;
      carry = Buffer.from(carry.subarray(carry.length - SEP.length));
      scanFrom = 0;
    }
  }
  if (carry.length || oversized) yield take(carry);
}

function stripFromLine(msg: Buffer): Buffer {
  if (!msg.subarray(0, 5).equals(Buffer.from('From '))) return msg;
  const nl = msg.indexOf(0x0a);
  return nl < 0 ? Buffer.alloc(0) : msg.subarray(nl + 1);
}
