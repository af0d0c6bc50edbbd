/** OAuth2 token requests against a loopback server, and token providers that read certificates or run commands. */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { describe, it } from 'node:test';
import { thumbprints } from '../src/auth/jwt.js';
import { requestToken } from '../src/auth/oauth2.js';
import { tokenProviderFor } from '../src/auth/providers.js';
import { type RuawatchError } from '../src/errors.js';
import { createLogger } from '../src/log.js';
import { tempDir } from './helpers/common.js';
import { testCertificate } from './helpers/oauth-server.js';
import { mailboxConfig } from './helpers/config.js';

const log = createLogger('silent');

const box = mailboxConfig;

/** A one-route HTTP server answering `status` with `body`; the requests it got. */
async function answering(status: number, body: string, headers: Record<string, string> = {}) {
  const got: { method: string; type: string; body: string }[] = [];
  const server = http.createServer((req, res) => {
    let b = '';
    req.on('data', (d: Buffer) => (b += d.toString()));
    req.on('end', () => {
      got.push({ method: req.method!, type: req.headers['content-type'] ?? '', body: b });
      res.writeHead(status, { 'content-type': 'application/json', ...headers });
      res.end(body);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/token`;
  return { url, got, close: () => new Promise((r) => server.close(r)) };
}

describe('token endpoint answers (auth/oauth2.ts, RFC 6749 section 5) from a loopback server', () => {
  const ask = (url: string) =>
    requestToken({ url, form: { grant_type: 'client_credentials', scope: 'x y' }, what: 'the IdP', timeoutMs: 5000 });

  it('POSTs a form and takes access_token, a bearer type, and expires_in as a number or a string of digits', async () => {
    const s = await answering(200, JSON.stringify({ access_token: 'tok', token_type: 'bearer', expires_in: '3599' }));
    try {
      assert.deepEqual(await ask(s.url), { value: 'tok', expiresIn: 3599 });
      assert.deepEqual(s.got, [
        { method: 'POST', type: 'application/x-www-form-urlencoded', body: 'grant_type=client_credentials&scope=x+y' },
      ]);
    } finally {
      await s.close();
    }
  });

  it('refuses a token of another type, one with spaces, no token at all, and an answer that is not JSON', async () => {
    for (const [body, pattern] of [
      [{ access_token: 'tok', token_type: 'mac' }, /issued a token of type "mac", not a bearer token/],
      [{ access_token: 'two words', token_type: 'Bearer' }, /without a usable access_token/],
      [{ token_type: 'Bearer' }, /without a usable access_token/],
    ] as const) {
      const s = await answering(200, JSON.stringify(body));
      await assert.rejects(ask(s.url), pattern);
      await s.close();
    }
    const html = await answering(200, '<html>proxy login</html>');
    await assert.rejects(ask(html.url), /answered HTTP 200 without an OAuth2 answer/);
    await html.close();
  });

  it('names the error and the first line of its description; a 5xx or no answer is retryable, a refusal is not', async () => {
    const s = await answering(
      400,
      JSON.stringify({ error: 'invalid_client', error_description: 'AADSTS7000222: The client secret is expired.\r\nTrace ID: 1' }),
    );
    const err = (await ask(s.url).catch((e: unknown) => e)) as RuawatchError;
    await s.close();
    assert.equal(err.code, 'E_AUTH');
    assert.equal(err.retryable, false);
    assert.match(
      err.message,
      /^the IdP \(http:\/\/127\.0\.0\.1:\d+\) refused the token request: invalid_client: AADSTS7000222: The client secret is expired\.$/,
    );
    const down = await answering(503, JSON.stringify({ error: 'temporarily_unavailable' }));
    assert.equal(((await ask(down.url).catch((e: unknown) => e)) as RuawatchError).retryable, true);
    await down.close();
    const gone = (await ask(down.url).catch((e: unknown) => e)) as RuawatchError;
    assert.equal(gone.retryable, true);
    assert.match(gone.message, /cannot reach the IdP .* for an access token: .*ECONNREFUSED/);
  });
});

describe('token providers with certificates and commands (auth/providers.ts)', () => {
  it("takes the certificate's thumbprints from its DER bytes, as openssl computes them", () => {
    const { certificate } = testCertificate();
    const t = thumbprints(certificate);
    const hex = (b64: string) => Buffer.from(b64, 'base64url').toString('hex').toUpperCase();
    assert.equal(hex(t['x5t#S256']), certificate.fingerprint256.replace(/:/g, ''));
    assert.equal(hex(t.x5t), certificate.fingerprint.replace(/:/g, ''));
  });

  it("checks what it can before any request: a key that is not the certificate's, a key file that is not a service account's", () => {
    const a = testCertificate();
    const b = testCertificate();
    const ms = { auth: 'microsoft' as const, tenant_id: 't', client_id: 'c', certificate_file: a.certFile };
    assert.throws(
      () => tokenProviderFor(box({ ...ms, private_key: fs.readFileSync(b.keyFile, 'utf8') }), log),
      /private_key is not the key of the certificate/,
    );
    assert.ok(tokenProviderFor(box({ ...ms, private_key: fs.readFileSync(a.keyFile, 'utf8') }), log));
    assert.throws(
      () => tokenProviderFor(box({ auth: 'google', service_account_key: '{"type":"authorized_user"}' }), log),
      /not a service account key/,
    );
    assert.throws(() => tokenProviderFor(box({ auth: 'google', service_account_key: 'nope' }), log), /not JSON/);
  });

  it('runs the token command without a shell, with the mailbox in its environment; a failure names its exit and last line', async () => {
    const dir = tempDir();
    const script = path.join(dir, 'token.sh');
    fs.writeFileSync(
      script,
      '#!/bin/sh\nif [ "$1" = fail ]; then echo "first" >&2; echo "no token for $RUAWATCH_MAILBOX" >&2; exit 3; fi\necho "{\\"access_token\\":\\"for-$RUAWATCH_MAILBOX_USER\\",\\"expires_in\\":60}"\n',
      { mode: 0o755 },
    );
    const ok = tokenProviderFor(box({ auth: 'command', token_command: [script, '$(touch x)'] }), log)!;
    assert.equal((await ok.token()).value, 'for-dmarc@example.com');
    const bad = tokenProviderFor(box({ auth: 'command', token_command: [script, 'fail'] }), log)!;
    await assert.rejects(bad.token(), /mailbox m: the token command .*token\.sh exited with 3: no token for m$/);
    const missing = tokenProviderFor(box({ auth: 'command', token_command: [path.join(dir, 'nope')] }), log)!;
    await assert.rejects(missing.token(), /could not be run: spawn .*nope ENOENT/);
    assert.equal(fs.existsSync(path.join(process.cwd(), 'x')), false, 'no shell ran the arguments');
  });
});
