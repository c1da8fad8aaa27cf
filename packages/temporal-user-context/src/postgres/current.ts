import { ErrorCodes, UserContextError } from '../context/errors.js';
import type { UserContext } from '../context/schema.js';
import { currentActor, currentUserContext } from '../worker/resolve.js';
import { currentScope } from '../worker/scope.js';
import type { SqlDatabase } from './database.js';
import { withUserScope, type ScopedTransaction, type UserScopeOptions } from './scope.js';
import { markRecorded } from '../audit/recorded.js';

/** Options of {@link withCurrentUserScope}. */
export interface CurrentUserScopeOptions extends Omit<UserScopeOptions, 'auditor' | 'audit'> {
  /**
   * Whom the scope is for: the activity's originator (default: who started the lineage), or its
   * `'actor'`, the sender of the signal or update whose handler scheduled the activity (refused with
   * `USER_CONTEXT_MISSING` when there is none; the actor's own refusal when its header did not verify).
   * The actor's token holds for `actorWindowSeconds` after its call was sent (5 min by default): an
   * attempt after that, a retry included, is refused `USER_CONTEXT_TOKEN_EXPIRED`, for good. Give such
   * activities a retry budget within the window.
   */
  as?: 'originator' | 'actor';
}

/**
 * {@link withUserScope} for the running activity (or Nexus handler): scoped to its verified context,
 * or with `as: 'actor'` to its verified actor, audited through the plugin's sinks with the activity's
 * Temporal ids. Throws `USER_CONTEXT_MISSING` outside an activity run by a UserContextPlugin worker.
 *
 * @example
 * // An activity an update handler scheduled, writing as the member who sent the update.
 * await withCurrentUserScope(db, (tx) => new NoteRepository(tx).add(text), { as: 'actor' });
 */
export async function withCurrentUserScope<T>(
  db: SqlDatabase,
  fn: (tx: ScopedTransaction) => Promise<T>,
  options: CurrentUserScopeOptions = {},
): Promise<T> {
  const { as = 'originator', ...scopeOptions } = options;
  if (as !== 'originator' && as !== 'actor')
    throw new UserContextError(
      ErrorCodes.MISCONFIGURED,
      "withCurrentUserScope: as is 'originator' or 'actor'",
    );
  const scope = currentScope();
  let context: UserContext;
  if (as === 'actor') {
    try {
      const actor = currentActor();
      if (!actor)
        throw new UserContextError(
          ErrorCodes.MISSING,
          'no actor: the activity was not scheduled by a signal or update handler',
        );
      context = actor;
    } catch (err) {
      // The database scope's own record, beside the guard's `activity.actor` one (when it refused).
      if (err instanceof UserContextError && scope) {
        scope.auditor.emit({
          action: 'db.scope',
          decision: 'deny',
          source: 'header',
          ...scope.audit,
          reason: err.code,
          detail: `as actor: ${err.reason}`,
        });
        markRecorded(err);
      }
      throw err;
    }
  } else context = currentUserContext();
  return withUserScope(db, context, fn, {
    ...scopeOptions,
    // The token id only for the activity's own user, whose token it is.
    ...(scope
      ? {
          auditor: scope.auditor,
          audit: { ...scope.audit, ...(as === 'originator' ? { tokenId: scope.claims?.jti } : {}) },
        }
      : {}),
  });
}
