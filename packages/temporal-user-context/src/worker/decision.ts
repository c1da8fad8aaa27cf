import { describeErrorKind } from '../audit/sanitize.js';
import type { Auditor } from '../audit/sinks.js';
import type { Client } from '@temporalio/client';
import { ErrorCodes, UserContextError, isUserContextError } from '../context/errors.js';
import type { ContextHeader } from '../header/wire.js';
import type { ScheduledRunCheck } from './scheduled-run.js';
import type { ActivityScope } from './scope.js';
import type { Verified } from './verifier.js';
import { markRecorded } from '../audit/recorded.js';

type Fields = ActivityScope['audit'];

/** The checks of a verified originator that the token alone cannot settle (activity and Nexus guards). */
export interface OriginatorChecks {
  /** Revocation hook, for originator and actor tokens: true refuses (by `jti`, user, workspace). */
  isRevoked?: (verified: Verified) => boolean | Promise<boolean>;
  scheduledRuns: ScheduledRunCheck;
}

/**
 * After the token verified: the revocation hook first (local and cheap), then, for a schedule token,
 * the server's confirmation of the scheduled run. `server` gives the client and the caller's run id;
 * it is called only for a schedule token, and may refuse.
 */
export async function confirmOriginator(
  verified: Verified,
  header: ContextHeader,
  checks: OriginatorChecks,
  server: () => { client: Client; runKey: string },
): Promise<void> {
  if (await checks.isRevoked?.(verified)) throw new UserContextError(ErrorCodes.REVOKED, 'context revoked');
  if (verified.claims.use === 'schedule') {
    const { client, runKey } = server();
    // verifyOriginator required the lineage facts and the schedule id of a schedule token.
    await checks.scheduledRuns.confirm(
      client,
      verified.claims.sch!,
      header.lin!.root,
      header.lin!.start,
      verified.claims.iat,
      runKey,
      verified.claims.wt !== undefined && verified.claims.tq !== undefined
        ? { workflowType: verified.claims.wt, taskQueue: verified.claims.tq, argsDigest: verified.claims.ad }
        : undefined,
    );
  }
}

/** Audits a verified context at a worker entry point (activity, Nexus operation). */
export function auditAllowed(
  auditor: Auditor,
  fields: Fields,
  action: string,
  verified: Verified,
  detail?: string,
): void {
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
    detail,
  });
}

/**
 * Audits a failed verification. A refusal (`UserContextError`) is returned for the caller to turn into
 * its non-retryable failure. Anything else is not a verdict on the context (e.g. the revocation hook's
 * database timed out): it is audited as `ERROR` and rethrown unchanged, so it stays retryable instead of
 * failing the run for good under a misleading code. A `qualifier` prefixes the detail (what the
 * record's ids are worth); `verified`, the token that verified before the refusal, names its user.
 */
export function auditFailure(
  auditor: Auditor,
  fields: Fields,
  action: string,
  err: unknown,
  { qualifier, verified }: { qualifier?: string; verified?: Verified } = {},
): UserContextError {
  // A qualifier goes first, so that the detail's length cap can never cut it off.
  const detail = (reason: string) => (qualifier === undefined ? reason : `${qualifier}: ${reason}`);
  // Refused after its token verified (revoked, a schedule's run not confirmed, ...): the record names
  // whose token it was, so that the user's trail shows the refusal. Never what an unverified token says.
  const who = verified
    ? {
        userId: verified.context.userId,
        workspaceId: verified.context.workspaceId,
        tokenId: verified.claims.jti,
      }
    : undefined;
  if (!isUserContextError(err)) {
    auditor.emit({
      ...fields,
      ...who,
      action,
      decision: 'deny',
      source: 'header',
      reason: 'ERROR',
      // Its kind only: the record may reach the workspace's own trail, and a message can name hosts,
      // ports or URLs (the error itself goes on, to the activity's failure and the worker's log). The
      // hook may throw anything, also a value String() cannot convert: the original must still rethrow.
      detail: detail(`error: ${describeErrorKind(err)}`),
    });
    throw err;
  }
  auditor.emit({
    ...fields,
    ...who,
    action,
    decision: 'deny',
    source: 'header',
    reason: err.code,
    detail: detail(err.reason),
  });
  return markRecorded(err);
}

/**
 * Records a refusal that handler code raised and nobody audited (see `wasRecordedIn`), as the
 * handler's: with its execution ids and, when it has one, its verified user.
 */
export function auditRefusedByCode(scope: ActivityScope, action: string, err: UserContextError): void {
  scope.auditor.emit({
    ...scope.audit,
    action,
    decision: 'deny',
    source: scope.context ? 'header' : 'system',
    reason: err.code,
    userId: scope.context?.userId,
    workspaceId: scope.context?.workspaceId,
    tokenId: scope.claims?.jti,
    detail: `refused by the handler's code: ${err.reason}`,
  });
}
