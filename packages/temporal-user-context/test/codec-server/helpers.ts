import { SignJWT, exportJWK, generateKeyPair, type JSONWebKeySet, type KeyLike } from 'jose';
import { Auditor, memoryAuditSink } from '../../src/audit/index.js';
import { createCodecServer, type CodecServerOptions } from '../../src/codec-server/index.js';
import { makeCodec } from '../crypto/codec-helpers.js';

export const ISSUER = 'https://idp.test';
export const AUDIENCE = 'temporal-codec';
export const UI_ORIGIN = 'http://127.0.0.1:8233';

export interface Idp {
  jwks: JSONWebKeySet;
  sign(
    claims: Record<string, unknown>,
    opts?: { exp?: string; iss?: string; aud?: string; key?: KeyLike; iat?: number },
  ): Promise<string>;
  otherKey: KeyLike;
}

export async function makeIdp(): Promise<Idp> {
  const { privateKey, publicKey } = await generateKeyPair('ES256');
  const other = await generateKeyPair('ES256');
  const jwk = { ...(await exportJWK(publicKey)), kid: 'idp-1', alg: 'ES256', use: 'sig' };
  return {
    jwks: { keys: [jwk] },
    otherKey: other.privateKey,
    sign: (claims, opts = {}) =>
      new SignJWT(claims)
        .setProtectedHeader({ alg: 'ES256', kid: 'idp-1' })
        .setIssuer(opts.iss ?? ISSUER)
        .setAudience(opts.aud ?? AUDIENCE)
        .setIssuedAt(opts.iat)
        .setExpirationTime(opts.exp ?? '5m')
        .sign(opts.key ?? privateKey),
  };
}

export function makeServer(idp: Idp, over: Partial<CodecServerOptions> = {}) {
  const sink = memoryAuditSink();
  const codec = makeCodec();
  const app = createCodecServer({
    codec,
    namespace: 'default',
    allowedOrigin: UI_ORIGIN,
    jwt: { jwks: idp.jwks, issuer: ISSUER, audience: AUDIENCE },
    auditor: new Auditor([sink]),
    ...over,
  });
  return { app, sink, codec };
}

export const b64 = (s: string | Uint8Array): string => Buffer.from(s).toString('base64');
