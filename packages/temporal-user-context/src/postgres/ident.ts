import { ErrorCodes, UserContextError } from '../context/errors.js';

/**
 * Role names this module accepts: a conservative, lower-case subset of what Postgres allows. Migrations
 * splice them into DDL (quoted as well, so that neither the pattern nor the quoting alone has to be
 * perfect); scopes pass the app role as a bind parameter.
 */
export const ROLE_NAME_PATTERN = /^[a-z_][a-z0-9_]{0,62}$/;

/**
 * Names the pattern allows that are not roles one can switch to: `none` switches back to the login
 * role (`SET ROLE none`), without an error, and would leave a scope running as the login; the others
 * are reserved (`pg_` is the prefix of PostgreSQL's own roles).
 */
const RESERVED_ROLE_NAMES = new Set(['none', 'public', 'current_user', 'current_role', 'session_user']);

/** Throws `USER_CONTEXT_MISCONFIGURED` unless `name` matches {@link ROLE_NAME_PATTERN} and is not reserved. */
export function assertRoleName(name: string, what = 'role'): string {
  if (typeof name === 'string' && (RESERVED_ROLE_NAMES.has(name) || name.startsWith('pg_'))) {
    throw new UserContextError(ErrorCodes.MISCONFIGURED, `${what} name ${name} is reserved`);
  }
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
