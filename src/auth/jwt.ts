import crypto, { type KeyObject } from 'node:crypto';
import { RuawatchError, errorMessage } from '../errors.js';

/*
 * JSON Web Tokens signed with an RSA key (RFC 7519, RFC 7515), as the OAuth2 grants of auth/oauth2.ts
 * send them: a client assertion for the Microsoft identity platform and an authorization grant for
 * Google (both RFC 7523). Only what those two need: RS256 and PS256, compact serialisation.
 */

export type JwtAlgorithm = 'RS256' | 'PS256';

/** Base64url without padding (RFC 7515 section 2). */
export function base64url(data: Buffer | string): string {
  return (typeof data === 'string' ? Buffer.from(data) : data).toString('base64url');
}

/** A signed JWT in compact serialisation: base64url(header).base64url(claims).base64url(signature). */
export function signJwt(header: Record<string, unknown>, claims: Record<string, unknown>, key: KeyObject, alg: JwtAlgorithm): string {
  const input = `${base64url(JSON.stringify({ ...header, alg }))}.${base64url(JSON.stringify(claims))}`;
  // RFC 7518 section 3.5: PS256 is RSASSA-PSS with SHA-256, MGF1 with SHA-256, and a salt as long as the hash.
  const signature =
    alg === 'PS256'
      ? crypto.sign('sha256', Buffer.from(input), { key, padding: crypto.constants.RSA_PKCS1_PSS_PADDING, saltLength: 32 })
      : crypto.sign('sha256', Buffer.from(input), key);
  return `${input}.${base64url(signature)}`;
}

/**
 * An RSA private key from PEM text (PKCS#8 or PKCS#1; a file that also holds certificates is fine).
 * Both Microsoft and Google sign with RSA only. `what` names the setting in errors.
 */
export function readRsaKey(pem: string, what: string): KeyObject {
  const block = /-----BEGIN (?:RSA |ENCRYPTED )?PRIVATE KEY-----[\s\S]+?-----END (?:RSA |ENCRYPTED )?PRIVATE KEY-----/.exec(pem)?.[0];
  if (!block) throw new RuawatchError('E_CONFIG', `${what}: no PEM private key in it (expected "-----BEGIN PRIVATE KEY-----")`);
  if (block.includes('ENCRYPTED'))
    throw new RuawatchError('E_CONFIG', `${what}: the private key is encrypted; give it without a passphrase`);
  let key: KeyObject;
  try {
    key = crypto.createPrivateKey(block);
  } catch (err) {
    throw new RuawatchError('E_CONFIG', `${what}: not a readable private key: ${errorMessage(err)}`);
  }
  if (key.asymmetricKeyType !== 'rsa')
    throw new RuawatchError('E_CONFIG', `${what}: an ${key.asymmetricKeyType} key; an RSA key is needed`);
  return key;
}

/** The certificate's X.509 thumbprints as JWS header values: x5t (SHA-1) and x5t#S256 (SHA-256), RFC 7515 sections 4.1.7-4.1.8. */
export function thumbprints(cert: crypto.X509Certificate): { x5t: string; 'x5t#S256': string } {
  return {
    x5t: base64url(crypto.createHash('sha1').update(cert.raw).digest()),
    'x5t#S256': base64url(crypto.createHash('sha256').update(cert.raw).digest()),
  };
}

/** The first certificate in PEM text. */
export function readCertificate(pem: string, what: string): crypto.X509Certificate {
  const block = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/.exec(pem)?.[0];
  if (!block) throw new RuawatchError('E_CONFIG', `${what}: no PEM certificate in it (expected "-----BEGIN CERTIFICATE-----")`);
  try {
    return new crypto.X509Certificate(block);
  } catch (err) {
    throw new RuawatchError('E_CONFIG', `${what}: not a readable certificate: ${errorMessage(err)}`);
  }
}

/**
 * The `exp` claim of a token that is a JWT, unverified: only to know how long to keep reusing a
 * token that came without an expiry (auth = "command" or "file"). Null for an opaque token.
 */
export function unverifiedExpiry(token: string): number | null {
  const parts = token.split('.');
  if (parts.length !== 3) return null;
  try {
    const claims = JSON.parse(Buffer.from(parts[1]!, 'base64url').toString('utf8')) as { exp?: unknown };
    return typeof claims.exp === 'number' && Number.isFinite(claims.exp) ? claims.exp : null;
  } catch {
    return null;
  }
}
