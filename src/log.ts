import { pino, type Logger } from 'pino';
import { SECRET_KEYS } from './config/schema.js';

export type { Logger };

/**
 * Keys whose values never reach a log line, at the top of a logged object or one level down: every
 * secret of the configuration (config/schema.ts SECRET_KEYS), and the credentials imapflow and the
 * OAuth2 code hold (a password, an access token, a signed assertion).
 */
const REDACTED_KEYS = [...SECRET_KEYS, 'pass', 'accessToken', 'assertion', 'client_assertion', 'refresh_token', 'id_token'];

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
        paths: [...REDACTED_KEYS, ...REDACTED_KEYS.map((k) => `*.${k}`)],
        censor: '[redacted]',
      },
    },
    pino.destination({ fd: 2, sync: true }),
  );
}
