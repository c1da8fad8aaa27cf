import type { AuditEvent } from './event.js';

const MAX_FIELD = 256;
// C0/C1 controls (CR, LF, ...), zero-width and bidi formatting characters, and the line and paragraph
// separators U+2028/U+2029, which JavaScript and many log viewers treat as line breaks.
const UNSAFE = /[\p{Cc}\p{Cf}\p{Zl}\p{Zp}]/gu;
const PRINTABLE_ASCII = /^[\x20-\x7e]*$/;

/**
 * Makes an attacker-influenced string safe for a log line: control, zero-width, bidi and
 * line/paragraph separator characters are replaced by U+FFFD and the length is capped. JSON structure
 * is left to the JSON encoder, which escapes quotes, so a value can never close its field.
 */
export function sanitizeField(value: string): string {
  // Fast path for the common case (ids, codes, times): printable ASCII holds no Cc/Cf character.
  if (value.length <= MAX_FIELD && PRINTABLE_ASCII.test(value)) return value;
  const cleaned = value.replace(UNSAFE, '\uFFFD');
  return cleaned.length > MAX_FIELD ? `${cleaned.slice(0, MAX_FIELD)}…` : cleaned;
}

/**
 * A short, sanitised description of a thrown value, for failure reports. Total: it never throws and
 * never calls the value's own `toString` / `Symbol.toPrimitive` (a hostile or null-prototype object
 * would throw from there, or run code), only reads an `Error`'s `message` when it is a string.
 */
export function describeThrown(value: unknown): string {
  try {
    if (typeof value === 'string') return sanitizeField(value);
    if (value instanceof Error) {
      const message: unknown = value.message;
      return sanitizeField(typeof message === 'string' ? message : Object.prototype.toString.call(value));
    }
    if (value === null || (typeof value !== 'object' && typeof value !== 'function')) {
      // Primitives: String() is defined for all of them (symbols included) and runs no user code.
      return sanitizeField(String(value));
    }
    return sanitizeField(Object.prototype.toString.call(value));
  } catch {
    // A revoked Proxy, or a getter (`message`, `Symbol.toStringTag`) that throws.
    return 'unprintable value';
  }
}

/**
 * Returns a copy of `event` with every string field sanitised and `undefined` fields left out; `time`
 * fills in the event's time when it has none.
 */
export function sanitizeAuditEvent(
  event: Omit<AuditEvent, 'time'> & { time?: string },
  time?: string,
): AuditEvent {
  // Built by adding keys to a fresh object: on Node 20 a spread followed by new keys (`{ ...event,
  // time }`) costs microseconds per key, and this runs on every activity.
  const out: Record<string, unknown> = { time: event.time ?? time };
  for (const key in event) {
    const value = (event as Record<string, unknown>)[key];
    if (value === undefined || key === 'time') continue;
    out[key] = typeof value === 'string' ? sanitizeField(value) : value;
  }
  out.time = typeof out.time === 'string' ? sanitizeField(out.time) : out.time;
  return out as unknown as AuditEvent;
}
