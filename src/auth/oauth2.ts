import { randomUUID } from 'node:crypto';
import { RuawatchError } from '../errors.js';
import { type NetworkError, httpRequest, jsonObject } from './http.js';
import type { Issued } from './tokens.js';

/*
 * The token endpoint of an OAuth2 authorization server (RFC 6749): a form POSTed, a JSON answer.
 * Two grants use it here, both without a browser or a person:
 *   - client credentials (RFC 6749 section 4.4), the client authenticated by a secret or by a
 *     signed JWT client assertion (RFC 7523 section 2.2): the Microsoft identity platform;
 *   - a JWT used as the authorization grant (RFC 7523 section 2.1): a Google service account with
 *     domain-wide delegation.
 */

export const CLIENT_ASSERTION_TYPE = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';
export const JWT_BEARER_GRANT = 'urn:ietf:params:oauth:grant-type:jwt-bearer';

/** A token endpoint's answer is a small JSON object; anything larger is not one. */
const MAX_ANSWER_BYTES = 256 * 1024;
/** Longer than any token Microsoft or Google issue (a few KiB), short enough to refuse garbage. */
const MAX_TOKEN_CHARS = 64 * 1024;

export interface TokenRequest {
  url: string;
  form: Record<string, string>;
  /** What asks, for messages: "the Microsoft identity platform". */
  what: string;
  timeoutMs: number;
  signal?: AbortSignal | undefined;
  /** A hint for an error code the server answered (RFC 6749 section 5.2), by `error` and description. */
  hint?: (error: string, description: string) => string | null;
}

/**
 * POSTs a token request and reads the answer (RFC 6749 sections 5.1 and 5.2). Every failure is an
 * E_AUTH RuawatchError naming the endpoint and the server's own error; `retryable` when the server
 * could not be reached or failed (5xx), not when it refused.
 */
export async function requestToken(req: TokenRequest): Promise<Issued> {
  const where = `${req.what} (${new URL(req.url).origin})`;
  let answer;
  try {
    answer = await httpRequest(
      req.url,
      {
        method: 'POST',
        headers: {
          'content-type': 'application/x-www-form-urlencoded',
          accept: 'application/json',
          'client-request-id': randomUUID(),
        },
        body: new URLSearchParams(req.form).toString(),
      },
      MAX_ANSWER_BYTES,
      { timeoutMs: req.timeoutMs, signal: req.signal },
    );
  } catch (err) {
    const e = err as NetworkError;
    throw new RuawatchError('E_AUTH', `cannot reach ${where} for an access token: ${e.message}${e.errno ? ` (${e.errno})` : ''}`, {
      cause: err,
      retryable: true,
    });
  }
  const body = answer.over ? null : jsonObject(answer.body);
  if (answer.status === 200 && body) {
    const token = body.access_token;
    if (typeof token !== 'string' || token === '' || token.length > MAX_TOKEN_CHARS || /\s/.test(token)) {
      throw new RuawatchError('E_AUTH', `${where} answered without a usable access_token`);
    }
    // RFC 6749 section 5.1: token_type is required; a bearer token is what IMAP and Graph take (RFC 6750).
    if (body.token_type !== undefined && String(body.token_type).toLowerCase() !== 'bearer') {
      throw new RuawatchError('E_AUTH', `${where} issued a token of type "${String(body.token_type)}", not a bearer token`);
    }
    return { value: token, expiresIn: lifetime(body.expires_in) };
  }
  if (body && typeof body.error === 'string') {
    // Microsoft's error_description runs on with "\r\nTrace ID: ..."; its first line is the message.
    const description = typeof body.error_description === 'string' ? body.error_description.split(/\r?\n/)[0]!.trim() : '';
    const hint = req.hint?.(body.error, description) ?? null;
    const said = hint ? description.replace(/\.$/, '') : description;
    throw new RuawatchError(
      'E_AUTH',
      `${where} refused the token request: ${body.error}${said ? `: ${said}` : ''}${hint ? `; ${hint}` : ''}`,
      { retryable: answer.status >= 500 },
    );
  }
  throw new RuawatchError('E_AUTH', `${where} answered HTTP ${answer.status} without an OAuth2 answer`, {
    retryable: answer.status >= 500 || answer.status === 429,
  });
}

/** expires_in in seconds: a number, or (some servers) a string of digits; absent or nonsense: unknown. */
export function lifetime(v: unknown): number | null {
  const n = typeof v === 'number' ? v : typeof v === 'string' && /^\d+$/.test(v) ? Number(v) : NaN;
  return Number.isFinite(n) && n > 0 ? n : null;
}
