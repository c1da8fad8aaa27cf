import { describeThrown } from '../audit/sanitize.js';
import type { Auditor } from '../audit/sinks.js';
import { isUserContextError, type UserContextError } from '../context/errors.js';
import type { ActivityScope } from './scope.js';
import type { Verified } from './verifier.js';

type Fields = ActivityScope['audit'];

/** Audits a verified context at a worker entry point (activity, Nexus operation). */
export function auditAllowed(auditor: Auditor, fields: Fields, action: string, verified: Verified): void {
  // Runs on every activity: one literal instead of `{ ...fields, ... }`, which Node 20 builds slowly.
  auditor.emit({
    action,
    decision: 'allow',
    source: 'header',
    reason: 'ok',
    userId: verified.context.userId,
    workspaceId: verified.context.workspaceId,
    tokenId: verified.claims.jti,
    namespace: fields.namespace,
    workflowId: fields.workflowId,
    runId: fields.runId,
    workflowType: fields.workflowType,
    activityType: fields.activityType,
    activityId: fields.activityId,
    attempt: fields.attempt,
  });
}

/**
 * Audits a failed verification. A refusal (`UserContextError`) is returned for the caller to turn into
 * its non-retryable failure. Anything else is not a verdict on the context (e.g. the revocation hook's
 * database timed out): it is audited as `ERROR` and rethrown unchanged, so it stays retryable instead of
 * failing the run for good under a misleading code.
 */
export function auditFailure(
  auditor: Auditor,
  fields: Fields,
  action: string,
  err: unknown,
): UserContextError {
  if (!isUserContextError(err)) {
    auditor.emit({
      ...fields,
      action,
      decision: 'deny',
      source: 'header',
      reason: 'ERROR',
      // The hook may throw anything, also a value String() cannot convert: the original must still rethrow.
      detail: describeThrown(err),
    });
    throw err;
  }
  auditor.emit({
    ...fields,
    action,
    decision: 'deny',
    source: 'header',
    reason: err.code,
    detail: err.reason,
  });
  return err;
}
