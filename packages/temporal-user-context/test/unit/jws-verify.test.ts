// The synchronous inner-signature check, held to jose's compactVerify by a differential property test.
import { createSecretKey, generateKeyPairSync, sign as edSign, type KeyObject } from 'node:crypto';
import fc from 'fast-check';
import { CompactSign, compactVerify } from 'jose';
import { describe, expect, it } from 'vitest';
import { ErrorCodes, UserContextError } from 'temporal-user-context';
import { verifyCompactEdDSA } from '../../src/crypto/jws-verify.js';

const signer = generateKeyPairSync('ed25519');
const other = generateKeyPairSync('ed25519');
const enc = new TextEncoder();
const claims = enc.encode(JSON.stringify({ sub: 'alice', ws: 'ws-acme', roles: ['member'] }));
const header = { alg: 'EdDSA', kid: 'sig-1', typ: 'tuc+jwt' };
const b64u = (bytes: Uint8Array | string) => Buffer.from(bytes).toString('base64url');

function sign(protectedHeader: Record<string, unknown>, payload = claims, key = signer.privateKey) {
  return new CompactSign(payload).setProtectedHeader(protectedHeader as { alg: string }).sign(key);
}

/** A validly signed JWS over exactly the segments given, however they are written. */
function signSegments(encodedHeader: string, encodedPayload: string): string {
  const signature = edSign(null, Buffer.from(`${encodedHeader}.${encodedPayload}`), signer.privateKey);
  return `${encodedHeader}.${encodedPayload}.${b64u(signature)}`;
}

function ours(jws: string, key: unknown = signer.publicKey): Uint8Array | string {
  try {
    return verifyCompactEdDSA(jws, () => key as KeyObject);
  } catch (err) {
    if (!(err instanceof UserContextError)) throw err;
    return err.code;
  }
}

async function jose(jws: string, key: KeyObject = signer.publicKey): Promise<Uint8Array | undefined> {
  try {
    return (await compactVerify(jws, key, { algorithms: ['EdDSA'] })).payload;
  } catch {
    return undefined;
  }
}

describe('verifyCompactEdDSA', () => {
  it('returns the signed payload of a genuine token, as jose does', async () => {
    const jws = await sign(header);
    expect(Buffer.from(ours(jws) as Uint8Array)).toEqual(Buffer.from(claims));
    expect(Buffer.from((await jose(jws))!)).toEqual(Buffer.from(claims));
  });

  it('refuses a signature by another key, and any key that is not an Ed25519 public key', async () => {
    const jws = await sign(header);
    expect(ours(jws, other.publicKey)).toBe(ErrorCodes.TOKEN_INVALID);
    for (const key of [
      generateKeyPairSync('x25519').publicKey,
      generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey,
      signer.privateKey,
      createSecretKey(Buffer.alloc(32)),
      null,
      0,
      { asymmetricKeyType: 'ed25519', type: 'public' },
    ]) {
      expect(ours(jws, key)).toBe(ErrorCodes.MISCONFIGURED);
    }
  });

  it('refuses an Ed25519 signature under any alg but EdDSA, whatever the key resolver says', () => {
    const claimsSegment = b64u(claims);
    for (const h of [
      { ...header, alg: 'none' },
      { ...header, alg: 'HS256' },
      { kid: 'sig-1', typ: 'tuc+jwt' },
      {},
    ]) {
      expect(ours(signSegments(b64u(JSON.stringify(h)), claimsSegment))).toBe(ErrorCodes.TOKEN_INVALID);
    }
  });

  it('refuses header parameters a context token never has (crit/b64, embedded keys, cty)', async () => {
    const unencoded = await sign({ ...header, b64: false, crit: ['b64'] }, enc.encode('{"sub":"mallory"}'));
    expect(ours(unencoded)).toBe(ErrorCodes.TOKEN_INVALID);
    const embedded = await sign({ ...header, jwk: other.publicKey.export({ format: 'jwk' }) });
    expect(ours(embedded)).toBe(ErrorCodes.TOKEN_INVALID);
    expect(ours(await sign({ ...header, cty: 'JWT' }))).toBe(ErrorCodes.TOKEN_INVALID);
    // A JSON `__proto__` key is an own property: refused like any other unknown parameter.
    expect(ours(signSegments(b64u('{"alg":"EdDSA","__proto__":{"x":1}}'), b64u(claims)))).toBe(
      ErrorCodes.TOKEN_INVALID,
    );
  });

  it('refuses validly signed segments that jose decodes but are not canonical base64url', async () => {
    const h = b64u(JSON.stringify(header));
    const p = b64u(claims);
    const plusPayload = Buffer.from([0xfb, 0xef, 0xbe]).toString('base64'); // "++++"
    const genuine = signSegments(h, p);
    const signature = genuine.slice(genuine.lastIndexOf('.') + 1);
    // The last of 86 characters carries 4 spare bits: this one decodes to the same 64 bytes.
    const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
    const spare = signature.slice(0, -1) + alphabet[alphabet.indexOf(signature.at(-1)!) ^ 1]!;
    expect(Buffer.from(spare, 'base64url')).toEqual(Buffer.from(signature, 'base64url'));
    for (const bad of [
      signSegments(`${h}=`, p),
      signSegments(h, `${p}=`),
      signSegments(h, plusPayload),
      signSegments(h, `${p.slice(0, 10)} ${p.slice(10)}`),
      `${h}.${p}.${spare}`,
    ]) {
      if (!bad.includes(' ')) expect(await jose(bad)).toBeDefined(); // jose decodes them
      expect(ours(bad)).toBe(ErrorCodes.TOKEN_INVALID);
    }
    for (const bad of [`${h}.${p}`, `${h}.${p}.${signature}.`, `.${p}.${signature}`, `${h}..${signature}`]) {
      expect(ours(bad)).toBe(ErrorCodes.TOKEN_INVALID);
    }
  });

  it('passes on what the key resolver throws; ignores a polluted Object.prototype', async () => {
    const jws = await sign(header);
    const refusal = new UserContextError(ErrorCodes.KEY_UNKNOWN, 'unknown signing key id');
    expect(() =>
      verifyCompactEdDSA(jws, () => {
        throw refusal;
      }),
    ).toThrow(refusal);
    const proto = Object.prototype as Record<string, unknown>;
    proto.polluted = 'yes';
    try {
      expect(Buffer.from(ours(jws) as Uint8Array)).toEqual(Buffer.from(claims));
    } finally {
      delete proto.polluted;
    }
  });

  it('property: whatever it accepts, jose accepts with the same payload; it refuses only with named errors', async () => {
    const genuine = await sign(header);
    const mutated = fc
      .tuple(
        fc.nat({ max: genuine.length - 1 }),
        fc.constantFrom('A', 'B', '.', '_', '-', '', '=', '+', 'eyJ', '\u00e9'),
        fc.nat({ max: 3 }),
      )
      .map(([at, insert, drop]) => genuine.slice(0, at) + insert + genuine.slice(at + drop));
    // Validly signed by the right key under headers with other, extra or missing parameters.
    const resigned = fc
      .dictionary(
        fc.constantFrom('alg', 'kid', 'typ', 'crit', 'b64', 'cty', 'x5u', '__proto__', 'zip'),
        fc.oneof(
          fc.constantFrom('EdDSA', 'none', 'HS256', 'ES256'),
          fc.string({ maxLength: 8 }),
          fc.boolean(),
          fc.constant(['b64']),
        ),
        { maxKeys: 3 },
      )
      .map((extra) => signSegments(b64u(JSON.stringify({ ...header, ...extra })), b64u(claims)));
    await fc.assert(
      fc.asyncProperty(fc.oneof(mutated, resigned, fc.string({ maxLength: 200 })), async (jws) => {
        const mine = ours(jws);
        const theirs = await jose(jws);
        if (typeof mine === 'string') {
          expect(mine).toBe(ErrorCodes.TOKEN_INVALID);
          return;
        }
        expect(theirs).toBeDefined();
        expect(Buffer.from(mine)).toEqual(Buffer.from(theirs!));
      }),
      { numRuns: 400 },
    );
  });
});
