import type { AuditEvent } from './event.js';

const MAX_FIELD = 256;
// C0/C1 controls (CR, LF, ...), zero-width and bidi formatting characters.
const UNSAFE = /[\p{Cc}\p{Cf}]/gu;
const PRINTABLE_ASCII = /^[\x20-\x7e]*$/;

/**
 * Makes an attacker-influenced string safe for a log line: control, zero-width and bidi characters
 * are replaced by U+FFFD and the length is capped. JSON structure is left to the JSON encoder, which
 * escapes quotes, so a value can never close its field.
 */
export function sanitizeField(value: string): string {
  // Fast path for the common case (ids, codes, times): printable ASCII holds no Cc/Cf character.
  if (value.length <= MAX_FIELD && PRINTABLE_ASCII.test(value)) return value;
  const cleaned = value.replace(UNSAFE, '\uFFFD');
  return cleaned.length > MAX_FIELD ? `${cleaned.slice(0, MAX_FIELD)}…` : cleaned;
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
