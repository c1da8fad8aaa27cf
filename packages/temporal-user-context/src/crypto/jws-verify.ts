import { KeyObject, verify } from 'node:crypto';
import { decodeProtectedHeader, type ProtectedHeaderParameters } from 'jose';
import { ErrorCodes, UserContextError } from '../context/errors.js';
import { canonicalBase64url } from './canonical.js';

/** The only header parameters a context token carries; `crit`, `b64`, `jwk`, `jku`, ... are refused. */
const HEADER_PARAMETERS = new Set(['alg', 'kid', 'typ']);
/** Ed25519 signatures are 64 bytes (RFC 8032), 86 base64url characters. */
const SIGNATURE_CHARS = 86;

/**
 * Verifies the inner compact JWS of a context token, an `EdDSA` (Ed25519) signature, synchronously.
 *
 * Why not jose's `compactVerify`: jose's Node runtime verifies through the callback form of
 * `crypto.verify`, which queues the check on the libuv thread pool. On the 2-vCPU machines this
 * project targets, that hop cost more than the verification (cold open 1.9–2.4× the `node:crypto`
 * floor, and 45–90 µs more CPU per verification; bench/README.md). jose has no
 * synchronous form, so this function does the one step jose would do differently and nothing more:
 * - every segment must be canonical base64url (it re-encodes to itself: no padding, no other
 *   alphabet, no spare bits), which is stricter than jose (Node's decoder skips stray characters);
 * - the header is parsed by jose (`decodeProtectedHeader`), must say `alg: "EdDSA"` and hold only
 *   `alg`, `kid`, `typ` (so no `crit` or `b64` extension can change what is signed); `key` checks
 *   `kid` and `typ` and chooses the key;
 * - the signing input is the first two segments as written (RFC 7515 §5.2), checked with
 *   `crypto.verify(null, …)` on an Ed25519 public key (any other key is refused).
 * A differential property test holds it to jose: whatever this accepts, jose's `compactVerify`
 * accepts with the same payload (test/unit/jws-verify.test.ts).
 *
 * @param jws The compact JWS (`header.payload.signature`).
 * @param key Chooses the verification key from the parsed header; throws {@link UserContextError}
 *   to refuse the header.
 * @returns The verified payload bytes.
 * @throws {@link UserContextError} `USER_CONTEXT_TOKEN_INVALID` for anything malformed or unsigned,
 *   `USER_CONTEXT_MISCONFIGURED` when `key` gives something other than an Ed25519 public key, or what
 *   `key` throws.
 */
export function verifyCompactEdDSA(
  jws: string,
  key: (header: ProtectedHeaderParameters) => KeyObject,
): Uint8Array {
  const first = jws.indexOf('.');
  const second = jws.indexOf('.', first + 1);
  if (first < 1 || second < 0 || jws.indexOf('.', second + 1) !== -1) {
    throw invalid('inner token is not a compact JWS');
  }
  const encodedHeader = jws.slice(0, first);
  const encodedPayload = jws.slice(first + 1, second);
  const encodedSignature = jws.slice(second + 1);
  if (encodedSignature.length !== SIGNATURE_CHARS) throw invalid('inner token signature is not Ed25519');
  const payload = canonical(encodedPayload);
  const signature = canonical(encodedSignature);
  canonical(encodedHeader);
  let header: ProtectedHeaderParameters;
  try {
    header = decodeProtectedHeader(jws);
  } catch (err) {
    throw invalid('inner token header is not a JSON object', err);
  }
  for (const name of Object.keys(header)) {
    if (!HEADER_PARAMETERS.has(name)) throw invalid('inner token has an unexpected header parameter');
  }
  if (header.alg !== 'EdDSA') throw invalid('inner token is not signed with EdDSA');
  const publicKey = key(header);
  if (
    !(publicKey instanceof KeyObject) ||
    publicKey.type !== 'public' ||
    publicKey.asymmetricKeyType !== 'ed25519'
  ) {
    throw new UserContextError(ErrorCodes.MISCONFIGURED, 'signing key is not an Ed25519 public key');
  }
  let verified: boolean;
  try {
    // The segments are canonical base64url, so ASCII: latin1 gives the bytes jose would sign over.
    verified = verify(null, Buffer.from(jws.slice(0, second), 'latin1'), publicKey, signature);
  } catch (err) {
    throw invalid('signature does not verify', err);
  }
  if (!verified) throw invalid('signature does not verify');
  return payload;
}

const canonical = (segment: string): Buffer => canonicalBase64url(segment, 'inner token');

function invalid(reason: string, cause?: unknown): UserContextError {
  return new UserContextError(ErrorCodes.TOKEN_INVALID, reason, cause === undefined ? undefined : { cause });
}
