// The production authentication path: bearer tokens checked against an identity provider's JWKS
// fetched over HTTP (AUTH_JWKS_URL), here served by a real HTTP server on loopback.
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { SignJWT, exportJWK, generateKeyPair, type JWK, type KeyLike } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { toProblem } from '../../src/api/problems.js';
import { AuthError, createVerifier, jwksUrl } from '../../src/auth/verify.js';
import { codeOf as codeOfType } from '../../../../test-support/refusal.js';

const issuer = 'https://idp.example';
const audience = 'agent-platform';
let server: Server;
let url: string;
let served: { keys: JWK[] } = { keys: [] };
let up = true;
let fetches = 0;
let key: KeyLike;
let stranger: KeyLike;

beforeAll(async () => {
  ({ privateKey: key } = await generateKeyPair('ES256', { extractable: true }));
  ({ privateKey: stranger } = await generateKeyPair('ES256', { extractable: true }));
  const { kty, crv, x, y } = await exportJWK(key);
  served = { keys: [{ kty, crv, x, y, kid: 'k1', alg: 'ES256', use: 'sig' }] };
  server = createServer((_req, res) => {
    fetches++;
    if (!up) {
      res.writeHead(503).end();
      return;
    }
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(served));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/.well-known/jwks.json`;
});

afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

function token(
  signWith: KeyLike,
  claims: Record<string, unknown> = {},
  options: { kid?: string; exp?: string; iss?: string } = {},
): Promise<string> {
  return new SignJWT({ workspace_id: 'ws-acme', roles: ['member'], ...claims })
    .setProtectedHeader({ alg: 'ES256', kid: options.kid ?? 'k1' })
    .setSubject('alice')
    .setIssuer(options.iss ?? issuer)
    .setAudience(audience)
    .setIssuedAt()
    .setExpirationTime(options.exp ?? '5m')
    .sign(signWith);
}

const codeOf = (p: Promise<unknown>) => codeOfType(p, AuthError);

describe('bearer tokens against a remote JWKS', () => {
  it('accepts a token signed with a served key and maps its claims', async () => {
    const verify = createVerifier({ jwks: url, issuer, audience });
    const before = Math.floor(Date.now() / 1000);
    const identity = await verify(await token(key));
    expect(identity.context).toEqual({ userId: 'alice', workspaceId: 'ws-acme', roles: ['member'] });
    // The token's own `iat`, which the grant check compares with the membership's roles.
    expect(identity.issuedAt).toBeGreaterThanOrEqual(before);
    expect(identity.issuedAt).toBeLessThanOrEqual(Math.ceil(Date.now() / 1000));
    expect(fetches).toBeGreaterThan(0);
  });

  it('refuses a key the provider does not serve, another issuer, an expired token and bad claims', async () => {
    const verify = createVerifier({ jwks: url, issuer, audience, clockToleranceSeconds: 0 });
    expect(await codeOf(verify(await token(stranger)))).toBe('AUTH_INVALID');
    expect(await codeOf(verify(await token(stranger, {}, { kid: 'other' })))).toBe('AUTH_INVALID');
    expect(await codeOf(verify(await token(key, {}, { iss: 'https://evil.example' })))).toBe('AUTH_INVALID');
    expect(await codeOf(verify(await token(key, {}, { exp: '-1m' })))).toBe('AUTH_EXPIRED');
    expect(await codeOf(verify(await token(key, { workspace_id: 'ws\u202eacme' })))).toBe('AUTH_INVALID');
  });

  it('fails closed while the provider is down (503, not "bad token"), and the same verifier recovers', async () => {
    // A fresh verifier has no cached key set: nothing to check the token against.
    const verify = createVerifier({ jwks: url, issuer, audience });
    up = false;
    try {
      expect(await codeOf(verify(await token(key)))).toBe('AUTH_UNAVAILABLE');
      expect(toProblem(new AuthError('AUTH_UNAVAILABLE', 'x'))).toMatchObject({ status: 503 });
    } finally {
      up = true;
    }
    expect((await verify(await token(key))).context.userId).toBe('alice');
    // Nothing listening at all is the same answer; a bad token stays AUTH_INVALID while the set is up.
    const closed = createVerifier({ jwks: 'http://127.0.0.1:1/jwks', issuer, audience });
    expect(await codeOf(closed(await token(key)))).toBe('AUTH_UNAVAILABLE');
    expect(await codeOf(verify('not.a.token'))).toBe('AUTH_INVALID');
  });

  // Found by review: a key the provider withdrew kept verifying for jose's ten minutes, with no setting.
  it('stops taking a withdrawn key once its cache of the key set ends (jwksCacheSeconds)', async () => {
    const verify = createVerifier({ jwks: url, issuer, audience, jwksCacheSeconds: 1 });
    const signed = await token(key);
    expect((await verify(signed)).context.userId).toBe('alice');
    const kept = served;
    served = { keys: [] };
    try {
      // Within the cache, the key set it fetched still answers.
      expect((await verify(signed)).context.userId).toBe('alice');
      await new Promise((r) => setTimeout(r, 1100));
      expect(await codeOf(verify(signed))).toBe('AUTH_INVALID');
    } finally {
      served = kept;
    }
    expect(() => createVerifier({ jwks: url, issuer, audience, jwksCacheSeconds: 0 })).toThrow(
      /jwksCacheSeconds/,
    );
    expect(() => createVerifier({ jwks: url, issuer, audience, jwksCacheSeconds: 0.5 })).toThrow(
      /jwksCacheSeconds/,
    );
  });

  it('takes the key set only over https, or plain http on loopback', () => {
    expect(jwksUrl('https://idp.example/jwks').href).toBe('https://idp.example/jwks');
    expect(jwksUrl('http://127.0.0.1:8080/jwks').hostname).toBe('127.0.0.1');
    expect(jwksUrl('http://localhost/jwks').hostname).toBe('localhost');
    expect(jwksUrl('http://[::1]/jwks').hostname).toBe('[::1]');
    expect(jwksUrl('http://127.0.0.2/jwks').hostname).toBe('127.0.0.2');
    expect(jwksUrl('http://[::ffff:127.0.0.1]/jwks').hostname).toBe('[::ffff:7f00:1]');
    for (const bad of [
      'http://10.0.0.1/jwks',
      'http://[::ffff:10.0.0.1]/jwks',
      'http://127.0.0.1@idp.example/jwks',
      'http://idp.example/jwks',
      'http://127.0.0.1.evil.example/jwks',
      'file:///etc/jwks',
      'jwks',
    ])
      expect(() => createVerifier({ jwks: bad, issuer, audience })).toThrow(/AUTH_JWKS_URL/);
  });
});
