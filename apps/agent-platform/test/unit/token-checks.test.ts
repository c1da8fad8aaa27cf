// The bearer token's time and type checks: an `iat` in the future, a token older than the maximum age
// however distant its `exp`, a missing `iat`, and a `typ` other than the configured one are refused.
import { SignJWT, exportJWK, generateKeyPair, type JWK, type KeyLike } from 'jose';
import { beforeAll, describe, expect, it } from 'vitest';
import { authFromEnv, tokenChecksFromEnv } from '../../src/api.js';
import { createEphemeralIssuer } from '../../src/auth/dev-issuer.js';
import {
  AuthError,
  DEFAULT_MAX_TOKEN_AGE_SECONDS,
  createVerifier,
  type AuthOptions,
} from '../../src/auth/verify.js';
import { codeOf as codeOfType } from '../../../../test-support/refusal.js';

const issuer = 'https://idp.example';
const audience = 'agent-platform';
let key: KeyLike;
let jwks: { keys: JWK[] };

beforeAll(async () => {
  ({ privateKey: key } = await generateKeyPair('ES256', { extractable: true }));
  const { kty, crv, x, y } = await exportJWK(key);
  jwks = { keys: [{ kty, crv, x, y, kid: 'k1', alg: 'ES256', use: 'sig' }] };
});

const now = () => Math.floor(Date.now() / 1000);
const HOUR = 3600;

/** A token from the test key; `iat`/`exp` in seconds from now (`iat: null` leaves it out). */
function token(options: { iat?: number | null; exp?: number; typ?: string } = {}): Promise<string> {
  const jwt = new SignJWT({ workspace_id: 'ws-acme', roles: ['member'] })
    .setProtectedHeader({ alg: 'ES256', kid: 'k1', ...(options.typ ? { typ: options.typ } : {}) })
    .setSubject('alice')
    .setIssuer(issuer)
    .setAudience(audience)
    .setExpirationTime(now() + (options.exp ?? HOUR));
  if (options.iat !== null) jwt.setIssuedAt(now() + (options.iat ?? 0));
  return jwt.sign(key);
}

function verifier(options: Partial<AuthOptions> = {}) {
  return createVerifier({ jwks, issuer, audience, ...options });
}

const codeOf = (p: Promise<unknown>) => codeOfType(p, AuthError);

describe('token time checks', () => {
  it('accepts a fresh token, and an `iat` ahead by less than the clock tolerance', async () => {
    const verify = verifier();
    expect((await verify(await token())).context.userId).toBe('alice');
    expect((await verify(await token({ iat: 20 }))).context.userId).toBe('alice');
  });

  it('refuses an `iat` in the future beyond the clock tolerance (AUTH_INVALID)', async () => {
    expect(await codeOf(verifier()(await token({ iat: 120 })))).toBe('AUTH_INVALID');
    expect(await codeOf(verifier()(await token({ iat: 365 * 24 * HOUR, exp: 400 * 24 * HOUR })))).toBe(
      'AUTH_INVALID',
    );
    expect(await codeOf(verifier({ clockToleranceSeconds: 0 })(await token({ iat: 5 })))).toBe(
      'AUTH_INVALID',
    );
  });

  it('refuses a token older than the maximum age, even with `exp` a century away (AUTH_EXPIRED)', async () => {
    const century = 100 * 365 * 24 * HOUR;
    expect(await codeOf(verifier()(await token({ iat: -25 * HOUR, exp: century })))).toBe('AUTH_EXPIRED');
    expect(
      await codeOf(verifier({ maxTokenAgeSeconds: HOUR })(await token({ iat: -2 * HOUR, exp: 24 * HOUR }))),
    ).toBe('AUTH_EXPIRED');
    // Within the age, the same lifetimes pass: the age bounds how long a token is used, not how long
    // its issuer said it may be.
    expect(await codeOf(verifier()(await token({ iat: -HOUR, exp: century })))).toBeUndefined();
    expect(DEFAULT_MAX_TOKEN_AGE_SECONDS).toBe(24 * HOUR);
  });

  it('refuses a token without `iat` (AUTH_INVALID)', async () => {
    expect(await codeOf(verifier()(await token({ iat: null })))).toBe('AUTH_INVALID');
  });

  it('refuses an issuer or audience that would switch its check off', () => {
    for (const bad of ['', undefined, null])
      for (const name of ['issuer', 'audience'])
        expect(() => verifier({ [name]: bad as never }), `${name}=${String(bad)}`).toThrow(name);
  });

  it('refuses a maximum age that would switch the check off', () => {
    for (const bad of [0, -1, 1.5, Number.NaN])
      expect(() => verifier({ maxTokenAgeSeconds: bad })).toThrow(/maxTokenAgeSeconds/);
  });
});

describe('token type', () => {
  it('requires the configured `typ` (case and an application/ prefix aside)', async () => {
    const verify = verifier({ tokenType: 'at+jwt' });
    expect(await codeOf(verify(await token({ typ: 'at+jwt' })))).toBeUndefined();
    expect(await codeOf(verify(await token({ typ: 'application/AT+JWT' })))).toBeUndefined();
    expect(await codeOf(verify(await token({ typ: 'JWT' })))).toBe('AUTH_INVALID');
    expect(await codeOf(verify(await token({ typ: 'dpop+jwt' })))).toBe('AUTH_INVALID');
    expect(await codeOf(verify(await token()))).toBe('AUTH_INVALID');
  });

  it('takes any `typ`, or none, when none is configured', async () => {
    const verify = verifier();
    for (const typ of ['JWT', 'at+jwt', undefined])
      expect(await codeOf(verify(await token(typ ? { typ } : {})))).toBeUndefined();
  });

  it("the dev issuer's tokens carry `typ: JWT`", async () => {
    const dev = await createEphemeralIssuer();
    const verify = createVerifier({ ...dev, tokenType: 'JWT' });
    const minted = await dev.mint({
      user: 'alice',
      workspace: 'ws-acme',
      roles: ['member'],
      expiresIn: '8h',
    });
    expect((await verify(minted)).context.userId).toBe('alice');
  });
});

describe('configuration', () => {
  it('reads AUTH_MAX_TOKEN_AGE_SECONDS and AUTH_TOKEN_TYPE; empty means unset', () => {
    expect(tokenChecksFromEnv({})).toEqual({});
    expect(tokenChecksFromEnv({ AUTH_MAX_TOKEN_AGE_SECONDS: '', AUTH_TOKEN_TYPE: '' })).toEqual({});
    expect(tokenChecksFromEnv({ AUTH_MAX_TOKEN_AGE_SECONDS: '3600', AUTH_TOKEN_TYPE: 'at+jwt' })).toEqual({
      maxTokenAgeSeconds: 3600,
      tokenType: 'at+jwt',
    });
  });

  it('refuses values it would otherwise have to guess at', () => {
    for (const age of ['0', '-5', '1h', '1.5', ' 60', '99999999999'])
      expect(() => tokenChecksFromEnv({ AUTH_MAX_TOKEN_AGE_SECONDS: age })).toThrow(
        /AUTH_MAX_TOKEN_AGE_SECONDS/,
      );
    for (const typ of ['at jwt', '"JWT"', 'x'.repeat(65)])
      expect(() => tokenChecksFromEnv({ AUTH_TOKEN_TYPE: typ })).toThrow(/AUTH_TOKEN_TYPE/);
    for (const cache of ['0', '-1', '10m', '1.5', '1000000'])
      expect(() => tokenChecksFromEnv({ AUTH_JWKS_CACHE_SECONDS: cache })).toThrow(/AUTH_JWKS_CACHE_SECONDS/);
    expect(tokenChecksFromEnv({ AUTH_JWKS_CACHE_SECONDS: '60' })).toEqual({ jwksCacheSeconds: 60 });
  });

  it('passes them to the identity provider settings', async () => {
    expect(
      await authFromEnv({
        AUTH_JWKS_URL: 'https://idp.example/jwks',
        AUTH_ISSUER: issuer,
        AUTH_AUDIENCE: audience,
        AUTH_MAX_TOKEN_AGE_SECONDS: '7200',
        AUTH_TOKEN_TYPE: 'at+jwt',
      }),
    ).toEqual({
      jwks: 'https://idp.example/jwks',
      issuer,
      audience,
      maxTokenAgeSeconds: 7200,
      tokenType: 'at+jwt',
    });
  });

  it('in production, makes the token type a choice: an ID token would otherwise pass for an access token', async () => {
    const provider = {
      AUTH_JWKS_URL: 'https://idp.example/jwks',
      AUTH_ISSUER: issuer,
      AUTH_AUDIENCE: audience,
    };
    await expect(authFromEnv({ ...provider, NODE_ENV: 'production' })).rejects.toThrow(/AUTH_TOKEN_TYPE/);
    expect(
      await authFromEnv({ ...provider, NODE_ENV: 'production', AUTH_TOKEN_TYPE: 'at+jwt' }),
    ).toMatchObject({
      tokenType: 'at+jwt',
    });
    // `any` takes every token the provider signs for the audience, as an unset type did.
    const any = await authFromEnv({ ...provider, NODE_ENV: 'production', AUTH_TOKEN_TYPE: 'any' });
    expect(any).not.toHaveProperty('tokenType');
    // In any case, as the type itself is compared.
    expect(
      await authFromEnv({ ...provider, NODE_ENV: 'production', AUTH_TOKEN_TYPE: 'ANY' }),
    ).not.toHaveProperty('tokenType');
    expect(await authFromEnv(provider)).not.toHaveProperty('tokenType');
  });
});
