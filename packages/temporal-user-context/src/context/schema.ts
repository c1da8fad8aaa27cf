import { z } from 'zod';
import { ErrorCodes, UserContextError } from './errors.js';

/**
 * Identifier format for `userId` and `workspaceId`: 1–128 ASCII characters from `[A-Za-z0-9._:@|+-]`,
 * starting with a letter or digit. ASCII-only rules out homoglyphs, full-width digits, zero-width and
 * bidi characters and NFC/NFD ambiguity in identifiers that decide access. `|` and `+` are there for
 * the subjects identity providers issue: Auth0's `auth0|…` and `google-oauth2|…`, e-mail addresses
 * with a `+tag`.
 */
export const ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._:@|+-]{0,127}$/;
/** Role format: lower-case ASCII, starting with a letter, 1–48 characters from `[a-z0-9_.:-]`. */
export const ROLE_PATTERN = /^[a-z][a-z0-9_.:-]{0,47}$/;
/** At most this many roles in one context. */
export const MAX_ROLES = 16;
/**
 * Cap on the serialised context (JSON, UTF-8 bytes). A 10-role context of long ids stays under 1 KiB, and
 * the largest context the schema admits (two 128-character ids, 16 roles of 48) under this cap: the
 * check in {@link parseUserContext} holds the cap should the schema ever be widened.
 */
export const MAX_CONTEXT_BYTES = 2048;

// Control (Cc), format (Cf: zero-width, bidi marks/overrides), surrogates and private-use characters.
const FORBIDDEN_CHARS = /[\p{Cc}\p{Cf}\p{Cs}\p{Co}]/u;

/** Explains why an identifier is refused, in words safe to log (never echoes the input). */
function idProblem(value: string): string | undefined {
  if (value.normalize('NFC') !== value) return 'not NFC-normalised';
  if (FORBIDDEN_CHARS.test(value)) return 'contains control, zero-width or bidi characters';
  if (!ID_PATTERN.test(value)) return 'does not match the id format [A-Za-z0-9][A-Za-z0-9._:@|+-]{0,127}';
  return undefined;
}

const idSchema = z.string().superRefine((value, ctx) => {
  const problem = idProblem(value);
  if (problem) ctx.addIssue({ code: 'custom', message: problem });
});

const roleSchema = z.string().regex(ROLE_PATTERN, 'role does not match [a-z][a-z0-9_.:-]{0,47}');

/** The strict schema of a {@link UserContext}. Unknown keys are refused, not stripped. */
export const userContextSchema = z
  .object({
    userId: idSchema,
    workspaceId: idSchema,
    roles: z
      .array(roleSchema)
      .max(MAX_ROLES)
      .refine((roles) => new Set(roles).size === roles.length, 'duplicate roles'),
  })
  .strict();

/** Who a request acts for: the person the edge authenticated, inside one workspace. */
export interface UserContext {
  /** Stable user id (see {@link ID_PATTERN}). */
  readonly userId: string;
  /** The workspace (tenant) the request acts in. */
  readonly workspaceId: string;
  /** Roles the edge granted for this request: a ceiling, the stored membership decides. */
  readonly roles: readonly string[];
}

/** Contexts {@link parseUserContext} returned: frozen, so they stay valid. */
const parsed = new WeakSet<object>();

/**
 * `input` when {@link parseUserContext} made it, else `input` parsed: for callees that must not trust
 * their caller's context and are on a hot path where the caller has usually parsed it already.
 */
export function ensureUserContext(input: unknown): UserContext {
  return typeof input === 'object' && input !== null && parsed.has(input)
    ? (input as UserContext)
    : parseUserContext(input);
}

/**
 * Validates and freezes a user context. Throws {@link UserContextError} (`USER_CONTEXT_INVALID` or
 * `USER_CONTEXT_TOO_LARGE`) on anything outside the documented format; never coerces.
 */
export function parseUserContext(input: unknown): UserContext {
  let result: ReturnType<typeof userContextSchema.safeParse>;
  try {
    if (input !== null && typeof input === 'object' && !Array.isArray(input)) {
      // Refuse prototype-pollution keys outright rather than relying on how a parser treats them.
      for (const key of Object.keys(input)) {
        if (key === '__proto__' || key === 'constructor' || key === 'prototype') {
          throw new UserContextError(ErrorCodes.INVALID, `forbidden key in context`);
        }
      }
    }
    result = userContextSchema.safeParse(input);
  } catch (err) {
    // A getter or a Proxy trap that throws (an object built in code, never JSON): still a refusal.
    if (err instanceof UserContextError) throw err;
    throw new UserContextError(ErrorCodes.INVALID, 'context: unreadable value');
  }
  if (!result.success) throw new UserContextError(ErrorCodes.INVALID, describeIssue(result.error.issues[0]));
  const ctx: UserContext = Object.freeze({
    userId: result.data.userId,
    workspaceId: result.data.workspaceId,
    roles: Object.freeze([...result.data.roles]),
  });
  if (utf8Length(JSON.stringify(ctx)) > MAX_CONTEXT_BYTES) {
    throw new UserContextError(ErrorCodes.TOO_LARGE, `context over ${MAX_CONTEXT_BYTES} bytes`);
  }
  parsed.add(ctx);
  return ctx;
}

/**
 * A schema issue in words of the schema's, never the input's: zod names unknown keys in its message
 * (`Unrecognized key: "…"`), and a reason goes into failure messages and the audit trail.
 */
function describeIssue(issue: z.core.$ZodIssue | undefined): string {
  if (!issue) return 'context: invalid';
  const path = issue.path.map((segment) => (typeof segment === 'number' ? segment : String(segment)));
  const where =
    path.length > 0 && path.every((s) => /^[A-Za-z0-9_]{1,32}$/.test(String(s))) ? path.join('.') : 'context';
  // The keys a context may have, never the unknown ones (the input's).
  if (issue.code === 'unrecognized_keys')
    return `${where}: ${issue.keys.length} unknown key(s)${where === 'context' ? ' (a context has userId, workspaceId and roles only)' : ''}`;
  return `${where}: ${issue.message}`;
}

/** True when both contexts name the same user, workspace and set of roles. */
export function sameUserContext(a: UserContext, b: UserContext): boolean {
  if (a.userId !== b.userId || a.workspaceId !== b.workspaceId || a.roles.length !== b.roles.length)
    return false;
  // Both ways: a list with a repeated role is no set (parsed contexts have none; this does not rely on it).
  const inA = new Set(a.roles);
  const inB = new Set(b.roles);
  return b.roles.every((r) => inA.has(r)) && a.roles.every((r) => inB.has(r));
}

// TextEncoder exists in Node and in the workflow sandbox; Buffer does not exist in the sandbox.
const encoder = new TextEncoder();
/** Bytes of `text` in UTF-8: the unit of the context's size cap. */
export function utf8Length(text: string): number {
  return encoder.encode(text).length;
}
