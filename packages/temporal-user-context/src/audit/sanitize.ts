import type { AuditDecision, AuditEvent, IdentitySource } from './event.js';

const MAX_FIELD = 256;
// C0/C1 controls (CR, LF, ...), zero-width and bidi formatting characters, the line and paragraph
// separators U+2028/U+2029, which JavaScript and many log viewers treat as line breaks, and lone
// surrogates (`u` flag: a pair is one code point, never Cs), which are no text: encoders turn them into
// U+FFFD or escapes of their own, or refuse them.
const UNSAFE = /[\p{Cc}\p{Cf}\p{Cs}\p{Zl}\p{Zp}]/gu;
const PRINTABLE_ASCII = /^[\x20-\x7e]*$/;

/**
 * Makes an attacker-influenced string safe for a log line: control, zero-width, bidi and
 * line/paragraph separator characters and lone surrogates are replaced by U+FFFD, and the length is
 * capped at 256 UTF-16 code units (then `…`), cut between code points. JSON structure is left to the
 * JSON encoder, which escapes quotes, so a value can never close its field.
 */
export function sanitizeField(value: string): string {
  // Fast path for the common case (ids, codes, times): printable ASCII holds no unsafe character.
  if (value.length <= MAX_FIELD && PRINTABLE_ASCII.test(value)) return value;
  const cleaned = value.replace(UNSAFE, '\uFFFD');
  if (cleaned.length <= MAX_FIELD) return cleaned;
  // No lone surrogate is left, so a high surrogate as the last unit kept has its pair just past the
  // cap: cut before it rather than leave half a character.
  const last = cleaned.charCodeAt(MAX_FIELD - 1);
  const end = last >= 0xd800 && last <= 0xdbff ? MAX_FIELD - 1 : MAX_FIELD;
  return `${cleaned.slice(0, end)}…`;
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

const KIND = /^[A-Za-z][A-Za-z0-9_.]{0,63}$/;
const CODE = /^[A-Za-z0-9_.-]{1,32}$/;

/**
 * What kind of failure a thrown value is, without its message: its class or `name`, and the first
 * `code` on it or its causes (a gRPC status, a SQLSTATE, a Node `ECONNREFUSED`), e.g.
 * `ServiceError code=14`. For audit records that the application's users may read: a message may name
 * hosts, ports, URLs with credentials or SQL; the log that a failure also reaches keeps it whole.
 * Total, as {@link describeThrown}.
 */
export function describeErrorKind(value: unknown): string {
  try {
    if (value === null || (typeof value !== 'object' && typeof value !== 'function')) return typeof value;
    const name: unknown = (value as { name?: unknown }).name;
    const kind =
      typeof name === 'string' && KIND.test(name) ? name : value instanceof Error ? 'Error' : 'object';
    let code: string | undefined;
    for (let e: unknown = value, depth = 0; code === undefined && depth < 4; depth++) {
      if (e === null || typeof e !== 'object') break;
      const c: unknown = (e as { code?: unknown }).code;
      if ((typeof c === 'string' || typeof c === 'number') && CODE.test(String(c))) code = String(c);
      e = (e as { cause?: unknown }).cause;
    }
    return code === undefined ? kind : `${kind} code=${code}`;
  } catch {
    return 'unprintable value';
  }
}

/** The optional string fields of {@link AuditEvent}, copied when they are strings. */
const OPTIONAL_STRINGS = [
  'userId',
  'workspaceId',
  'principal',
  'tokenId',
  'namespace',
  'workflowId',
  'runId',
  'workflowType',
  'activityType',
  'activityId',
] as const satisfies readonly (keyof AuditEvent)[];

const DECISIONS: readonly string[] = ['allow', 'deny'] satisfies AuditDecision[];
const SOURCES: readonly string[] = [
  'header',
  'explicit',
  'system',
  'edge',
  'pseudonym',
  'none',
] satisfies IdentitySource[];

/** Stands for a required string field that was not a string. */
const INVALID = 'invalid';
/** The largest `attempt` the `audit_log.attempt` column (a PostgreSQL `integer`) holds. */
const MAX_ATTEMPT = 2 ** 31 - 1;
/** What was read from a field whose getter (or Proxy trap) threw. */
const UNREADABLE: unique symbol = Symbol('unreadable');

// The date-time form of ISO 8601 that `Date#toISOString` writes and PostgreSQL's timestamptz reads,
// with an explicit offset (a time without one would be read in the server's time zone).
const ISO_TIME = /^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.\d{1,9})?(?:Z|[+-](\d\d):(\d\d))$/;

/**
 * True for an ISO-8601 date-time with an offset that names a real instant: the form alone would let
 * through a 30 February or a year 0, which PostgreSQL refuses, and one refused field must not cost the
 * whole record.
 */
function isIsoTime(value: string): boolean {
  const m = ISO_TIME.exec(value);
  if (!m) return false;
  const [year, month, day, hour, minute, second] = m.slice(1, 7).map(Number) as [
    number,
    number,
    number,
    number,
    number,
    number,
  ];
  const leap = year % 4 === 0 && (year % 100 !== 0 || year % 400 === 0);
  const days = month === 2 ? (leap ? 29 : 28) : [4, 6, 9, 11].includes(month) ? 30 : 31;
  return (
    year >= 1 &&
    month >= 1 &&
    month <= 12 &&
    day >= 1 &&
    day <= days &&
    hour <= 23 &&
    minute <= 59 &&
    second <= 59 &&
    (m[7] === undefined || (Number(m[7]) <= 14 && Number(m[8]) <= 59))
  );
}

/**
 * The event's own value of `key`: never one inherited through its prototype (an own `__proto__` key,
 * which `JSON.parse` makes and a spread copies, would otherwise supply unchecked fields), never a
 * throw.
 */
function own(event: object, key: string): unknown {
  try {
    return Object.prototype.hasOwnProperty.call(event, key)
      ? (event as Record<string, unknown>)[key]
      : undefined;
  } catch {
    return UNREADABLE;
  }
}

/**
 * Returns a clean, frozen copy of `event`, fit for any sink (a log line, an `audit_log` row), never
 * throwing:
 *
 * - only the fields of {@link AuditEvent}, read from the event's own properties (nothing inherited,
 *   no other key);
 * - string fields sanitised with {@link sanitizeField}; `time` an ISO-8601 date-time with an offset;
 *   `decision` `allow` or `deny`; `source` an {@link IdentitySource}; `attempt` an integer from 0 to
 *   2³¹−1; `undefined` and `null` optional fields left out;
 * - a field of the wrong type or value is not passed on: an optional one is left out, a required one
 *   replaced (`time` by the given `time` or now, `decision` by `deny`, `source` by `none`, `action`
 *   and `reason` by `invalid`), and `detail` then starts with `invalid fields: <names>; ` so that the
 *   record shows it. The record is still written, whatever it held.
 *
 * `time` fills in the event's time when it has none (default: now).
 */
export function sanitizeAuditEvent(
  event: Omit<AuditEvent, 'time'> & { time?: string },
  time?: string,
): AuditEvent {
  const source: object = typeof event === 'object' && event !== null ? event : {};
  let invalid: string[] | undefined;
  const reject = (key: string): undefined => {
    (invalid ??= []).push(key);
    return undefined;
  };
  const required = (key: string, valid: (value: string) => boolean): string | undefined => {
    const value = own(source, key);
    if (typeof value === 'string' && valid(value)) return sanitizeField(value);
    return reject(key);
  };
  const always = () => true;

  const given = own(source, 'time');
  let at: string | undefined;
  if (typeof given === 'string' && isIsoTime(given)) at = given;
  else if (given !== undefined && given !== null) reject('time');
  at ??= typeof time === 'string' && isIsoTime(time) ? time : new Date().toISOString();

  // Built by adding keys to a fresh object: on Node 20 a spread followed by new keys (`{ ...event,
  // time }`) costs microseconds per key, and this runs on every activity. Only fixed keys are ever
  // assigned, so no key of the event can reach the prototype's setter.
  const out: AuditEvent = {
    time: at,
    action: required('action', always) ?? INVALID,
    decision: (required('decision', (v) => DECISIONS.includes(v)) ?? 'deny') as AuditDecision,
    source: (required('source', (v) => SOURCES.includes(v)) ?? 'none') as IdentitySource,
    reason: required('reason', always) ?? INVALID,
  };
  for (const key of OPTIONAL_STRINGS) {
    const value = own(source, key);
    // An empty id names nobody: left out like a missing one (a sink would write '' where NULL belongs).
    if (value === '') continue;
    if (typeof value === 'string') out[key] = sanitizeField(value);
    else if (value !== undefined && value !== null) reject(key);
  }
  const attempt = own(source, 'attempt');
  if (typeof attempt === 'number' && Number.isInteger(attempt) && attempt >= 0 && attempt <= MAX_ATTEMPT)
    out.attempt = attempt;
  else if (attempt !== undefined && attempt !== null) reject('attempt');
  const givenDetail = own(source, 'detail');
  let detail = typeof givenDetail === 'string' ? givenDetail : undefined;
  if (detail === undefined && givenDetail !== undefined && givenDetail !== null) reject('detail');
  // The marker goes first, so that the length cap can never cut it off.
  if (invalid) detail = `invalid fields: ${invalid.join(', ')}${detail === undefined ? '' : `; ${detail}`}`;
  if (detail !== undefined) out.detail = sanitizeField(detail);
  // Frozen: a sink that trusts it as clean (isSanitized) must not see what another sink wrote into it.
  sanitized.add(Object.freeze(out));
  return out;
}

/** The records {@link sanitizeAuditEvent} made, so that a sink need not clean them a second time. */
const sanitized = new WeakSet<object>();

/** True for a record {@link sanitizeAuditEvent} returned (the {@link Auditor} hands sinks only those). */
export function isSanitized(event: object): boolean {
  return sanitized.has(event);
}
