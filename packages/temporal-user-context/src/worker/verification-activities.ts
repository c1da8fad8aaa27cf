import { markRecorded } from '../audit/recorded.js';
import { ErrorCodes, UserContextError } from '../context/errors.js';
import type { UserContext } from '../context/schema.js';
import { WHOAMI_ACTIVITY, WHOIS_ACTOR_ACTIVITY } from '../workflow/activity-names.js';
import { currentActor, currentUserContext } from './resolve.js';
import { currentScope } from './scope.js';

/**
 * The activities every worker of this plugin registers, which workflow code calls to have its
 * originator (`getUserContext()`) or a handler's actor (`verifyActor()`) verified by a worker, as local
 * activities: each returns what the activity guard verified from the header it was sent.
 */
export const verificationActivities: Readonly<Record<string, () => Promise<UserContext>>> = Object.freeze({
  [WHOAMI_ACTIVITY]: async () => currentUserContext(),
  [WHOIS_ACTOR_ACTIVITY]: async () => {
    const actor = currentActor();
    if (!actor) {
      // No actor header at all (a refused one throws in currentActor(), audited by the guard):
      // workflow code asked outside a handler's actor, by the activity's name. A refusal too, on
      // the record with the activity's ids (currentActor() found its scope, so it is there).
      const scope = currentScope()!;
      scope.auditor.emit({
        ...scope.audit,
        action: 'activity.actor',
        decision: 'deny',
        source: 'none',
        reason: ErrorCodes.MISSING,
        detail: 'no actor header',
      });
      throw markRecorded(new UserContextError(ErrorCodes.MISSING, 'no actor'));
    }
    return actor;
  },
});
