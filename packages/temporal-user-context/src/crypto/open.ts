import { compactDecrypt, errors as joseErrors } from 'jose';
import { ErrorCodes, UserContextError } from '../context/errors.js';
import { assertCanonicalDirJwe } from './canonical.js';
import { KID_PATTERN } from './key-set.js';
import { claimsSchema, type ContextClaims } from './claims.js';
import type { KeyRing, SigningKey } from './keyring.js';
import { TOKEN_TYPE } from './issue.js';
import { verifyCompactEdDSA } from './jws-verify.js';
import { parseJsonUniqueKeys } from '../header/unique-keys.js';

const MAX_TOKEN_CHARS = 8192;
const decoder = new TextDecoder();

/**
 * Opens a sealed context token: decrypts (only `dir` + A256GCM, only a key id the ring holds), verifies
 * the Ed25519 signature (only `EdDSA`, only a known key id, `typ` must match) and validates the claims
 * strictly. Time and binding are checked by the caller against server-vouched facts (see worker/verifier.ts).
 * The claims returned are deeply frozen (the object and its `roles`).
 * Every failure is a {@link UserContextError}; nothing is fetched, whatever the key id says.
 */
export async function openContextToken(ring: KeyRing, token: string): Promise<ContextClaims> {
  if (typeof token !== 'string')
    throw new UserContextError(ErrorCodes.TOKEN_INVALID, 'token is not a string');
  if (token.length > MAX_TOKEN_CHARS) throw new UserContextError(ErrorCodes.TOO_LARGE, 'token over size cap');
  // Header checks and key choice happen in jose's key resolvers, on the header jose has already parsed
  // (decoding it a second time ourselves was measurable on the cold path). A resolver's
  // UserContextError passes through jose unchanged.
  // One token, one spelling: the verifier caches opened tokens by their text.
  assertCanonicalDirJwe(token, 'token');
  let jws: string;
  try {
    const { plaintext } = await compactDecrypt(
      token,
      (outer) => {
        // `cty` is authenticated: what the worker's guard seals with the same keys (operation tokens,
        // `operation-token.ts`) never opens as a context token, whatever its plaintext.
        if (
          outer.alg !== 'dir' ||
          outer.enc !== 'A256GCM' ||
          outer.zip !== undefined ||
          outer.cty !== 'JWT'
        ) {
          throw new UserContextError(
            ErrorCodes.TOKEN_INVALID,
            'token is not a context token sealed with dir/A256GCM',
          );
        }
        const sealKey = ring.sealing.get(knownKid(outer.kid));
        if (!sealKey) throw new UserContextError(ErrorCodes.KEY_UNKNOWN, 'unknown sealing key id');
        return sealKey.key;
      },
      { keyManagementAlgorithms: ['dir'], contentEncryptionAlgorithms: ['A256GCM'] },
    );
    jws = decoder.decode(plaintext);
  } catch (err) {
    throw joseFailure(err, 'token does not decrypt');
  }
  if (jws.length > MAX_TOKEN_CHARS)
    throw new UserContextError(ErrorCodes.TOO_LARGE, 'inner token over size cap');
  // The inner signature is checked synchronously (see jws-verify.ts for why not jose's compactVerify).
  let payload: Uint8Array;
  let signer: SigningKey | undefined;
  try {
    payload = verifyCompactEdDSA(jws, (inner) => {
      // verifyCompactEdDSA refuses any other alg too: checked here again so the two layers stay.
      if (inner.alg !== 'EdDSA' || inner.typ !== TOKEN_TYPE) {
        throw new UserContextError(ErrorCodes.TOKEN_INVALID, 'inner token is not an EdDSA context token');
      }
      const verifyKey = ring.signing.get(knownKid(inner.kid));
      if (!verifyKey) throw new UserContextError(ErrorCodes.KEY_UNKNOWN, 'unknown signing key id');
      signer = verifyKey;
      return verifyKey.publicKey;
    });
  } catch (err) {
    throw joseFailure(err, 'signature does not verify');
  }
  let raw: unknown;
  try {
    raw = parseJsonUniqueKeys(decoder.decode(payload));
  } catch {
    throw new UserContextError(ErrorCodes.TOKEN_INVALID, 'claims are not JSON (or repeat a key)');
  }
  const claims = claimsSchema.safeParse(raw);
  if (!claims.success) {
    throw new UserContextError(
      ErrorCodes.INVALID,
      `claims: ${claims.error.issues[0]?.path.join('.') || ''} ${claims.error.issues[0]?.message ?? ''}`.trim(),
    );
  }
  if (claims.data.iss !== ring.issuer)
    throw new UserContextError(ErrorCodes.TOKEN_INVALID, 'unexpected issuer');
  // A retired key verifies what it signed while it was in use, not what a copy of it signs later.
  if (signer?.notAfter !== undefined && claims.data.iat > signer.notAfter)
    throw new UserContextError(ErrorCodes.TOKEN_INVALID, 'token issued after its signing key was retired');
  // Workers cache opened claims and hand the same object to every later check of the token and to the
  // application's hooks (`isRevoked`): frozen, so no hook can change what the next check reads.
  Object.freeze(claims.data.roles);
  return Object.freeze(claims.data);
}

/** A key id is looked up only when it has the documented shape; anything else is unknown. */
export function knownKid(kid: unknown): string {
  if (typeof kid !== 'string' || !KID_PATTERN.test(kid))
    throw new UserContextError(ErrorCodes.KEY_UNKNOWN, 'malformed key id');
  return kid;
}

/** A jose failure as `USER_CONTEXT_TOKEN_INVALID` (a refusal thrown by a key resolver passes unchanged). */
export function joseFailure(err: unknown, reason: string): UserContextError {
  if (err instanceof UserContextError) return err;
  const detail = err instanceof joseErrors.JOSEError ? ` (${err.code})` : '';
  return new UserContextError(ErrorCodes.TOKEN_INVALID, `${reason}${detail}`, { cause: err });
}
