import { ErrorCodes, UserContextError } from '../context/errors.js';

/**
 * Decodes a base64url segment that must be exactly what an encoder writes for its bytes: no padding,
 * no spare bits, no stray characters. Node's decoder (and so jose's) is lenient, so without this one
 * token would have thousands of spellings that all open: distinct cache keys for one token, and
 * distinct strings an audit or a comparison would treat as different tokens.
 */
export function canonicalBase64url(segment: string, what: string): Buffer {
  const bytes = Buffer.from(segment, 'base64url');
  if (segment.length === 0 || bytes.toString('base64url') !== segment) {
    throw new UserContextError(ErrorCodes.TOKEN_INVALID, `${what} is not canonical base64url`);
  }
  return bytes;
}

/**
 * Refuses a compact `dir` JWE that is not spelled canonically: five segments, an empty encrypted key
 * (`dir` has none), and every other segment canonical base64url. Checked before decrypting.
 */
export function assertCanonicalDirJwe(token: string, what: string): void {
  const segments = token.split('.');
  if (segments.length !== 5 || segments[1] !== '') {
    throw new UserContextError(ErrorCodes.TOKEN_INVALID, `${what} is not a compact dir JWE`);
  }
  for (const i of [0, 2, 3, 4]) {
    if (!isCanonical(segments[i]!))
      throw new UserContextError(ErrorCodes.TOKEN_INVALID, `${what} is not canonical base64url`);
  }
}

const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
const BASE64URL = /^[A-Za-z0-9_-]+$/;

/**
 * What {@link canonicalBase64url} accepts, without decoding (this runs on every token the verifier has
 * not cached): only the alphabet, no length that no byte count gives, and a last character whose bits
 * past the data are zero.
 */
function isCanonical(segment: string): boolean {
  if (!BASE64URL.test(segment)) return false;
  const tail = segment.length % 4; // 2 characters carry 1 byte (4 spare bits), 3 carry 2 (2 spare bits)
  if (tail === 1) return false;
  if (tail === 0) return true;
  const last = ALPHABET.indexOf(segment[segment.length - 1]!);
  return (last & (tail === 2 ? 0b1111 : 0b11)) === 0;
}
