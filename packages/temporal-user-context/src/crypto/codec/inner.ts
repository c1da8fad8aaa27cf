import { ErrorCodes, UserContextError } from '../../context/errors.js';

/**
 * The plaintext of a v1 payload is the original payload, framed without protobuf (a proto encode of
 * the metadata map costs more than the AES of a 1 KiB payload):
 * `u16 count | count × (u16 keyLen | key | u32 valueLen | value) | data`.
 * The data takes the rest, so it is never copied into a frame: it goes to the cipher as is.
 */
export function frameMetadata(
  metadata: Record<string, Uint8Array> | null | undefined,
  /** Data to append to the frame (small payloads: one cipher call beats saving one copy). */
  inlineData?: Uint8Array,
): Buffer {
  const keys = metadata ? Object.keys(metadata) : [];
  if (keys.length > 0xffff)
    throw new UserContextError(ErrorCodes.TOO_LARGE, 'payload metadata has too many entries');
  let size = 2;
  for (const key of keys) {
    const value = metadata![key];
    if (!ArrayBuffer.isView(value)) {
      throw new UserContextError(ErrorCodes.INVALID, 'payload metadata values must be bytes');
    }
    const keyLen = Buffer.byteLength(key, 'utf8');
    if (keyLen > 0xffff) throw new UserContextError(ErrorCodes.TOO_LARGE, 'payload metadata key too long');
    size += 2 + keyLen + 4 + value.byteLength;
  }
  const out = Buffer.allocUnsafe(size + (inlineData?.byteLength ?? 0));
  let at = out.writeUInt16BE(keys.length, 0);
  for (const key of keys) {
    const value = metadata![key]!;
    const keyLen = out.write(key, at + 2, 'utf8');
    out.writeUInt16BE(keyLen, at);
    at += 2 + keyLen;
    at = out.writeUInt32BE(value.byteLength, at);
    out.set(value, at);
    at += value.byteLength;
  }
  if (inlineData) out.set(inlineData, at);
  return out;
}

/** The original payload, parsed from authenticated plaintext. Views into `plain`, no copies. */
export interface InnerPayload {
  metadata: Record<string, Uint8Array>;
  data: Uint8Array;
}

/**
 * Parses a frame written by {@link frameMetadata}. The input has passed GCM authentication, so a bad
 * frame means a buggy or hostile key holder; it is refused all the same.
 */
export function parseInner(plain: Buffer): InnerPayload {
  if (plain.length < 2) fail();
  const count = plain.readUInt16BE(0);
  let at = 2;
  // A plain literal stays a fast-mode object (Object.create(null) starts in slow dictionary mode);
  // `__proto__` is defined as an own property below, never assigned, so it cannot swap the prototype.
  const metadata: Record<string, Uint8Array> = {};
  for (let i = 0; i < count; i++) {
    if (at + 2 > plain.length) fail();
    const keyLen = plain.readUInt16BE(at);
    at += 2;
    if (at + keyLen + 4 > plain.length) fail();
    const key = plain.toString('utf8', at, at + keyLen);
    at += keyLen;
    const valueLen = plain.readUInt32BE(at);
    at += 4;
    if (at + valueLen > plain.length) fail();
    if (Object.prototype.hasOwnProperty.call(metadata, key)) fail();
    const value = plain.subarray(at, at + valueLen);
    if (key === '__proto__') {
      Object.defineProperty(metadata, key, { value, enumerable: true, writable: true, configurable: true });
    } else {
      metadata[key] = value;
    }
    at += valueLen;
  }
  return { metadata, data: plain.subarray(at) };
}

function fail(): never {
  throw new UserContextError(ErrorCodes.PAYLOAD_TAMPERED, 'malformed inner payload');
}
