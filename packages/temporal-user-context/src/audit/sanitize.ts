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

/** Returns a copy of `event` with every string field sanitised. */
export function sanitizeAuditEvent(event: AuditEvent): AuditEvent {
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(event)) {
    if (value === undefined) continue;
    out[key] = typeof value === 'string' ? sanitizeField(value) : value;
  }
  return out as unknown as AuditEvent;
}
