// Deep import of the one hash the sandbox needs: `@noble/hashes` is pure JavaScript (the workflow
// sandbox has no `node:crypto` and no synchronous WebCrypto), and `sha2` pulls in nothing else.
import { sha256 } from '@noble/hashes/sha2';
import { base64url, encodeArgs } from '../header/args-encoding.js';

const encoder = new TextEncoder();

/**
 * The digest of a workflow's arguments as the sandbox received them: the same value the host's
 * `argsDigest` gives (SHA-256 of `encodeArgs`, base64url; a unit test holds the two equal). Pure and
 * synchronous: it runs in the root's `execute` interceptor, before `next`.
 */
export function sandboxArgsDigest(values: readonly unknown[]): string {
  return base64url(sha256(encoder.encode(encodeArgs(values))));
}
