import { pino, type DestinationStream, type Logger } from 'pino';

export type { Logger };

/** Keys whose values are never printed or logged: the config's secrets, wherever they appear. */
export const SECRET_KEYS: ReadonlySet<string> = new Set([
  'password',
  'access_token',
  'webhook_url',
  'bot_token',
  'token',
  'client_secret',
  'private_key',
  'service_account_key',
]);

/**
 * Credentials that are not config keys but pass through code that might log them: an OAuth2 access
 * token as imapflow holds it, the signed assertions of the token grants, tokens a token endpoint
 * may answer.
 */
const CREDENTIAL_KEYS = ['accessToken', 'assertion', 'client_assertion', 'refresh_token', 'id_token'];

/**
 * The root logger: JSON lines on stderr (stdout belongs to command output), or on `destination`
 * (a command run in process by a test). Secrets are redacted here, at the root, whatever a caller
 * passes in: the keys of SECRET_KEYS and CREDENTIAL_KEYS at the top of a line or one level down,
 * and nodemailer's and imapflow's `auth.pass`.
 */
export function createLogger(level: string, destination?: DestinationStream): Logger {
  const keys = [...SECRET_KEYS, ...CREDENTIAL_KEYS];
  return pino(
    {
      level,
      base: undefined,
      redact: { paths: [...keys, ...keys.map((k) => `*.${k}`), 'auth.pass'], censor: '[redacted]' },
    },
    destination ?? pino.destination({ fd: 2, sync: true }),
  );
}
