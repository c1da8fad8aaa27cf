import { createCipheriv } from 'node:crypto';
import type { Payload } from '@temporalio/common';
import {
  ENCODING_ENCRYPTED_BYTES,
  FORMAT_V1_BYTES,
  IV_BYTES,
  META_ENCODING,
  META_FORMAT,
  META_KEY_ID,
  META_WORKFLOW_ID,
  TAG_BYTES,
} from './format.js';
import { viewBytes } from './bytes.js';
import { frameMetadata } from './inner.js';
import { nextIv } from './iv.js';
import type { LoadedKey } from './keys.js';

const EMPTY = new Uint8Array(0);
/**
 * Up to this size the data is copied into the frame and encrypted in one cipher call; above it, the
 * data goes to the cipher separately (a second call costs less than copying a large buffer).
 */
const INLINE_MAX = 16 * 1024;

/**
 * Encrypts one payload with AES-256-GCM: `data = iv(12) | ciphertext | tag(16)`, metadata in clear
 * names the encoding, key id, format and (when bound) the workflow id — all of them covered by `aad`.
 *
 * @param workflowIdBytes the bound workflow id, already UTF-8 (shared with the AAD), or undefined
 */
export function sealPayload(
  payload: Payload,
  key: LoadedKey,
  aad: Buffer,
  workflowIdBytes: Uint8Array | undefined,
): Payload {
  // Payload data may arrive as a plain array (e.g. the empty `binary/null` of a void workflow result)
  // or a typed array from another realm (the workflow sandbox): normalise before the cipher sees it.
  const data = asBytes(payload.data);
  const inline = data.byteLength <= INLINE_MAX;
  const header = frameMetadata(payload.metadata, inline ? data : undefined);
  const iv = nextIv();
  // GCM's default tag is 16 bytes (TAG_BYTES); skipping the options object saves its parse per payload.
  const cipher = createCipheriv('aes-256-gcm', key.key, iv);
  cipher.setAAD(aad);
  const c1 = cipher.update(header);
  const c2 = inline ? EMPTY : cipher.update(data);
  cipher.final(); // GCM is a stream mode: final() emits nothing, it computes the tag.
  const tag = cipher.getAuthTag();
  const total = IV_BYTES + c1.length + c2.length + TAG_BYTES;
  const metadata: Record<string, Uint8Array> = {
    [META_ENCODING]: ENCODING_ENCRYPTED_BYTES,
    [META_KEY_ID]: key.kidBytes,
    [META_FORMAT]: FORMAT_V1_BYTES,
  };
  if (workflowIdBytes) metadata[META_WORKFLOW_ID] = workflowIdBytes;
  return { metadata, data: Buffer.concat([iv, c1, c2, tag], total) };
}

function asBytes(data: Payload['data']): Uint8Array {
  if (data === undefined || data === null) return EMPTY;
  if (ArrayBuffer.isView(data)) return viewBytes(data);
  return Uint8Array.from(data as ArrayLike<number>);
}
