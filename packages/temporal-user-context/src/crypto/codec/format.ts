/**
 * Wire format of an encrypted payload (see docs/codec.md). Everything here is part of the stored
 * format: changing a value makes existing histories undecodable, so add a new version instead.
 */

/** `metadata.encoding` of an encrypted payload (the value Temporal's own samples use). */
export const ENCODING_ENCRYPTED = 'binary/encrypted';

/** Metadata keys written on every encrypted payload. */
export const META_ENCODING = 'encoding';
export const META_KEY_ID = 'encryption-key-id';
export const META_FORMAT = 'encryption-format';
/** Present only when the payload is bound to a workflow id (see binding.ts). */
export const META_WORKFLOW_ID = 'encryption-workflow-id';

/** Format version 1: AES-256-GCM, 12-byte IV, 16-byte tag, framed inner payload, AAD per aad.ts. */
export const FORMAT_V1 = 'tuc-aes256gcm-v1';

export const IV_BYTES = 12;
export const TAG_BYTES = 16;
export const KEY_BYTES = 32;

/** Key ids follow the key set rule (src/crypto/key-set.ts): short, printable, no path characters. */
export const KID_PATTERN = /^[A-Za-z0-9._-]{1,64}$/;
export const MAX_KID_BYTES = 64;

/**
 * Workflow ids above this many bytes are refused on decode before any work: Temporal's default id
 * limit is 1000 characters, so 4 KiB of UTF-8 covers every legitimate id.
 */
export const MAX_WORKFLOW_ID_BYTES = 4096;

/**
 * Constant metadata values, encoded once: the hot path never re-encodes them. Buffers, like every
 * other byte array the codec compares, so that the comparison loop stays monomorphic.
 */
export const ENCODING_ENCRYPTED_BYTES: Uint8Array = Buffer.from(ENCODING_ENCRYPTED, 'utf8');
export const FORMAT_V1_BYTES: Uint8Array = Buffer.from(FORMAT_V1, 'utf8');
