// The synchronous inner-token signature, held to jose's SignJWT: Ed25519 signatures are deterministic,
// so the two compact JWSs must be the same string for every input.
import { generateKeyPairSync } from 'node:crypto';
import fc from 'fast-check';
import { SignJWT, jwtVerify } from 'jose';
import { describe, expect, it } from 'vitest';
import { ErrorCodes } from 'temporal-user-context';
import { signCompactEdDSA } from '../../src/crypto/jws-sign.js';

const { privateKey, publicKey } = generateKeyPairSync('ed25519');
const other = generateKeyPairSync('ed25519');

/** Strings of any UTF-16 code units (fast-check's own units never give a lone surrogate). */
const text = (constraints: { minLength?: number; maxLength?: number } = {}) =>
  fc.string({ unit: fc.integer({ min: 0, max: 0xffff }).map((c) => String.fromCharCode(c)), ...constraints });

const jose = (claims: Record<string, unknown>, kid: string, typ: string, key = privateKey) =>
  new SignJWT({ ...claims }).setProtectedHeader({ alg: 'EdDSA', kid, typ }).sign(key);

describe('signCompactEdDSA', () => {
  it("is jose's SignJWT, byte for byte, for a context token's claims", async () => {
    const claims = {
      iss: 'acme',
      aud: 'default',
      sub: 'auth0|alice',
      ws: 'ws-acme',
      roles: ['member', 'admin'],
      use: 'start',
      wf: 'order-42',
      wsh: 'AAAAAAAAAAAAAAAAAAAAAA',
      subh: 'BBBBBBBBBBBBBBBBBBBBBB',
      iat: 1_795_818_602,
      exp: 1_795_818_662,
      jti: '0b5e1c52-6f0a-4c1e-9d63-1f2b7a9c3e10',
    };
    const ours = signCompactEdDSA(claims, { kid: 'sig-1', typ: 'tuc+jwt' }, privateKey);
    expect(ours).toBe(await jose(claims, 'sig-1', 'tuc+jwt'));
    const { payload, protectedHeader } = await jwtVerify(ours, publicKey, {
      algorithms: ['EdDSA'],
      currentDate: new Date(claims.iat * 1000),
    });
    expect(payload).toEqual(claims);
    expect(protectedHeader).toEqual({ alg: 'EdDSA', kid: 'sig-1', typ: 'tuc+jwt' });
  });

  it("is jose's SignJWT, byte for byte, for any JSON claims and header values", async () => {
    await fc.assert(
      fc.asyncProperty(
        // Any UTF-16 text, lone surrogates included, in keys, values and the header.
        fc.dictionary(text(), fc.oneof(fc.jsonValue(), text(), fc.array(text())), { maxKeys: 12 }),
        text({ minLength: 1, maxLength: 40 }),
        text({ minLength: 1, maxLength: 40 }),
        async (claims, kid, typ) => {
          expect(signCompactEdDSA(claims, { kid, typ }, privateKey)).toBe(await jose(claims, kid, typ));
        },
      ),
      { numRuns: 300 },
    );
  });

  it('refuses a key that is not an Ed25519 private key (USER_CONTEXT_MISCONFIGURED), as jose did', () => {
    const keys = [
      generateKeyPairSync('ed448').privateKey,
      generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey,
      generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey,
      publicKey,
    ];
    for (const key of keys)
      expect(
        () => signCompactEdDSA({ sub: 'alice' }, { kid: 'k', typ: 't' }, key),
        key.asymmetricKeyType,
      ).toThrow(expect.objectContaining({ code: ErrorCodes.MISCONFIGURED }));
  });

  it('signs with the key given: another key gives another signature, which the first public key refuses', async () => {
    const claims = { sub: 'alice' };
    const mine = signCompactEdDSA(claims, { kid: 'k', typ: 't' }, privateKey);
    const theirs = signCompactEdDSA(claims, { kid: 'k', typ: 't' }, other.privateKey);
    expect(theirs.split('.').slice(0, 2)).toEqual(mine.split('.').slice(0, 2));
    expect(theirs).not.toBe(mine);
    await expect(jwtVerify(theirs, publicKey, { algorithms: ['EdDSA'] })).rejects.toMatchObject({
      code: 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED',
    });
  });
});
