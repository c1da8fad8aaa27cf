import type { AuditDecision } from '../audit/event.js';
import { ErrorCodes, UserContextError } from '../context/errors.js';
import { currentScope } from './scope.js';

/** A decision of the application's own, for {@link recordDecision}. */
export interface AppDecision {
  /**
   * What was decided, e.g. `run.claim`: lower-case words joined by `.`, `_` or `-`, at most 64
   * characters, and not in one of this library's namespaces of actions (`activity.`, `client.`,
   * `codec.`, `db.`, `nexus.`, `schedule.`, `workflow.`), so that a record of the application's can
   * never pass for one of the library's.
   */
  action: string;
  decision: AuditDecision;
  /** A stable code on deny (`RUN_NOT_FOUND`), `ok` on allow. */
  reason: string;
  /** Ids or names that say what the decision was about; sanitised and capped like every record. */
  detail?: string;
}

const ACTION = /^[a-z][a-z0-9_-]*(\.[a-z][a-z0-9_-]*)*$/;
/**
 * The library's own action namespaces: an application's record may not pass for one of its records.
 * `audit.` too (`audit.coalesced`, the coalescing sink's summaries: found by review, it was missing).
 */
const RESERVED = ['activity.', 'audit.', 'client.', 'codec.', 'db.', 'nexus.', 'schedule.', 'workflow.'];

/**
 * Records a decision of the application's own in the worker's audit trail, from inside an activity or
 * Nexus handler run by a `UserContextPlugin` worker: with the handler's execution ids (namespace,
 * workflow, run, activity type and id, attempt), its verified user and token id, through the plugin's
 * sinks. An application's refusals (a record that is not this workflow's, a tool the agent does not
 * have) then sit in the same trail as the library's, and an admin's audit query finds them.
 *
 * @throws UserContextError `USER_CONTEXT_MISSING` outside such a handler (or in work it left running
 *   after it settled), `USER_CONTEXT_MISCONFIGURED` for an action outside the documented shape.
 *
 * @example
 * if (!run) {
 *   recordDecision({ action: 'run.claim', decision: 'deny', reason: 'RUN_NOT_FOUND', detail: `run ${id}` });
 *   throw ApplicationFailure.create({ type: 'RUN_NOT_FOUND', nonRetryable: true });
 * }
 */
export function recordDecision(decision: AppDecision): void {
  const { action, reason, detail } = decision;
  if (
    typeof action !== 'string' ||
    action.length > 64 ||
    !ACTION.test(action) ||
    RESERVED.some((prefix) => action.startsWith(prefix))
  )
    throw new UserContextError(
      ErrorCodes.MISCONFIGURED,
      "recordDecision: the action must be lower-case words joined by '.', outside this library's actions",
    );
  if (decision.decision !== 'allow' && decision.decision !== 'deny')
    throw new UserContextError(ErrorCodes.MISCONFIGURED, "recordDecision: decision is 'allow' or 'deny'");
  if (typeof reason !== 'string' || reason.length === 0)
    throw new UserContextError(ErrorCodes.MISCONFIGURED, 'recordDecision: a reason is required');
  const scope = currentScope();
  if (!scope)
    throw new UserContextError(
      ErrorCodes.MISSING,
      'recordDecision: not inside an activity or Nexus handler run by a UserContextPlugin worker',
    );
  scope.auditor.emit({
    ...scope.audit,
    action,
    decision: decision.decision,
    // Without a user, the activity runs as an allow-listed system activity.
    source: scope.context ? 'header' : 'system',
    reason,
    userId: scope.context?.userId,
    workspaceId: scope.context?.workspaceId,
    tokenId: scope.claims?.jti,
    ...(typeof detail === 'string' ? { detail } : {}),
  });
}
