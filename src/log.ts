import { pino, type DestinationStream, type Logger } from 'pino';

export type { Logger };

/** Keys whose values are never printed or logged: the config's secrets, wherever they appear. */
export const SECRET_KEYS: ReadonlySet<string> = new Set(['password', 'access_token', 'webhook_url', 'bot_token', 'token']);

/**
 * The root logger: JSON lines on stderr (stdout belongs to command output), or on `destination`
 * (a command run in process by a test). Secrets are redacted here, at the root, whatever a caller
 * passes in: the keys of SECRET_KEYS at the top of a line or one level down, and nodemailer's
 * `auth.pass`.
 */
export function createLogger(level: string, destination?: DestinationStream): Logger {
  const keys = [...SECRET_KEYS];
  return pino(
    {
      level,
      base: undefined,
      redact: { paths: [...keys, ...keys.map((k) => `*.${k}`), 'auth.pass'], censor: '[redacted]' },
    },
    destination ?? pino.destination({ fd: 2, sync: true }),
  );
}
