import { currentUserContext } from '../worker/resolve.js';
import { currentScope } from '../worker/scope.js';
import type { SqlDatabase } from './database.js';
import { withUserScope, type ScopedTransaction, type UserScopeOptions } from './scope.js';

/**
 * {@link withUserScope} for the running activity (or Nexus handler): scoped to its verified context,
 * audited through the plugin's sinks with the activity's Temporal ids. Throws `USER_CONTEXT_MISSING`
 * outside an activity run by a UserContextPlugin worker.
 */
export function withCurrentUserScope<T>(
  db: SqlDatabase,
  fn: (tx: ScopedTransaction) => Promise<T>,
  options: Omit<UserScopeOptions, 'auditor' | 'audit'> = {},
): Promise<T> {
  const context = currentUserContext();
  const scope = currentScope();
  return withUserScope(db, context, fn, {
    ...options,
    ...(scope ? { auditor: scope.auditor, audit: { ...scope.audit, tokenId: scope.claims?.jti } } : {}),
  });
}
