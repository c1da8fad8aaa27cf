import { ErrorCodes, UserContextError } from '../context/errors.js';

/**
 * Role names this module will put into SQL. `SET ROLE` cannot take a bind parameter, so the name is
 * spliced into the statement: we accept only a conservative, lower-case subset of what Postgres allows
 * and still quote it, so that neither the regex nor the quoting alone has to be perfect.
 */
export const ROLE_NAME_PATTERN = /^[a-z_][a-z0-9_]{0,62}$/;

/** Throws `USER_CONTEXT_MISCONFIGURED` unless `name` matches {@link ROLE_NAME_PATTERN}. */
export function assertRoleName(name: string, what = 'role'): string {
  if (typeof name !== 'string' || !ROLE_NAME_PATTERN.test(name)) {
    throw new UserContextError(
      ErrorCodes.MISCONFIGURED,
      `${what} name must match ${ROLE_NAME_PATTERN.source}`,
    );
  }
  return name;
}

/**
 * Quotes an SQL identifier the way `quote_ident` does: wrapped in double quotes, inner quotes doubled.
 * NUL cannot appear in a Postgres identifier, so it is refused rather than escaped.
 */
export function quoteIdent(name: string): string {
  if (name.length === 0 || name.includes('\u0000')) {
    throw new UserContextError(ErrorCodes.MISCONFIGURED, 'identifier is empty or contains NUL');
  }
  return `"${name.replace(/"/g, '""')}"`;
}
