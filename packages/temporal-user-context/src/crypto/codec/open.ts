import { createDecipheriv } from 'node:crypto';
import type { Payload } from '@temporalio/common';
import { ErrorCodes, UserContextError } from '../../context/errors.js';
import { IV_BYTES, TAG_BYTES } from './format.js';
import { parseInner } from './inner.js';
import type { LoadedKey } from './keys.js';

/**
 * Decrypts the `data` of one v1 payload and returns the original payload. Throws
 * `USER_CONTEXT_PAYLOAD_TAMPERED` when the data is too short or fails GCM authentication — the same
 * code for a flipped bit, a wrong AAD (moved payload) or a key that does not match.
 */
export function openPayload(data: Uint8Array, key: LoadedKey, aad: Buffer): Payload {
  if (data.byteLength < IV_BYTES + TAG_BYTES) {
    throw new UserContextError(ErrorCodes.PAYLOAD_TAMPERED, 'ciphertext too short');
  }
  const end = data.byteLength - TAG_BYTES;
  let plain: Buffer;
  try {
    // No authTagLength option: the tag passed below is always the last TAG_BYTES (16) bytes, so a
    // truncated tag can never be accepted, and the option parse costs a measurable share at 1 KiB.
    const decipher = createDecipheriv('aes-256-gcm', key.key, data.subarray(0, IV_BYTES));
    decipher.setAuthTag(data.subarray(end));
    decipher.setAAD(aad);
    plain = decipher.update(data.subarray(IV_BYTES, end));
    // final() throws when the tag does not verify; nothing decrypted is used before it returns.
    decipher.final();
  } catch (err) {
    throw new UserContextError(ErrorCodes.PAYLOAD_TAMPERED, 'ciphertext failed authentication', {
      cause: err,
    });
  }
  return parseInner(plain);
}
