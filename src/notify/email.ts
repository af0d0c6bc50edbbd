import fs from 'node:fs';
import nodemailer, { type Transporter } from 'nodemailer';
import type { Channel, Message } from './types.js';
import { RuawatchError, errorMessage } from '../errors.js';
import { DeliveryError } from './types.js';

export interface EmailSettings {
  host: string;
  port: number;
  security: 'tls' | 'starttls' | 'none';
  user?: string | undefined;
  password?: string | undefined;
  ca_file?: string | undefined;
  from: string;
  to: string[];
}

/**
 * Email through nodemailer over SMTP, as text and HTML. Marked Auto-Submitted (RFC 3834) so
 * vacation responders stay quiet; the Message-ID is derived from the notification's txn id, so a
 * message resent after a lost reply can be recognised as the same one.
 */
export class EmailChannel implements Channel {
  readonly name = 'email' as const;
  private readonly transport: Transporter;

  constructor(private readonly s: EmailSettings) {
    this.transport = nodemailer.createTransport({
      host: s.host,
      port: s.port,
      secure: s.security === 'tls',
      requireTLS: s.security === 'starttls',
      ignoreTLS: s.security === 'none',
      auth: s.user ? { user: s.user, pass: s.password ?? '' } : undefined,
      tls: s.ca_file ? { ca: readCa(s.ca_file) } : undefined,
      connectionTimeout: 15_000,
      greetingTimeout: 15_000,
      socketTimeout: 30_000,
    });
  }

  async send(message: Message, txnId: string): Promise<void> {
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
      const e = err as Error & { responseCode?: number; code?: string };
      // A 4xx reply is temporary (RFC 5321 section 4.2.1); 5xx and bad credentials are not.
      const retryable = e.responseCode ? e.responseCode < 500 : e.code !== 'EAUTH' && e.code !== 'EENVELOPE';
      throw new DeliveryError(`email: ${e.message}`, retryable);
    }
  }

  async close(): Promise<void> {
    this.transport.close();
  }
}

function readCa(file: string): Buffer {
  try {
    return fs.readFileSync(file);
  } catch (err) {
    throw new RuawatchError('E_CONFIG', `[alerts.email] cannot read ca_file ${file}: ${errorMessage(err)}`);
  }
}
