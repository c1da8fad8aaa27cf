import { createHmac, type KeyObject } from 'node:crypto';

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
