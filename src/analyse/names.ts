import { randomBytes } from 'node:crypto';
import type { Finding } from './types.js';

/**
 * Source IPs in findings' messages, named after the rules have run. The rules write each address
 * they mention as a mark (mention()); once the evaluation is over, the caller knows which addresses
 * the findings name and looks up what it shows beside them (reverse DNS, who the sender is) for
 * those alone, then nameFindings() writes the text. So the rules run once, whatever is looked up
 * afterwards, and what a message shows beside an address is decided in one place.
 */

const OPEN = '\u{E000}';
const CLOSE = '\u{E001}';
/**
 * Marks carry a key drawn when the process starts: the rules also write text from reports (a
 * selector, a domain, a reporter's name), and a report that spelled out a mark of its own must not
 * get an address of its choosing named (and looked up in the reverse DNS).
 */
const KEY = randomBytes(6).toString('hex');
/** A mark holds an address (IPv4 or IPv6 text, as stored); anything else between the two is left as text. */
const MARK = new RegExp(`\u{E000}${KEY}([0-9A-Fa-f:.]{2,45})\u{E001}`, 'gu');
const STRAY = /[\u{E000}\u{E001}]/gu;

/** An address as the rules write it into a message, to be named by nameFindings(). */
export function mention(ip: string): string {
  return `${OPEN}${KEY}${ip}${CLOSE}`;
}

/** The addresses the findings' messages mention, in the order they first appear. */
export function mentionedIn(findings: Iterable<Finding>): Set<string> {
  const out = new Set<string>();
  for (const f of findings) for (const m of f.summary.matchAll(MARK)) out.add(m[1]!);
  return out;
}

export interface Naming {
  /** What a message shows beside an address ("192.0.2.1 (mx.example.net)"), if anything. */
  label?: (ip: string) => string | null | undefined;
  /** A finding's source_name for its source_ip: the reverse DNS name, if known. */
  name?: (ip: string) => string | null | undefined;
}

/**
 * Writes the marked addresses of the findings' messages as text, each with its label when there is
 * one, and sets source_name. Every mark goes, named or not: a message never leaves with one. A
 * finding's key, kind, severity and details are not touched.
 */
export function nameFindings(findings: Finding[], naming: Naming = {}): Finding[] {
  for (const f of findings) {
    f.summary = f.summary
      .replace(MARK, (_, ip: string) => {
        const label = naming.label?.(ip);
        return label ? `${ip} (${label})` : ip;
      })
      // A mark character that came in with a report's own text (a selector, a reporter's name).
      .replace(STRAY, '');
    if (f.source_ip) f.source_name = naming.name?.(f.source_ip) ?? null;
  }
  return findings;
}
