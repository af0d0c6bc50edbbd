import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import type { Logger } from 'pino';
import { authOf, type MailboxConfig } from '../config/schema.js';
import { RuawatchError, errorMessage } from '../errors.js';
import { readCertificate, readRsaKey, signJwt, thumbprints, unverifiedExpiry } from './jwt.js';
import { CLIENT_ASSERTION_TYPE, JWT_BEARER_GRANT, lifetime, requestToken } from './oauth2.js';
import { CachedTokens, type Issued, type Token, type TokenProvider } from './tokens.js';

/*
 * Where a mailbox's access tokens come from, one provider per way of logging in (`auth` in the
 * mailbox's config). Every provider checks what it can when it is built (a key that does not
 * parse, a certificate that does not match its key) and fails with E_CONFIG; a token that cannot
 * be had fails with E_AUTH when asked for.
 */

export const MICROSOFT_LOGIN = 'https://login.microsoftonline.com';
export const GRAPH_URL = 'https://graph.microsoft.com/v1.0';
/** Exchange Online's IMAP takes tokens for the Office 365 Exchange Online resource. */
export const EXCHANGE_SCOPE = 'https://outlook.office365.com/.default';
export const GOOGLE_TOKEN_URL = 'https://oauth2.googleapis.com/token';
/** Gmail's IMAP needs the full mail scope (https://developers.google.com/gmail/imap/xoauth2-protocol). */
export const GMAIL_SCOPE = 'https://mail.google.com/';

/** A client assertion is good for this long: Microsoft asks for 5-10 minutes at most. */
const ASSERTION_SECONDS = 300;
/** Google accepts an assertion of at most one hour. */
const GOOGLE_ASSERTION_SECONDS = 3600;
/** What a token command or file may hold. */
const MAX_TOKEN_OUTPUT = 64 * 1024;

/** The token provider of a mailbox, or null when it logs in with a password. */
export function tokenProviderFor(box: MailboxConfig, log: Logger): TokenProvider | null {
  const plog = log.child({ stage: 'auth', mailbox: box.name });
  switch (authOf(box)) {
    case 'password':
      return null;
    case 'microsoft':
      return microsoftTokens(box, plog);
    case 'google':
      return googleTokens(box, plog);
    case 'command':
      return commandTokens(box, plog);
    case 'file':
      return fileTokens(box, plog);
  }
}

/** The scope a Microsoft token is asked for: Graph's for a graph mailbox, Exchange Online's for IMAP. */
export function microsoftScope(box: MailboxConfig): string {
  if (box.scope) return box.scope;
  return box.kind === 'graph' ? `${new URL(box.graph_url ?? GRAPH_URL).origin}/.default` : EXCHANGE_SCOPE;
}

/**
 * The client-credentials grant of the Microsoft identity platform (RFC 6749 section 4.4), the app
 * authenticated by a client secret or by a certificate: a JWT client assertion signed with its key
 * (RFC 7523 section 2.2, in the form Microsoft documents under "certificate credentials").
 */
function microsoftTokens(box: MailboxConfig, log: Logger): TokenProvider {
  const tenant = box.tenant_id!;
  const clientId = box.client_id!;
  const url = box.token_url ?? `${MICROSOFT_LOGIN}/${encodeURIComponent(tenant)}/oauth2/v2.0/token`;
  const scope = microsoftScope(box);
  let credential: () => Record<string, string>;
  if (box.certificate_file) {
    const where = `mailbox ${box.name}`;
    let pem: string;
    try {
      pem = fs.readFileSync(box.certificate_file, 'utf8');
    } catch (err) {
      throw new RuawatchError('E_CONFIG', `${where}: cannot read certificate_file ${box.certificate_file}: ${errorMessage(err)}`);
    }
    const cert = readCertificate(pem, `${where}: certificate_file ${box.certificate_file}`);
    const key = readRsaKey(box.private_key!, `${where}: private_key`);
    if (!cert.checkPrivateKey(key)) {
      throw new RuawatchError('E_CONFIG', `${where}: private_key is not the key of the certificate in ${box.certificate_file}`);
    }
    const notAfter = Date.parse(cert.validTo);
    if (Number.isFinite(notAfter) && notAfter < Date.now()) {
      log.warn(
        { certificate: box.certificate_file, validTo: cert.validTo },
        'the certificate has expired; Microsoft refuses an expired credential',
      );
    }
    const header = { typ: 'JWT', ...thumbprints(cert) };
    credential = () => {
      const now = Math.floor(Date.now() / 1000);
      const claims = { aud: url, iss: clientId, sub: clientId, jti: randomUUID(), nbf: now, iat: now, exp: now + ASSERTION_SECONDS };
      return { client_assertion_type: CLIENT_ASSERTION_TYPE, client_assertion: signJwt(header, claims, key, 'PS256') };
    };
  } else {
    const secret = box.client_secret!;
    credential = () => ({ client_secret: secret });
  }
  const source = `the Microsoft identity platform (tenant ${tenant}, client ${clientId})`;
  return new CachedTokens(
    source,
    (signal) =>
      requestToken({
        url,
        form: { client_id: clientId, scope, grant_type: 'client_credentials', ...credential() },
        what: 'the Microsoft identity platform',
        timeoutMs: box.timeout_seconds * 1000,
        signal,
        hint: microsoftHint,
      }),
    log,
  );
}

/** What to check for the errors of the Microsoft identity platform people meet most (AADSTS codes in the description). */
function microsoftHint(_error: string, description: string): string | null {
  const code = /AADSTS(\d+)/.exec(description)?.[1];
  switch (code) {
    case '7000215':
      return "client_secret is wrong: give the secret's Value, not its Secret ID";
    case '7000222':
      return 'the client secret has expired: add a new one under Certificates & secrets';
    case '700016':
      return 'no app with this client_id in this tenant: check client_id and tenant_id';
    case '90002':
    case '900023':
      return 'no such tenant: check tenant_id';
    case '700027':
    case '700024':
      return 'the certificate is not registered with the app, or the clock of this machine is off';
    case '1002012':
    case '70011':
      return 'the scope is not valid for this app';
    default:
      return null;
  }
}

/**
 * A Google service account with domain-wide delegation: a JWT signed with its key, `sub` naming the
 * mailbox, exchanged for a token (RFC 7523 section 2.1, as Google documents it for server-to-server
 * applications).
 */
function googleTokens(box: MailboxConfig, log: Logger): TokenProvider {
  const where = `mailbox ${box.name}: service_account_key`;
  let key: Record<string, unknown>;
  try {
    key = JSON.parse(box.service_account_key!) as Record<string, unknown>;
  } catch (err) {
    throw new RuawatchError('E_CONFIG', `${where}: not JSON (${errorMessage(err)}); give the service account's JSON key file`);
  }
  if (key.type !== 'service_account') {
    throw new RuawatchError(
      'E_CONFIG',
      `${where}: not a service account key (its "type" is ${JSON.stringify(key.type)}, not "service_account")`,
    );
  }
  const email = key.client_email;
  if (typeof email !== 'string' || !email.includes('@')) throw new RuawatchError('E_CONFIG', `${where}: no client_email in it`);
  if (typeof key.private_key !== 'string') throw new RuawatchError('E_CONFIG', `${where}: no private_key in it`);
  const signing = readRsaKey(key.private_key, where);
  const keyId = typeof key.private_key_id === 'string' ? key.private_key_id : null;
  const url =
    box.token_url ?? (typeof key.token_uri === 'string' && key.token_uri.startsWith('https://') ? key.token_uri : GOOGLE_TOKEN_URL);
  const scope = box.scope ?? GMAIL_SCOPE;
  return new CachedTokens(
    `Google (service account ${email}, for ${box.user})`,
    (signal) => {
      const now = Math.floor(Date.now() / 1000);
      const claims = { iss: email, sub: box.user, scope, aud: url, iat: now, exp: now + GOOGLE_ASSERTION_SECONDS };
      const assertion = signJwt({ typ: 'JWT', ...(keyId ? { kid: keyId } : {}) }, claims, signing, 'RS256');
      return requestToken({
        url,
        form: { grant_type: JWT_BEARER_GRANT, assertion },
        what: 'Google',
        timeoutMs: box.timeout_seconds * 1000,
        signal,
        hint: (error, description) => googleHint(error, description, key.client_id, scope),
      });
    },
    log,
  );
}

function googleHint(error: string, description: string, clientId: unknown, scope: string): string | null {
  if (error === 'unauthorized_client') {
    return `domain-wide delegation is not granted: in the Admin console (Security > Access and data control > API controls > Domain-wide delegation) add client ID ${String(clientId)} with the scope ${scope}`;
  }
  if (error === 'invalid_grant' && /email|user/i.test(description)) return 'user must be a mailbox of the Google Workspace domain';
  if (error === 'invalid_grant') return 'the key may have been deleted, or the clock of this machine is off';
  return null;
}

/**
 * A program (run without a shell) that prints a token on its standard output: the token alone, or
 * a token endpoint's JSON answer ({"access_token": ..., "expires_in": ...}), so a `curl` to any
 * token endpoint works as it is. It is run again when the token expires (told by expires_in or by
 * the token's own `exp` when it is a JWT) or is refused.
 */
function commandTokens(box: MailboxConfig, log: Logger): TokenProvider {
  const argv = box.token_command!;
  return new CachedTokens(`the token command ${argv[0]}`, (signal) => runTokenCommand(argv, box, signal), log);
}

function runTokenCommand(argv: string[], box: MailboxConfig, signal?: AbortSignal): Promise<Issued> {
  const what = `mailbox ${box.name}: the token command ${argv[0]}`;
  return new Promise((resolve, reject) => {
    const child = spawn(argv[0]!, argv.slice(1), {
      stdio: ['ignore', 'pipe', 'pipe'],
      // The mailbox it is asked for, so one program can serve several.
      env: { ...process.env, RUAWATCH_MAILBOX: box.name, RUAWATCH_MAILBOX_USER: box.user },
      timeout: box.timeout_seconds * 1000,
      killSignal: 'SIGKILL',
      ...(signal ? { signal } : {}),
    });
    const out: Buffer[] = [];
    let outBytes = 0;
    let err = '';
    child.stdout.on('data', (d: Buffer) => {
      outBytes += d.length;
      if (outBytes <= MAX_TOKEN_OUTPUT) out.push(d);
    });
    // Kept short: a program may print anything there; only its last line is shown.
    child.stderr.on('data', (d: Buffer) => (err = (err + d.toString('utf8')).slice(-2000)));
    child.on('error', (e) => reject(new RuawatchError('E_AUTH', `${what} could not be run: ${errorMessage(e)}`, { cause: e })));
    child.on('close', (code, sig) => {
      const last = err.trim().split('\n').pop()?.slice(0, 300);
      if (sig) return reject(new RuawatchError('E_AUTH', `${what} was stopped (${sig}) after ${box.timeout_seconds} s or on shutdown`));
      if (code !== 0) return reject(new RuawatchError('E_AUTH', `${what} exited with ${code}${last ? `: ${last}` : ''}`));
      if (outBytes > MAX_TOKEN_OUTPUT) return reject(new RuawatchError('E_AUTH', `${what} printed more than ${MAX_TOKEN_OUTPUT} bytes`));
      try {
        resolve(parseTokenText(Buffer.concat(out).toString('utf8'), what));
      } catch (e) {
        reject(e as Error);
      }
    });
  });
}

/**
 * A file that holds a token, kept up to date by something else (a sidecar, a cron job): read anew
 * for every connection. A refused token is not used again until the file holds another one.
 */
function fileTokens(box: MailboxConfig, log: Logger): TokenProvider {
  const path = box.token_path!;
  const what = `mailbox ${box.name}: token_path ${path}`;
  let refused: string | null = null;
  return {
    source: `the token file ${path}`,
    token(): Promise<Token> {
      let text: string;
      try {
        const fd = fs.openSync(path, 'r');
        try {
          const buf = Buffer.alloc(MAX_TOKEN_OUTPUT + 1);
          const n = fs.readSync(fd, buf, 0, buf.length, 0);
          if (n > MAX_TOKEN_OUTPUT) throw new RuawatchError('E_AUTH', `${what}: more than ${MAX_TOKEN_OUTPUT} bytes`);
          text = buf.subarray(0, n).toString('utf8');
        } finally {
          fs.closeSync(fd);
        }
      } catch (err) {
        if (err instanceof RuawatchError) return Promise.reject(err);
        return Promise.reject(new RuawatchError('E_AUTH', `${what}: cannot read it: ${errorMessage(err)}`, { cause: err }));
      }
      let issued: Issued;
      try {
        issued = parseTokenText(text, what);
      } catch (err) {
        return Promise.reject(err as Error);
      }
      if (issued.value === refused) {
        return Promise.reject(
          new RuawatchError('E_AUTH', `${what}: the token in it was refused by the server, and the file has not been renewed since`),
        );
      }
      return Promise.resolve({
        value: issued.value,
        expiresAt: issued.expiresIn === null ? null : Date.now() + issued.expiresIn * 1000,
        fresh: false,
      });
    },
    refused(token: Token): void {
      refused = token.value;
      log.info({ source: `the token file ${path}` }, 'access token refused by the server');
    },
  };
}

/**
 * A token as a command prints it or a file holds it: the token itself on one line, or a JSON object
 * with access_token (and expires_in). Without expires_in, the `exp` of a JWT tells the lifetime.
 */
export function parseTokenText(text: string, what: string): Issued {
  const trimmed = text.trim();
  if (trimmed.startsWith('{')) {
    let obj: Record<string, unknown>;
    try {
      obj = JSON.parse(trimmed) as Record<string, unknown>;
    } catch (err) {
      throw new RuawatchError('E_AUTH', `${what}: printed JSON that does not parse (${errorMessage(err)})`);
    }
    const value = obj.access_token;
    if (typeof value !== 'string' || value === '' || /\s/.test(value))
      throw new RuawatchError('E_AUTH', `${what}: the JSON has no access_token`);
    return { value, expiresIn: lifetime(obj.expires_in) ?? jwtLifetime(value) };
  }
  if (trimmed === '') throw new RuawatchError('E_AUTH', `${what}: no token (empty)`);
  if (/\s/.test(trimmed)) throw new RuawatchError('E_AUTH', `${what}: expected one token on one line, or a JSON object with access_token`);
  return { value: trimmed, expiresIn: jwtLifetime(trimmed) };
}

function jwtLifetime(token: string): number | null {
  const exp = unverifiedExpiry(token);
  if (exp === null) return null;
  return Math.max(1, exp - Math.floor(Date.now() / 1000));
}
