import { verify, type KeyObject } from 'node:crypto';
import { decodeProtectedHeader, type ProtectedHeaderParameters } from 'jose';
import { ErrorCodes, UserContextError } from '../context/errors.js';

/** One base64url segment as jose writes it: no padding, no other alphabet. */
const SEGMENT = /^[A-Za-z0-9_-]+$/;
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
 * floor, 60–120 µs more CPU per open with the thread wake-ups; docs/operations.md). jose has no
 * synchronous form, so this function does the one step jose would do differently and nothing more:
 * - the header is parsed by jose (`decodeProtectedHeader`), then must hold only `alg`, `kid`, `typ`
 *   (so no `crit` or `b64` extension can change what is signed), and `key` checks their values;
 * - the signing input is the first two segments as written (RFC 7515 §5.2), checked with
 *   `crypto.verify(null, …)` on an Ed25519 key (refused for any other key type);
 * - segments must be strict base64url, which is stricter than jose (Node's decoder skips stray
 *   characters).
 * A differential property test holds it to jose: whatever this accepts, jose's `compactVerify`
 * accepts with the same payload (test/unit/jws-verify.test.ts).
 *
 * @param jws The compact JWS (`header.payload.signature`).
 * @param key Chooses the verification key from the parsed header; throws {@link UserContextError}
 *   to refuse the header.
 * @returns The verified payload bytes.
 * @throws {@link UserContextError} `USER_CONTEXT_TOKEN_INVALID` for anything malformed or unsigned.
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
  if (
    !SEGMENT.test(encodedHeader) ||
    !SEGMENT.test(encodedPayload) ||
    encodedSignature.length !== SIGNATURE_CHARS ||
    !SEGMENT.test(encodedSignature)
  ) {
    throw invalid('inner token is not strict base64url');
  }
  let header: ProtectedHeaderParameters;
  try {
    header = decodeProtectedHeader(jws);
  } catch (err) {
    throw invalid('inner token header is not a JSON object', err);
  }
  for (const name in header) {
    if (!HEADER_PARAMETERS.has(name)) throw invalid('inner token has an unexpected header parameter');
  }
  const publicKey = key(header);
  if (publicKey.asymmetricKeyType !== 'ed25519') {
    throw new UserContextError(ErrorCodes.MISCONFIGURED, 'signing key is not an Ed25519 public key');
  }
  const signingInput = Buffer.from(jws.slice(0, second), 'latin1');
  if (!verify(null, signingInput, publicKey, Buffer.from(encodedSignature, 'base64url'))) {
    throw invalid('signature does not verify');
  }
  return Buffer.from(encodedPayload, 'base64url');
}

function invalid(reason: string, cause?: unknown): UserContextError {
  return new UserContextError(ErrorCodes.TOKEN_INVALID, reason, cause === undefined ? undefined : { cause });
}
