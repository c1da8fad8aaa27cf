/**
 * The JSON schemas the routes share: ids, text, the problem answers. Ajv checks bodies, headers and
 * queries against them (./validation.ts); the OpenAPI document shows them.
 */
import { PAGE_CURSOR_PATTERN } from '../data/repositories/common.js';

export const ID = { type: 'string', pattern: '^[A-Za-z0-9][A-Za-z0-9._:@|+-]{0,127}$' } as const;
// Lower-case only, as the database and randomUUID() write them: ids are compared as text (a schedule's
// memo names its agent), so an upper-case spelling of the same id must not pass for another.
export const UUID = {
  type: 'string',
  pattern: '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$',
} as const;
// The roles this API knows: `admin` administers, and any membership may use the workspace (start,
// schedule, cancel and instruct runs). A role it does not know would grant what a membership grants.
export const ROLES = {
  type: 'array',
  items: { type: 'string', enum: ['admin', 'member'] },
  maxItems: 16,
  uniqueItems: true,
} as const;
const problemSchema = {
  type: 'object',
  properties: {
    type: { type: 'string' },
    title: { type: 'string' },
    status: { type: 'integer' },
    code: { type: 'string' },
    detail: { type: 'string' },
    runId: { type: 'string', description: "a start's 503 or 504: the run it may have started" },
    scheduleId: { type: 'string', description: "a schedule create's 504: the schedule it may have created" },
  },
  required: ['type', 'title', 'status', 'code'],
} as const;
/** Seconds a 503's `Retry-After` asks a client to wait: a dependency's outage, not this request's fault. */
export const RETRY_AFTER_SECONDS = 5;
/** A refusal's answer as the API sends it: a problem document (RFC 9457), its `code` stable. */
export const problemResponse = (description: string) => ({
  description,
  content: { 'application/problem+json': { schema: problemSchema } },
});
/**
 * The problems every route may answer. Found by review: the document declared four statuses as
 * `application/json`; every route may also answer 408, 413, 414, 415, 431 (the request itself), 409,
 * 422, 429 (by route) and 5xx (the service), listed in docs/agent-platform.md with their codes.
 */
export const errors = {
  400: problemResponse('VALIDATION_FAILED, BAD_REQUEST'),
  401: problemResponse('AUTH_MISSING, AUTH_INVALID, AUTH_EXPIRED, AUTH_STALE'),
  403: problemResponse('WORKSPACE_MISMATCH, FORBIDDEN, and the user-context codes that forbid'),
  404: problemResponse('NOT_FOUND, RUN_NOT_FOUND, AGENT_NOT_FOUND, SCHEDULE_NOT_FOUND'),
  '4xx': problemResponse('a request refused by its state or size: see docs/agent-platform.md, Errors'),
  '5xx': {
    ...problemResponse(
      'INTERNAL, AUTH_UNAVAILABLE, TEMPORAL_UNAVAILABLE, DATABASE_UNAVAILABLE, RUN_STALLED, INSTRUCTION_NOT_TAKEN, INSTRUCTION_BUSY, TEMPORAL_TIMEOUT, INSTRUCTION_TIMEOUT',
    ),
    headers: {
      'Retry-After': {
        type: 'integer',
        description: 'on a 503 or 504: seconds to wait before trying again',
      },
    },
  },
};
/** The errors of a route a workspace's quota may refuse. */
export const limitedErrors = { ...errors, 429: problemResponse('QUOTA_EXCEEDED') };
/**
 * Free text. PostgreSQL stores no NUL character in `text` or `jsonb`, nor a lone surrogate in `jsonb`:
 * such input is refused here (400) rather than failing later (a 500, or every run of a schedule).
 * Ajv compiles patterns with the `u` flag, so a well-formed pair (an emoji) is one code point, allowed.
 */
export const TEXT = { type: 'string', pattern: '^[^\\u0000\\uD800-\\uDFFF]*$' } as const;
/**
 * Something to read: at least one character that is not white space, a control or a format character
 * (zero-width, bidi controls, soft hyphen), a combining mark alone, or a blank that is a letter or a
 * symbol by its class (the Hangul fillers, the blank braille pattern). Found by review: a name of one
 * zero-width space, an instruction of one `\u180e`, took a slot and a model step for nothing. One
 * lookahead from the start: linear.
 */
const SAYS_SOMETHING = '(?=[\\s\\S]*[^\\s\\p{Cc}\\p{Cf}\\p{M}\\u115F\\u1160\\u3164\\uFFA0\\u2800])';
/**
 * An instruction: something to read, and no control character but tab and line breaks (NEL among
 * them: C0 ones the workflow's validator refuses too, `isInstructionText`; DEL and C1 ones here only).
 */
export const INSTRUCTION_PATTERN = `^${SAYS_SOMETHING}[^\\u0000-\\u0008\\u000B\\u000C\\u000E-\\u001F\\u007F-\\u0084\\u0086-\\u009F\\uD800-\\uDFFF]*$`;
/**
 * A name (an agent's, a model's): one line, something to read, and no control or bidi control character,
 * which would make a listing show it as another (`\u202Etxt.exe`).
 */
export const NAME = {
  type: 'string',
  pattern: `^${SAYS_SOMETHING}[^\\p{Cc}\\u2028\\u2029\\u202A-\\u202E\\u2066-\\u2069\\uD800-\\uDFFF]*$`,
} as const;
export const security = [{ bearerAuth: [] }];
/** A listing's page cursor, as the `next` of the page before gives it. */
export const PAGE_CURSOR = { type: 'string', pattern: PAGE_CURSOR_PATTERN } as const;
/**
 * An idempotency key: 1 to 255 visible ASCII characters but `"` and `\`, bare (as most APIs take it)
 * or quoted (`"…"`, the structured-field string the IETF draft writes).
 */
export const IDEMPOTENCY_KEY = {
  type: 'string',
  pattern: '^(?:[!#-\\[\\]-~]{1,255}|"[!#-\\[\\]-~]{1,255}")$',
} as const;
/** The path of a route about one of a workspace's agents. */
export const agentParams = {
  type: 'object',
  properties: { ws: ID, agentId: UUID },
  required: ['ws', 'agentId'],
} as const;
/** The path of a route about one workspace. */
export const workspaceParams = { type: 'object', properties: { ws: ID }, required: ['ws'] } as const;
