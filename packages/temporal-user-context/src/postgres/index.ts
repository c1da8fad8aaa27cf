/**
 * `temporal-user-context/postgres`: database isolation for a user context.
 *
 * - {@link withUserScope} runs work in one transaction as a non-owner role, with the workspace and user
 *   as transaction-local settings that row-level security policies read, after a live membership check.
 * - {@link scopeSealSql} installs the sealed scope: policies that SQL inside a scope cannot talk out of.
 * - {@link assertIsolation} refuses to start against a database that would not isolate workspaces.
 * - {@link postgresAuditSink} / {@link queryAuditTrail} keep the audit trail in the database.
 *
 * See docs/data-isolation.md.
 *
 * @packageDocumentation
 */
export { CommitOutcomeUnknownError, SESSION_RESET, fromPgPool, fromPGlite } from './database.js';
export type {
  PgPoolLike,
  PgPoolOptions,
  PGliteOptions,
  SqlDatabase,
  SqlQueryable,
  SqlSession,
  SqlResult,
  SqlRow,
  PGliteLike,
  PGliteLikeQueryable,
} from './database.js';
export { withUserScope, DEFAULT_APP_ROLE, SCOPE_SETTINGS } from './scope.js';
export type { UserScopeOptions, ScopedTransaction, ScopeAuditFields } from './scope.js';
export { scopeSealSql, DEFAULT_SEAL_SCHEMA, SEAL_VERSION } from './seal.js';
export type { ScopeSealOptions } from './seal.js';
export { assertIsolation } from './guard.js';
export type { IsolationGuardOptions, IsolationReport } from './guard.js';
export {
  postgresAuditSink,
  queryAuditTrail,
  AuditBacklogError,
  AuditFlushTimeoutError,
  type AuditFlushOptions,
} from './audit.js';
export type {
  PostgresAuditSink,
  PostgresAuditSinkOptions,
  StoredAuditEvent,
  AuditTrailOptions,
  AuditTrailFilter,
} from './audit.js';
export { quoteIdent, assertRoleName, ROLE_NAME_PATTERN } from './ident.js';
export { withCurrentUserScope, type CurrentUserScopeOptions } from './current.js';
