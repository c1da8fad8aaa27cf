import { ErrorCodes, UserContextError } from '../../context/errors.js';
import { bytesAt, viewBytes } from './bytes.js';

/**
 * The plaintext of a v1 payload is the original payload, framed without protobuf (a proto encode of
 * the metadata map costs more than the AES of a 1 KiB payload):
 * `u16 count | count × (u16 keyLen | key | u32 valueLen | value) | data`, integers big-endian.
 * The data takes the rest, so it is never copied into a frame: it goes to the cipher as is.
 *
 * Integers are read and written with plain byte arithmetic rather than Buffer's read/write methods:
 * those are shared across the whole process (jose, protobufjs, the SDK), so in a real worker their
 * inline caches are polymorphic and they cost twice what they cost in isolation.
 */
export function frameMetadata(
  metadata: Record<string, Uint8Array> | null | undefined,
  /** Data to append to the frame (small payloads: one cipher call beats saving one copy). */
  inlineData?: Uint8Array,
): Buffer {
  const keys = metadata ? Object.keys(metadata) : [];
  const count = keys.length;
  if (count > 0xffff)
    throw new UserContextError(ErrorCodes.TOO_LARGE, 'payload metadata has too many entries');
  const keyBytes = new Array<Uint8Array>(count);
  const values = new Array<Uint8Array>(count);
  let size = 2;
  for (let i = 0; i < count; i++) {
    const value: unknown = metadata![keys[i]!];
    if (!ArrayBuffer.isView(value)) {
      throw new UserContextError(ErrorCodes.INVALID, 'payload metadata values must be bytes');
    }
    values[i] = viewBytes(value);
    const bytes = utf8Key(keys[i]!);
    if (bytes.byteLength > 0xffff)
      throw new UserContextError(ErrorCodes.TOO_LARGE, 'payload metadata key too long');
    keyBytes[i] = bytes;
    size += 6 + bytes.byteLength + value.byteLength;
  }
  const out = Buffer.allocUnsafe(size + (inlineData?.byteLength ?? 0));
  out[0] = count >>> 8;
  out[1] = count & 0xff;
  let at = 2;
  for (let i = 0; i < count; i++) {
    const key = keyBytes[i]!;
    const value = values[i]!;
    const keyLen = key.byteLength;
    const valueLen = value.byteLength;
    out[at] = keyLen >>> 8;
    out[at + 1] = keyLen & 0xff;
    out.set(key, at + 2);
    at += 2 + keyLen;
    out[at] = valueLen >>> 24;
    out[at + 1] = (valueLen >>> 16) & 0xff;
    out[at + 2] = (valueLen >>> 8) & 0xff;
    out[at + 3] = valueLen & 0xff;
    out.set(value, at + 4);
    at += 4 + valueLen;
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
  const length = plain.length;
  if (length < 2) fail();
  const count = (plain[0]! << 8) | plain[1]!;
  let at = 2;
  // A plain literal stays a fast-mode object (Object.create(null) starts in slow dictionary mode);
  // `__proto__` is defined as an own property below, never assigned, so it cannot swap the prototype.
  const metadata: Record<string, Uint8Array> = {};
  for (let i = 0; i < count; i++) {
    if (at + 2 > length) fail();
    const keyLen = (plain[at]! << 8) | plain[at + 1]!;
    at += 2;
    if (at + keyLen + 4 > length) fail();
    const key = keyText(plain, at, keyLen);
    at += keyLen;
    // `* 2 ** 24` rather than `<< 24`: a length with the top bit set must stay positive (and fail).
    const valueLen =
      plain[at]! * 0x1000000 + ((plain[at + 1]! << 16) | (plain[at + 2]! << 8) | plain[at + 3]!);
    at += 4;
    if (at + valueLen > length) fail();
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

/**
 * Metadata keys are a handful of fixed names (`encoding`, `messageType`, ...): their bytes and their
 * decoded text are remembered, up to a bound, so that hostile or unusual keys cannot grow memory.
 */
const MAX_CACHED_KEYS = 64;
const MAX_CACHED_KEY_BYTES = 64;
const bytesByKey = new Map<string, Uint8Array>();
const cachedKeys: Array<{ bytes: Uint8Array; text: string }> = [];

function utf8Key(key: string): Uint8Array {
  const hit = bytesByKey.get(key);
  if (hit) return hit;
  const bytes = Buffer.from(key, 'utf8');
  if (bytesByKey.size < MAX_CACHED_KEYS && bytes.byteLength <= MAX_CACHED_KEY_BYTES) {
    bytesByKey.set(key, bytes);
  }
  return bytes;
}

function keyText(plain: Buffer, at: number, keyLen: number): string {
  for (const entry of cachedKeys) {
    if (entry.bytes.length === keyLen && bytesAt(entry.bytes, plain, at)) return entry.text;
  }
  const text = plain.toString('utf8', at, at + keyLen);
  // Cached only when the text encodes back to the same bytes: invalid UTF-8 decodes to U+FFFD, and
  // such a key is left to the slow path rather than stored under bytes it does not encode to.
  if (cachedKeys.length < MAX_CACHED_KEYS && keyLen <= MAX_CACHED_KEY_BYTES) {
    const bytes = Buffer.from(text, 'utf8');
    if (bytes.length === keyLen && bytesAt(bytes, plain, at)) {
      cachedKeys.push({ bytes, text });
    }
  }
  return text;
}

function fail(): never {
  throw new UserContextError(ErrorCodes.PAYLOAD_TAMPERED, 'malformed inner payload');
}
