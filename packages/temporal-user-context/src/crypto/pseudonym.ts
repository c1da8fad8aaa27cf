import { createHmac, createSecretKey, type KeyObject } from 'node:crypto';
import { ErrorCodes, UserContextError } from '../context/errors.js';
import { parseUserContext } from '../context/schema.js';
import { keySetSchema, pseudonymKeyFileSchema } from './key-set.js';
import type { KeyRing } from './keyring.js';

/**
 * Keyed pseudonym of an id: readers of history can compare two of them but cannot recover the id or
 * test a guess without the key. 16 bytes of HMAC-SHA256, base64url (22 characters).
 */
export function pseudonym(key: KeyObject, kind: 'ws' | 'sub', id: string): string {
  return createHmac('sha256', key)
    .update(`${kind}\u0000${id}`)
    .digest()
    .subarray(0, 16)
    .toString('base64url');
}

/**
 * The pseudonyms under which a user and workspace appear in headers and in `pseudonym` mirrors: what
 * an operator searches for (`UserId = "…"` in a list filter) or compares with a memo. Takes a key ring,
 * or just the pseudonym key (`pseudonymKeyFromJSON` of a lookup file). Throws `USER_CONTEXT_INVALID`
 * for an id outside the documented format, which no context can carry.
 */
export function pseudonymsOf(
  key: KeyRing | KeyObject,
  ids: { userId: string; workspaceId: string },
): { userId: string; workspaceId: string } {
  const k = 'pseudonymKey' in key ? key.pseudonymKey : key;
  // `ids` not an object (a JavaScript caller's null) is refused by the parse, not with a TypeError.
  const given = (typeof ids === 'object' && ids !== null ? ids : {}) as Partial<typeof ids>;
  const valid = parseUserContext({ userId: given.userId, workspaceId: given.workspaceId, roles: [] });
  return {
    userId: pseudonym(k, 'sub', valid.userId),
    workspaceId: pseudonym(k, 'ws', valid.workspaceId),
  };
}

/**
 * The pseudonym key of a lookup file (`keys export-pseudonym`) or of a whole key set. Throws
 * `USER_CONTEXT_MISCONFIGURED` for anything else.
 */
export function pseudonymKeyFromJSON(document: unknown): KeyObject {
  const parsed = pseudonymKeyFileSchema.safeParse(document);
  const k = parsed.success ? parsed.data.pseudonym.k : keySetSchema.safeParse(document).data?.pseudonym.k;
  if (k === undefined) {
    throw new UserContextError(ErrorCodes.MISCONFIGURED, 'not a key set or a pseudonym lookup file');
  }
  return createSecretKey(Buffer.from(k, 'base64url'));
}
