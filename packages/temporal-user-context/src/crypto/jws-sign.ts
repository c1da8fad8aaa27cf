import { sign, type KeyObject } from 'node:crypto';
import { ErrorCodes, UserContextError } from '../context/errors.js';

/**
 * Signs `claims` as a compact JWS with an Ed25519 key (`alg: EdDSA`), synchronously: the inner token
 * of a context, with the protected header `{ alg: 'EdDSA', kid, typ }`.
 *
 * Why not jose's `SignJWT`: jose's Node runtime signs through the callback form of `crypto.sign`, which
 * queues the signature on the libuv thread pool; at every start the edge paid that hop (~70–100 µs of
 * latency for a ~40 µs signature on the 2-vCPU machines this project targets), as workers did for
 * verification before `verifyCompactEdDSA`. This does what `SignJWT` does for these inputs, byte for
 * byte: the header and the claims serialised with `JSON.stringify` in their insertion order, each
 * base64url-encoded, and the signature over `header.payload` (RFC 7515 §5.1). Ed25519 signatures are
 * deterministic (RFC 8032), so a differential property test compares the output with jose's, whole
 * (test/unit/jws-sign.test.ts).
 *
 * @param claims The JWT claims; serialised as given (no claim is added or checked here).
 * @param header The key id and token type of the protected header.
 * @param privateKey An Ed25519 private key.
 * @returns The compact JWS.
 * @throws {@link UserContextError} `USER_CONTEXT_MISCONFIGURED` for a key that is not an Ed25519 private
 *   key (jose refused those too).
 */
export function signCompactEdDSA(
  claims: Readonly<Record<string, unknown>>,
  header: { kid: string; typ: string },
  privateKey: KeyObject,
): string {
  // node signs with whatever key it is given (`null` digest): under `alg: EdDSA`, only Ed25519 may.
  if (privateKey.type !== 'private' || privateKey.asymmetricKeyType !== 'ed25519')
    throw new UserContextError(ErrorCodes.MISCONFIGURED, 'the signing key is not an Ed25519 private key');
  const protectedHeader = { alg: 'EdDSA', kid: header.kid, typ: header.typ };
  const input = `${base64url(JSON.stringify(protectedHeader))}.${base64url(JSON.stringify(claims))}`;
  return `${input}.${sign(null, Buffer.from(input), privateKey).toString('base64url')}`;
}

const base64url = (text: string): string => Buffer.from(text).toString('base64url');
