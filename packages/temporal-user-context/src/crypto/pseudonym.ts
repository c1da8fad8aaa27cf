import { createHmac, type KeyObject } from 'node:crypto';
import { parseUserContext } from '../context/schema.js';
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
 * an operator searches for (`UserId = "…"` in a list filter) or compares with a memo. Needs a ring
 * holding the key set's pseudonym key (edge or worker file). Throws `USER_CONTEXT_INVALID` for an id
 * outside the documented format, which no context can carry.
 */
export function pseudonymsOf(
  ring: KeyRing,
  ids: { userId: string; workspaceId: string },
): { userId: string; workspaceId: string } {
  const valid = parseUserContext({ userId: ids.userId, workspaceId: ids.workspaceId, roles: [] });
  return {
    userId: pseudonym(ring.pseudonymKey, 'sub', valid.userId),
    workspaceId: pseudonym(ring.pseudonymKey, 'ws', valid.workspaceId),
  };
}
