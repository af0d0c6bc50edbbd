import { spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { tempDir } from './common.js';

/**
 * A loopback stand-in for the two OAuth2 authorization servers ruawatch gets tokens from, and a
 * token introspection endpoint (RFC 7662) for Dovecot's oauth2 password database and the Graph
 * stand-in to validate the tokens it issued:
 *
 *   POST /{tenant}/oauth2/v2.0/token   the Microsoft identity platform, client-credentials grant
 *                                      (RFC 6749 section 4.4) with a client secret or a JWT client
 *                                      assertion (RFC 7523 sections 2.2 and 3, Microsoft's
 *                                      "certificate credentials": PS256 or RS256, x5t#S256 or x5t)
 *   POST /google/token                 a JWT-bearer authorization grant (RFC 7523 sections 2.1 and
 *                                      3, Google's service-account flow: RS256, kid, scope, sub)
 *   POST /introspect                   RFC 7662 (token=...)
 *
 * Every request is checked field by field: method, Content-Type, each parameter present once and
 * no others, the JWT's header, claims and signature (with the registered test key), its lifetime,
 * and a jti never seen before. A request that breaks the protocol is answered as the protocol says
 * (400 invalid_request, 401 invalid_client, ...) and recorded in `violations`, which tests expect
 * to be empty; a request refused on purpose (a wrong secret) is not a violation. Tokens are opaque,
 * short-lived (`lifetimeSeconds`), tied to a resource (the scope's) and, for Exchange, to the one
 * mailbox the app was given access to.
 */

export interface MicrosoftApp {
  tenant: string;
  clientId: string;
  /** A client secret, or the certificate whose key signs the assertion. */
  secret?: string;
  certificate?: crypto.X509Certificate;
  /** Mailboxes the app was given (Add-MailboxPermission for IMAP; Mail.ReadWrite in scope for Graph). */
  mailboxes: string[];
}

export interface GoogleServiceAccount {
  clientEmail: string;
  clientId: string;
  keyId: string;
  publicKey: crypto.KeyObject;
  /** Scopes granted to clientId under domain-wide delegation. */
  delegated: string[];
  /** The domain's users that may be impersonated. */
  users: string[];
}

export interface IssuedToken {
  token: string;
  /** The resource the token is for: https://outlook.office365.com, https://graph.microsoft.com, https://mail.google.com/. */
  resource: string;
  clientId: string;
  /** The mailboxes it opens. */
  mailboxes: string[];
  expiresAt: number;
  revoked: boolean;
}

export interface TokenRequestRecord {
  endpoint: 'microsoft' | 'google';
  grant: string;
  /** How the client authenticated: secret, assertion (Microsoft), jwt-bearer (Google). */
  credential: string;
  ok: boolean;
  error?: string;
}

export class OAuthServer {
  url = '';
  lifetimeSeconds = 3600;
  readonly microsoft: MicrosoftApp[] = [];
  readonly google: GoogleServiceAccount[] = [];
  readonly tokens = new Map<string, IssuedToken>();
  readonly requests: TokenRequestRecord[] = [];
  readonly introspections: { token: string; active: boolean }[] = [];
  readonly violations: string[] = [];
  /** Answer the next N token requests 503 (the endpoint down for a moment). */
  failNext = 0;
  private readonly seenJti = new Set<string>();
  private server: http.Server | null = null;

  async start(): Promise<this> {
    this.server = http.createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => this.handle(req, Buffer.concat(chunks), res));
    });
    await new Promise<void>((resolve) => this.server!.listen(0, '127.0.0.1', resolve));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
    return this;
  }

  async close(): Promise<void> {
    this.server?.closeAllConnections();
    await new Promise((resolve) => this.server?.close(resolve));
  }

  microsoftTokenUrl(tenant: string): string {
    return `${this.url}/${tenant}/oauth2/v2.0/token`;
  }

  get googleTokenUrl(): string {
    return `${this.url}/google/token`;
  }

  get introspectionUrl(): string {
    return `${this.url}/introspect`;
  }

  /** The token if it is valid now for `resource` and `mailbox`. */
  valid(token: string, resource: string, mailbox: string): IssuedToken | null {
    const t = this.tokens.get(token);
    if (!t || t.revoked || t.expiresAt <= Date.now() || t.resource !== resource) return null;
    return t.mailboxes.some((m) => m.toLowerCase() === mailbox.toLowerCase()) ? t : null;
  }

  /** Revokes every token issued so far (as a password reset or a removed permission does). */
  revokeAll(): void {
    for (const t of this.tokens.values()) t.revoked = true;
  }

  issuedFor(clientId: string): IssuedToken[] {
    return [...this.tokens.values()].filter((t) => t.clientId === clientId);
  }

  private handle(req: http.IncomingMessage, body: Buffer, res: http.ServerResponse): void {
    const url = new URL(req.url ?? '/', this.url);
    const send = (status: number, obj: unknown) => {
      res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store', pragma: 'no-cache' });
      res.end(JSON.stringify(obj));
    };
    if (url.pathname === '/introspect') return this.introspect(req, body, send);
    const ms = /^\/([^/]+)\/oauth2\/v2\.0\/token$/.exec(url.pathname);
    if (!ms && url.pathname !== '/google/token') {
      this.violations.push(`${req.method} ${url.pathname}: no such endpoint`);
      return send(404, { error: 'invalid_request', error_description: 'no such endpoint' });
    }
    if (this.failNext > 0) {
      this.failNext--;
      return send(503, { error: 'temporarily_unavailable', error_description: 'the stand-in is down for a moment' });
    }
    // RFC 6749 section 3.2: the token endpoint takes POST with application/x-www-form-urlencoded.
    const form = this.form(req, body, url);
    if (typeof form === 'string') return send(400, { error: 'invalid_request', error_description: form });
    if (ms) return this.microsoftToken(decodeURIComponent(ms[1]!), url, form, send);
    return this.googleToken(url, form, send);
  }

  /** The request's form, or why it is not a valid one (recorded as a violation). */
  private form(req: http.IncomingMessage, body: Buffer, url: URL): Map<string, string> | string {
    const bad = (why: string) => {
      this.violations.push(`${req.method} ${url.pathname}: ${why}`);
      return why;
    };
    if (req.method !== 'POST') return bad(`method ${req.method}, not POST (RFC 6749 section 3.2)`);
    if (url.search) return bad('parameters in the query string (RFC 6749 section 3.2: in the body)');
    const type = (req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
    if (type !== 'application/x-www-form-urlencoded')
      return bad(`Content-Type ${type || '(none)'} (RFC 6749: application/x-www-form-urlencoded)`);
    const form = new Map<string, string>();
    for (const [k, v] of new URLSearchParams(body.toString('utf8'))) {
      // RFC 6749 section 3.1: parameters MUST NOT be included more than once.
      if (form.has(k)) return bad(`parameter ${k} given twice (RFC 6749 section 3.1)`);
      // Section 3.1: parameters sent without a value MUST be treated as if omitted.
      if (v === '') return bad(`parameter ${k} sent empty`);
      form.set(k, v);
    }
    return form;
  }

  private exactly(form: Map<string, string>, allowed: string[], where: string): string | null {
    const extra = [...form.keys()].filter((k) => !allowed.includes(k));
    if (extra.length) {
      const why = `${where}: unexpected parameters ${extra.join(', ')}`;
      this.violations.push(why);
      return why;
    }
    return null;
  }

  private microsoftToken(tenant: string, url: URL, form: Map<string, string>, send: (s: number, o: unknown) => void): void {
    const where = `Microsoft ${url.pathname}`;
    const record = (ok: boolean, credential: string, error?: string) =>
      this.requests.push({ endpoint: 'microsoft', grant: form.get('grant_type') ?? '', credential, ok, ...(error ? { error } : {}) });
    const fail = (status: number, error: string, description: string, violation: boolean, credential = '') => {
      if (violation) this.violations.push(`${where}: ${description}`);
      record(false, credential, error);
      // Microsoft's own shape: AADSTS code first, trace details on the following lines.
      send(status, {
        error,
        error_description: `${description}\r\nTrace ID: ${crypto.randomUUID()}\r\nCorrelation ID: ${crypto.randomUUID()}\r\nTimestamp: ${new Date().toISOString()}`,
        error_codes: [Number(/AADSTS(\d+)/.exec(description)?.[1] ?? 0)],
      });
    };
    if (form.get('grant_type') !== 'client_credentials') {
      return fail(400, 'unsupported_grant_type', `AADSTS70003: grant_type ${form.get('grant_type')} is not client_credentials`, true);
    }
    const secret = form.has('client_secret');
    const assertion = form.has('client_assertion') || form.has('client_assertion_type');
    const credential = secret ? 'secret' : 'assertion';
    const extra = this.exactly(
      form,
      ['grant_type', 'client_id', 'scope', ...(secret ? ['client_secret'] : ['client_assertion_type', 'client_assertion'])],
      where,
    );
    if (extra) return fail(400, 'invalid_request', `AADSTS900144: ${extra}`, false, credential);
    if (secret === assertion)
      return fail(400, 'invalid_request', 'AADSTS900144: exactly one of client_secret or client_assertion is required', true);
    const clientId = form.get('client_id');
    if (!clientId)
      return fail(
        400,
        'invalid_request',
        "AADSTS900144: The request body must contain the following parameter: 'client_id'.",
        true,
        credential,
      );
    const scope = form.get('scope');
    // Client credentials take the resource's /.default scope, one resource only.
    if (!scope || !/^https:\/\/[^\s/]+\/\.default$/.test(scope)) {
      return fail(
        400,
        'invalid_scope',
        `AADSTS1002012: The provided value for scope ${scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier.`,
        true,
        credential,
      );
    }
    const app = this.microsoft.find((a) => a.clientId === clientId && a.tenant === tenant);
    if (!app) {
      const known = this.microsoft.some((a) => a.tenant === tenant);
      return known
        ? fail(
            400,
            'unauthorized_client',
            `AADSTS700016: Application with identifier '${clientId}' was not found in the directory '${tenant}'.`,
            false,
            credential,
          )
        : fail(400, 'invalid_request', `AADSTS90002: Tenant '${tenant}' not found.`, false, credential);
    }
    if (secret) {
      if (!app.secret || form.get('client_secret') !== app.secret) {
        return fail(
          401,
          'invalid_client',
          `AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '${clientId}'.`,
          false,
          credential,
        );
      }
    } else {
      if (form.get('client_assertion_type') !== 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer') {
        return fail(
          400,
          'invalid_request',
          `AADSTS50027: client_assertion_type ${form.get('client_assertion_type')} (RFC 7523 section 2.2)`,
          true,
          credential,
        );
      }
      const why = this.checkAssertion(form.get('client_assertion') ?? '', app, url);
      if (why) return fail(401, 'invalid_client', `AADSTS700027: Client assertion failed signature validation. ${why}`, true, credential);
    }
    const resource = scope.replace(/\/\.default$/, '');
    record(true, credential);
    send(200, {
      token_type: 'Bearer',
      expires_in: this.lifetimeSeconds,
      ext_expires_in: this.lifetimeSeconds,
      access_token: this.issue(resource, clientId, app.mailboxes),
    });
  }

  /** Why a client assertion is not valid (RFC 7523 section 3, Microsoft's certificate credentials), or null. */
  private checkAssertion(jwt: string, app: MicrosoftApp, url: URL): string | null {
    if (!app.certificate) return 'no certificate is registered for the app';
    const parsed = parseJwt(jwt);
    if (typeof parsed === 'string') return parsed;
    const { header, claims } = parsed;
    if (header.typ !== undefined && header.typ !== 'JWT') return `typ ${String(header.typ)}`;
    const sha256 = crypto.createHash('sha256').update(app.certificate.raw).digest('base64url');
    const sha1 = crypto.createHash('sha1').update(app.certificate.raw).digest('base64url');
    if (header['x5t#S256'] === undefined && header.x5t === undefined) return 'no x5t#S256 (or x5t) in the header';
    if (header['x5t#S256'] !== undefined && header['x5t#S256'] !== sha256)
      return 'x5t#S256 is not the thumbprint of the registered certificate';
    if (header.x5t !== undefined && header.x5t !== sha1) return 'x5t is not the thumbprint of the registered certificate';
    const key = app.certificate.publicKey;
    if (!verifyJwt(parsed, key, ['PS256', 'RS256']))
      return `the ${String(header.alg)} signature does not verify with the registered certificate`;
    const tokenUrl = `${this.url}${url.pathname}`;
    return checkClaims(claims, { iss: app.clientId, sub: app.clientId, aud: tokenUrl, maxLifetime: 600, jti: this.seenJti });
  }

  private googleToken(url: URL, form: Map<string, string>, send: (s: number, o: unknown) => void): void {
    const where = `Google ${url.pathname}`;
    const fail = (error: string, description: string, violation: boolean) => {
      if (violation) this.violations.push(`${where}: ${description}`);
      this.requests.push({ endpoint: 'google', grant: form.get('grant_type') ?? '', credential: 'jwt-bearer', ok: false, error });
      send(400, { error, error_description: description });
    };
    if (form.get('grant_type') !== 'urn:ietf:params:oauth:grant-type:jwt-bearer') {
      return fail('unsupported_grant_type', `grant_type ${form.get('grant_type')} (RFC 7523 section 2.1)`, true);
    }
    const extra = this.exactly(form, ['grant_type', 'assertion'], where);
    if (extra) return fail('invalid_request', extra, false);
    const parsed = parseJwt(form.get('assertion') ?? '');
    if (typeof parsed === 'string') return fail('invalid_grant', parsed, true);
    const { header, claims } = parsed;
    const account = this.google.find((a) => a.clientEmail === claims.iss);
    if (!account) return fail('invalid_grant', 'Invalid JWT Signature.', true);
    if (header.kid !== account.keyId) return fail('invalid_grant', `kid ${String(header.kid)} is not the key's id`, true);
    if (!verifyJwt(parsed, account.publicKey, ['RS256'])) return fail('invalid_grant', 'Invalid JWT Signature.', true);
    const claimsWhy = checkClaims(claims, { iss: account.clientEmail, aud: `${this.url}${url.pathname}`, maxLifetime: 3600 });
    if (claimsWhy) return fail('invalid_grant', claimsWhy, true);
    if (typeof claims.scope !== 'string' || claims.scope === '') return fail('invalid_scope', 'no scope claim', true);
    const scopes = claims.scope.split(' ');
    if (scopes.some((s) => !account.delegated.includes(s))) {
      return fail(
        'unauthorized_client',
        'Client is unauthorized to retrieve access tokens using this method, or client not authorized for any of the scopes requested.',
        false,
      );
    }
    if (typeof claims.sub !== 'string' || !account.users.includes(claims.sub))
      return fail('invalid_grant', 'Invalid email or User ID', false);
    this.requests.push({ endpoint: 'google', grant: form.get('grant_type')!, credential: 'jwt-bearer', ok: true });
    send(200, {
      access_token: this.issue(scopes[0]!, account.clientId, [claims.sub]),
      expires_in: this.lifetimeSeconds,
      token_type: 'Bearer',
    });
  }

  /** RFC 7662: POST token=...; "active" and, for Dovecot, the username the token opens. */
  private introspect(req: http.IncomingMessage, body: Buffer, send: (s: number, o: unknown) => void): void {
    const type = (req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
    if (req.method !== 'POST' || type !== 'application/x-www-form-urlencoded') {
      this.violations.push(`introspection: ${req.method} ${type}`);
      return send(400, { error: 'invalid_request' });
    }
    const token = new URLSearchParams(body.toString('utf8')).get('token') ?? '';
    const t = this.tokens.get(token);
    // The IMAP server is Exchange's or Gmail's stand-in: only tokens for their resources open it.
    const active =
      !!t &&
      !t.revoked &&
      t.expiresAt > Date.now() &&
      (t.resource === 'https://outlook.office365.com' || t.resource === 'https://mail.google.com/');
    this.introspections.push({ token, active });
    send(
      200,
      active
        ? { active: true, username: t.mailboxes[0], client_id: t.clientId, exp: Math.floor(t.expiresAt / 1000), token_type: 'Bearer' }
        : { active: false },
    );
  }

  private issue(resource: string, clientId: string, mailboxes: string[]): string {
    const token = crypto.randomBytes(32).toString('base64url');
    this.tokens.set(token, { token, resource, clientId, mailboxes, expiresAt: Date.now() + this.lifetimeSeconds * 1000, revoked: false });
    return token;
  }
}

interface ParsedJwt {
  header: Record<string, unknown>;
  claims: Record<string, unknown>;
  input: string;
  signature: Buffer;
}

function parseJwt(jwt: string): ParsedJwt | string {
  const parts = jwt.split('.');
  if (parts.length !== 3) return 'not a JWS in compact serialisation';
  for (const p of parts) if (!/^[A-Za-z0-9_-]*$/.test(p)) return 'not base64url (RFC 7515 section 2: no padding)';
  try {
    const header = JSON.parse(Buffer.from(parts[0]!, 'base64url').toString('utf8')) as Record<string, unknown>;
    const claims = JSON.parse(Buffer.from(parts[1]!, 'base64url').toString('utf8')) as Record<string, unknown>;
    return { header, claims, input: `${parts[0]}.${parts[1]}`, signature: Buffer.from(parts[2]!, 'base64url') };
  } catch {
    return 'the header or claims are not JSON';
  }
}

function verifyJwt(jwt: ParsedJwt, key: crypto.KeyObject, algs: string[]): boolean {
  const alg = jwt.header.alg;
  if (typeof alg !== 'string' || !algs.includes(alg)) return false;
  const data = Buffer.from(jwt.input);
  if (alg === 'PS256') {
    return crypto.verify('sha256', data, { key, padding: crypto.constants.RSA_PKCS1_PSS_PADDING, saltLength: 32 }, jwt.signature);
  }
  return crypto.verify('sha256', data, key, jwt.signature);
}

/** RFC 7523 section 3 (and RFC 7519 section 4.1): who, for whom, and a short life. */
function checkClaims(
  c: Record<string, unknown>,
  want: { iss: string; sub?: string; aud: string; maxLifetime: number; jti?: Set<string> },
): string | null {
  const now = Math.floor(Date.now() / 1000);
  if (c.iss !== want.iss) return `iss ${String(c.iss)}, expected ${want.iss}`;
  if (want.sub !== undefined && c.sub !== want.sub) return `sub ${String(c.sub)}, expected ${want.sub}`;
  const aud = Array.isArray(c.aud) ? c.aud : [c.aud];
  if (!aud.includes(want.aud)) return `aud ${JSON.stringify(c.aud)}, expected the token endpoint ${want.aud}`;
  if (typeof c.exp !== 'number') return 'no exp (RFC 7523 section 3 item 4)';
  if (c.exp <= now) return 'expired';
  if (c.nbf !== undefined && (typeof c.nbf !== 'number' || c.nbf > now + 60)) return 'nbf in the future';
  if (c.iat !== undefined && (typeof c.iat !== 'number' || c.iat > now + 60)) return 'iat in the future';
  const from = typeof c.nbf === 'number' ? c.nbf : typeof c.iat === 'number' ? c.iat : now;
  if (c.exp - from > want.maxLifetime) return `lives ${c.exp - from} s, more than ${want.maxLifetime}`;
  if (want.jti) {
    if (typeof c.jti !== 'string' || c.jti === '') return 'no jti';
    if (want.jti.has(c.jti)) return `jti ${c.jti} replayed`;
    want.jti.add(c.jti);
  }
  return null;
}

/** A self-signed certificate and its RSA key (openssl), as an app registration's certificate credential. */
export function testCertificate(): { certFile: string; keyFile: string; certificate: crypto.X509Certificate } {
  const dir = tempDir('ruawatch-cert-');
  const certFile = path.join(dir, 'app.crt');
  const keyFile = path.join(dir, 'app.key');
  const r = spawnSync(
    'openssl',
    ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', '/CN=ruawatch-test-app', '-keyout', keyFile, '-out', certFile],
    { encoding: 'utf8' },
  );
  if (r.status !== 0) throw new Error(`openssl failed: ${r.stderr}`);
  return { certFile, keyFile, certificate: new crypto.X509Certificate(fs.readFileSync(certFile)) };
}

/** A Google service account's JSON key file, its key made here. */
export function testServiceAccount(email: string): { keyFile: string; account: Omit<GoogleServiceAccount, 'delegated' | 'users'> } {
  const { privateKey, publicKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  const keyId = crypto.randomBytes(20).toString('hex');
  const clientId = String(100000000000000000000n + BigInt(crypto.randomInt(1_000_000)));
  const keyFile = path.join(tempDir('ruawatch-sa-'), 'service-account.json');
  fs.writeFileSync(
    keyFile,
    JSON.stringify({
      type: 'service_account',
      project_id: 'ruawatch-test',
      private_key_id: keyId,
      private_key: privateKey.export({ type: 'pkcs8', format: 'pem' }),
      client_email: email,
      client_id: clientId,
      auth_uri: 'https://accounts.google.com/o/oauth2/auth',
      token_uri: 'https://oauth2.googleapis.com/token',
    }),
  );
  return { keyFile, account: { clientEmail: email, clientId, keyId, publicKey } };
}
