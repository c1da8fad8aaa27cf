import { z } from 'zod';
import { ErrorCodes, UserContextError } from './errors.js';
import { ID_PATTERN } from './schema.js';

/**
 * A non-human principal (a maintenance job, a migration). It is a separate type from
 * {@link UserContext} so that it can never be produced by a missing or failed context: code must
 * create it on purpose, with a reason, and the worker must allow-list its name.
 */
export interface SystemPrincipal {
  readonly kind: 'system';
  /** Allow-listed name, same format as ids. */
  readonly name: string;
  /** Why this code runs without a user. Mandatory; written to every audit record. */
  readonly reason: string;
}

const systemSchema = z
  .object({
    name: z.string().regex(ID_PATTERN),
    reason: z
      .string()
      .min(3)
      .max(200)
      // Printable: no controls, formatting or line-break characters, no lone surrogates, no invisible
      // Hangul fillers (letters by category); and it says something: a letter or a digit.
      .regex(/^[^\p{Cc}\p{Cf}\p{Cs}\p{Zl}\p{Zp}\u115F\u1160\u3164\uFFA0]+$/u, 'reason must be printable text')
      .regex(/[\p{L}\p{N}]/u, 'reason must say something (a letter or a digit)'),
  })
  .strict();

/**
 * Declares a system principal. Throws `USER_CONTEXT_INVALID` when name or reason is missing or malformed:
 * the name an id (`ID_PATTERN`), the reason 3–200 printable characters that say something (a letter or
 * a digit; no controls, formatting or line-break characters, lone surrogates or invisible fillers).
 */
export function systemPrincipal(name: string, reason: string): SystemPrincipal {
  const parsed = systemSchema.safeParse({ name, reason });
  if (!parsed.success) {
    throw new UserContextError(
      ErrorCodes.INVALID,
      `system principal: ${parsed.error.issues[0]?.message ?? 'invalid'}`,
    );
  }
  return Object.freeze({ kind: 'system', name: parsed.data.name, reason: parsed.data.reason });
}

/**
 * True when `value` is shaped as a {@link SystemPrincipal} (`kind: 'system'`). A type guard, not a
 * validation: `resolveUserContext({ system })` re-validates a principal it is given as
 * {@link systemPrincipal} does, and returns that validated copy.
 */
export function isSystemPrincipal(value: unknown): value is SystemPrincipal {
  return typeof value === 'object' && value !== null && (value as { kind?: unknown }).kind === 'system';
}
