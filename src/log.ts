import { pino, type Logger } from 'pino';

export type { Logger };

/**
 * The root logger: JSON lines on stderr (stdout belongs to command output). Secrets are redacted
 * here, at the root, whatever a caller passes in.
 */
export function createLogger(level: string): Logger {
  return pino(
    {
      level,
      base: undefined,
      redact: {
        paths: [
          'password',
          'access_token',
          'webhook_url',
          'bot_token',
          '*.password',
          '*.access_token',
          '*.webhook_url',
          '*.bot_token',
          'auth.pass',
        ],
        censor: '[redacted]',
      },
    },
    pino.destination({ fd: 2, sync: true }),
  );
}
