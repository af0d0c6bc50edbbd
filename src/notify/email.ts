import fs from 'node:fs';
import nodemailer, { type Transporter } from 'nodemailer';
import type { Channel, FailureScope, Message } from './types.js';
import { RuawatchError, errorMessage } from '../errors.js';
import { DeliveryError } from './types.js';
import type { EmailConfig } from '../config/schema.js';

/** The [alerts.email] section, as the config schema gives it. */
export type EmailSettings = EmailConfig;

/**
 * Email through nodemailer over SMTP, as text and HTML. Marked Auto-Submitted (RFC 3834) so
 * vacation responders stay quiet; the Message-ID is derived from the notification's txn id, so a
 * message resent after a lost reply carries the same one. SMTP has no way to ask whether a message
 * got through, and whether a receiver drops a second copy with a Message-ID it has seen is up to
 * it (most do not): a send that failed after the message data went out counts as unanswered.
 */
export class EmailChannel implements Channel {
  readonly name = 'email' as const;
  readonly dedupWindowMs = 0;
  private readonly transport: Transporter;
  /** Whether the server took the DATA command during the current send (see `watch`). */
  private dataStarted = false;
  private lastCommand = '';

  constructor(
    private readonly s: EmailSettings,
    timeoutMs = 60_000,
  ) {
    this.transport = nodemailer.createTransport({
      host: s.host,
      port: s.port,
      secure: s.security === 'tls',
      requireTLS: s.security === 'starttls',
      ignoreTLS: s.security === 'none',
      auth: s.user ? { user: s.user, pass: s.password ?? '' } : undefined,
      tls: s.ca_file ? { ca: readCa(s.ca_file) } : undefined,
      connectionTimeout: Math.min(15_000, timeoutMs),
      greetingTimeout: Math.min(15_000, timeoutMs),
      // RFC 5321 section 4.5.3.2.6 would wait 10 minutes for the reply to the message data; a run
      // cannot, and a reply that does not come in time makes the send unanswered.
      socketTimeout: timeoutMs,
      // The SMTP dialogue without the message content, read by `watch` only: never logged.
      transactionLog: true,
      logger: this.watch(),
    });
  }

  /**
   * A bunyan-style logger that only follows the dialogue: once the server has answered DATA
   * with 354 (or, as some do, 250), the message content is on its way and a failure without a
   * reply may come after the server took it.
   */
  private watch() {
    const line = (entry: unknown, message: unknown) => {
      const tnx = (entry as { tnx?: string } | null)?.tnx;
      const text = typeof message === 'string' ? message : '';
      if (tnx === 'client') this.lastCommand = text.slice(0, 8).toUpperCase();
      else if (tnx === 'server' && this.lastCommand === 'DATA' && /^[23]/.test(text)) this.dataStarted = true;
    };
    const quiet = () => {};
    return { level: 'debug', trace: quiet, debug: line, info: quiet, warn: quiet, error: quiet, fatal: quiet };
  }

  async send(message: Message, txnId: string): Promise<void> {
    this.dataStarted = false;
    this.lastCommand = '';
    try {
      await this.transport.sendMail({
        from: this.s.from,
        to: this.s.to,
        subject: message.title,
        text: message.text,
        html: message.html,
        messageId: `<${txnId}@ruawatch.invalid>`,
        headers: { 'Auto-Submitted': 'auto-generated', 'X-Ruawatch-Event': message.event },
      });
    } catch (err) {
      const e = err as Error & { responseCode?: number; code?: string; command?: string; response?: string };
      const reply = typeof e.responseCode === 'number' ? e.responseCode : null;
      throw new DeliveryError(e.message, smtpScope(e.code, e.command, reply, e.response), {
        status: reply ? `SMTP ${reply}` : null,
        // No reply at all after the content went out: the server may have queued it.
        unanswered: reply === null && this.dataStarted,
      });
    }
  }

  async probe(): Promise<string> {
    // Connects, says EHLO, upgrades with STARTTLS where configured and logs in; sends nothing.
    await this.transport.verify();
    const s = this.s;
    const tls = s.security === 'tls' ? 'over implicit TLS' : s.security === 'starttls' ? 'over STARTTLS' : 'without TLS';
    return `${s.host}:${s.port} ${tls}, ${s.user ? `logged in as ${s.user}` : 'no login'}; mail from ${s.from} to ${s.to.join(', ')}`;
  }

  async close(): Promise<void> {
    this.transport.close();
  }
}

/**
 * Who is at fault for an SMTP failure. A 4xx reply is temporary (RFC 5321 section 4.2.1), as is
 * anything without a reply. A 5xx to the message content (the reply after the data) is about this
 * message, as is "message too big" (552 or X.3.4) to MAIL FROM with its SIZE; a 5xx anywhere else
 * (the greeting, AUTH, MAIL FROM, RCPT TO, the DATA command itself) would meet every message alike.
 */
export function smtpScope(code: string | undefined, command: string | undefined, reply: number | null, response = ''): FailureScope {
  if (code === 'EMESSAGE') return reply !== null && reply < 500 ? 'retry' : 'message';
  if (reply === null) return code === 'EAUTH' || code === 'EENVELOPE' ? 'channel' : 'retry';
  if (reply < 500) return 'retry';
  if (command === 'MAIL FROM' && (reply === 552 || /^\d{3}[ -]5\.3\.4\b/.test(response))) return 'message';
  return 'channel';
}

function readCa(file: string): Buffer {
  try {
    return fs.readFileSync(file);
  } catch (err) {
    throw new RuawatchError('E_CONFIG', `[alerts.email] cannot read ca_file ${file}: ${errorMessage(err)}`);
  }
}
