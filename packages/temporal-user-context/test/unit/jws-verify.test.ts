// The synchronous inner-signature check, held to jose's compactVerify by a differential property test.
import { generateKeyPairSync, type KeyObject } from 'node:crypto';
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

function sign(protectedHeader: Record<string, unknown>, payload = claims, key = signer.privateKey) {
  return new CompactSign(payload).setProtectedHeader(protectedHeader as { alg: string }).sign(key);
}

function ours(jws: string, key: KeyObject = signer.publicKey): Uint8Array | string {
  try {
    return verifyCompactEdDSA(jws, () => key);
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

  it('refuses a signature by another key, and a key that is not Ed25519', async () => {
    const jws = await sign(header);
    expect(ours(jws, other.publicKey)).toBe(ErrorCodes.TOKEN_INVALID);
    expect(ours(jws, generateKeyPairSync('x25519').publicKey)).toBe(ErrorCodes.MISCONFIGURED);
    expect(ours(jws, generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey)).toBe(
      ErrorCodes.MISCONFIGURED,
    );
  });

  it('refuses header parameters a context token never has (crit/b64, embedded keys, cty)', async () => {
    const unencoded = await sign({ ...header, b64: false, crit: ['b64'] }, enc.encode('{"sub":"mallory"}'));
    expect(ours(unencoded)).toBe(ErrorCodes.TOKEN_INVALID);
    const embedded = await sign({ ...header, jwk: other.publicKey.export({ format: 'jwk' }) });
    expect(ours(embedded)).toBe(ErrorCodes.TOKEN_INVALID);
    expect(ours(await sign({ ...header, cty: 'JWT' }))).toBe(ErrorCodes.TOKEN_INVALID);
  });

  it('refuses what is not strict compact base64url, even where Node would decode it', async () => {
    const jws = await sign(header);
    const [h, p, s] = jws.split('.') as [string, string, string];
    for (const bad of [
      `${h}.${p}`,
      `${h}.${p}.${s}.`,
      `.${p}.${s}`,
      `${h}=.${p}.${s}`,
      `${h}.${p}.${s.slice(0, -1)}`,
      `${h}.+${p.slice(1)}.${s}`,
      `${h}.${p}./${s.slice(1)}`,
      `${h}.${p}.${s.slice(0, 40)} ${s.slice(41)}`,
    ]) {
      expect(ours(bad)).toBe(ErrorCodes.TOKEN_INVALID);
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
    // Re-signed by the right key under a header with extra or changed parameters.
    const resigned = fc
      .dictionary(
        fc.constantFrom('alg', 'kid', 'typ', 'crit', 'b64', 'cty', 'x5u', '__proto__', 'zip'),
        fc.oneof(fc.string({ maxLength: 8 }), fc.boolean(), fc.constant(['b64'])),
        { maxKeys: 3 },
      )
      .map((extra) => ({ ...header, ...extra, alg: 'EdDSA' }));
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(
          mutated.map((jws) => Promise.resolve(jws)),
          resigned.map((h) => sign(h).catch(() => genuine)),
          fc.string({ maxLength: 200 }).map((jws) => Promise.resolve(jws)),
        ),
        async (candidate) => {
          const jws = await candidate;
          const mine = ours(jws);
          const theirs = await jose(jws);
          if (typeof mine === 'string') {
            expect(mine).toBe(ErrorCodes.TOKEN_INVALID);
            return;
          }
          expect(theirs).toBeDefined();
          expect(Buffer.from(mine)).toEqual(Buffer.from(theirs!));
        },
      ),
      { numRuns: 400 },
    );
  });
});
