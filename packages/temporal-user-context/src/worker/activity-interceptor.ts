import { ApplicationFailure } from '@temporalio/common';
import { CompleteAsyncError, type Context } from '@temporalio/activity';
import type { ActivityExecuteInput, ActivityInboundCallsInterceptor, Next } from '@temporalio/worker';
import { ErrorCodes, UserContextError, isUserContextError } from '../context/errors.js';
import { ACTOR_HEADER, ORIGINATOR_HEADER, decodeHeader, type Lineage } from '../header/wire.js';
import type { Auditor } from '../audit/sinks.js';
import { markRecordedIn, wasRecordedIn } from '../audit/recorded.js';
import { taskTokenRef } from '../audit/task-token.js';
import {
  auditAllowed,
  auditFailure,
  auditRefusedByCode,
  confirmOriginator,
  type OriginatorChecks,
} from './decision.js';
import { withServerLineage, type ActivityLineageCheck, type ConfirmedLineage } from './server-lineage.js';
import { closeScope, enterActivityScope, type ActivityScope } from './scope.js';
import {
  TokenIssuedAheadError,
  verifyOriginatorInParts,
  type ContextVerifier,
  type Verified,
} from './verifier.js';

export interface ActivityGuardOptions extends OriginatorChecks {
  verifier: ContextVerifier;
  auditor: Auditor;
  /** Activity type → system principal names it may run as without a user. Everything else needs one. */
  systemActivities: Readonly<Record<string, readonly string[]>>;
  /**
   * The server's lineage of activities' runs: of every run with `activityLineage: 'server'`
   * (`serverLineage`; else `lin` is read), and in either mode of a run whose header dates it after its
   * token's window (a workflow retry, a cron run: see `OriginatorParts.lateStart`).
   */
  lineage: ActivityLineageCheck;
  serverLineage: boolean;
}

/** Turns a refusal into a non-retryable failure whose `type` is the stable code. */
export function toApplicationFailure(err: UserContextError): ApplicationFailure {
  return ApplicationFailure.create({ message: err.message, type: err.code, nonRetryable: !err.retryable });
}

/**
 * Verifies the propagated context before any activity code runs, then runs the activity inside an
 * {@link ActivityScope}. A missing, malformed, forged, expired or misbound context is refused with a
 * non-retryable ApplicationFailure and an audit record; the worker itself is unaffected.
 */
export class ActivityGuard implements ActivityInboundCallsInterceptor {
  constructor(
    private readonly ctx: Context,
    private readonly options: ActivityGuardOptions,
  ) {}

  private async verifyActor(
    input: ActivityExecuteInput,
    originator: Verified,
    facts: { namespace: string; workflowId: string; at?: number },
    audit: ActivityScope['audit'],
    server: Pick<Lineage, 'root' | 'start'> | undefined,
  ): Promise<{ actor?: Verified; actorRefusal?: UserContextError }> {
    let identified: Verified | undefined;
    try {
      const written = decodeHeader(input.headers, ACTOR_HEADER);
      if (!written) return {};
      // With the server's lineage, the actor is held to the server's root too: an actor token bound to
      // another run's root must not pass on the `lin` a workflow wrote (docs/wire-format.md, _Limits_).
      const header = server
        ? Object.assign({}, written, { lin: Object.assign({}, written.lin, server) })
        : written;
      const actor = await this.options.verifier.verifyActor(header, facts);
      identified = actor;
      // Revocation applies to whoever acts, not only to who started the lineage: a revoked actor token
      // must not come back from verifyActor() as a verified actor.
      if (await this.options.isRevoked?.(actor))
        throw new UserContextError(ErrorCodes.REVOKED, 'context revoked');
      if (actor.context.workspaceId !== originator.context.workspaceId) {
        throw new UserContextError(ErrorCodes.ACTOR_FORBIDDEN, 'actor is not in the originator workspace');
      }
      // Who acts is a decision of its own: the activity.execute record names the originator only.
      auditAllowed(this.options.auditor, audit, 'activity.actor', actor);
      return { actor };
    } catch (err) {
      if (!isUserContextError(err)) throw err;
      // Named when its token verified (a revoked actor, one of another workspace), else anonymous.
      return {
        actorRefusal: auditFailure(this.options.auditor, audit, 'activity.actor', err, {
          verified: identified,
        }),
      };
    }
  }

  async execute(
    input: ActivityExecuteInput,
    next: Next<ActivityInboundCallsInterceptor, 'execute'>,
  ): Promise<unknown> {
    const info = this.ctx.info;
    const namespace = info.workflowNamespace ?? info.namespace;
    const workflowId = info.workflowExecution?.workflowId ?? '';
    const audit: ActivityScope['audit'] = {
      namespace,
      workflowId,
      runId: info.workflowExecution?.runId,
      workflowType: info.workflowType,
      activityType: info.activityType,
      activityId: info.activityId,
      attempt: info.attempt,
    };
    const auditor: Auditor = this.options.auditor;
    // Own entries only: `constructor`, `__proto__`, ... would otherwise find Object.prototype members,
    // whose non-zero `length` let a header-less activity of that name past the MISSING check.
    const listed = Object.hasOwn(this.options.systemActivities, info.activityType)
      ? this.options.systemActivities[info.activityType]
      : undefined;
    const allowedSystem: readonly string[] = Array.isArray(listed) ? listed : [];
    let scope: ActivityScope;
    // The originator's token once it verified: a later refusal (revoked, lineage) names whose it was.
    let identified: Verified | undefined;
    try {
      const header = decodeHeader(input.headers, ORIGINATOR_HEADER);
      if (!header) {
        if (allowedSystem.length === 0)
          throw new UserContextError(ErrorCodes.MISSING, 'activity scheduled without a user context');
        // A standalone activity (SDK 1.24: started by a client, no workflow) has no lineage at all, and
        // any client of the namespace may start one with arguments of its choosing: never as system.
        if (!info.inWorkflow)
          throw new UserContextError(ErrorCodes.MISSING, 'standalone activity without a user context');
        scope = { allowedSystem, audit, auditor };
        // Running without a user is a decision of its own: audited here, and again by
        // resolveUserContext({ system }) with the principal the activity then declares.
        auditor.emit({
          ...audit,
          action: 'activity.execute',
          decision: 'allow',
          source: 'system',
          reason: 'ok',
          detail: `no user context; allow-listed principals: ${allowedSystem.join(', ')}`,
        });
      } else {
        const facts = { namespace, workflowId };
        // The run is the server's (the activity task names it).
        const run = () => {
          const runId = info.workflowExecution?.runId;
          if (!runId)
            throw new UserContextError(ErrorCodes.LINEAGE_MISMATCH, 'the activity task names no run');
          return { workflowId, runId };
        };
        let checked = header;
        // A lineage its header dates after the window, the server's record dated (see lateStart).
        let late: ConfirmedLineage | undefined;
        // With the server's lineage, how the root started is the server's to say too (check 10).
        let verified = await this.options.verifier[verifyOriginatorInParts](checked, facts, {
          boundStart: !this.options.serverLineage,
          lateStart: async () => (late = await this.options.lineage.confirm(this.ctx.client, run())),
        });
        identified = verified;
        let server: Pick<Lineage, 'root' | 'start'> | undefined;
        // The server's lineage of the run: of every run with `activityLineage: 'server'`, else of one its
        // header dated after the window. Its root, chain start and how its first run started (check 10)
        // are then the server's, not the `lin` facts its workflow wrote (docs/wire-format.md, _Limits_).
        const confirmed = this.options.serverLineage
          ? await this.options.lineage.confirm(this.ctx.client, run())
          : late;
        if (confirmed) {
          server = { root: confirmed.root, start: confirmed.chainStart };
          checked = await withServerLineage(
            this.ctx.client,
            header,
            confirmed,
            verified.claims,
            this.options.lineage.starts,
          );
          verified = await this.options.verifier.verifyOriginator(checked, facts);
        }
        await confirmOriginator(verified, checked, this.options, () => ({
          client: this.ctx.client,
          runKey: info.workflowExecution?.runId ?? '',
        }));
        // The activity acts as the originator. An actor (the sender of the signal or update whose
        // handler scheduled it) is exposed only when its own token verifies; otherwise the activity runs
        // without one, and the refusal is audited and kept for verifyActor().
        // The actor's window is measured at the activity's first scheduling (the server's time): its
        // retries act as the first attempt did.
        const { actor, actorRefusal } = await this.verifyActor(
          input,
          verified,
          { namespace, workflowId, at: info.scheduledTimestampMs },
          audit,
          server,
        );
        scope = {
          context: verified.context,
          claims: verified.claims,
          actor: actor?.context,
          actorRefusal,
          header,
          allowedSystem,
          audit,
          auditor,
        };
        auditAllowed(auditor, audit, 'activity.execute', verified);
      }
    } catch (err) {
      let refusal: UserContextError;
      try {
        refusal = auditFailure(auditor, audit, 'activity.execute', err, { verified: identified });
      } catch (thrown) {
        // A token ahead of this worker's clock: tried again once the clock has caught up, not at once
        // (found by the round's review: attempts failed in a row and used up a retry policy's count).
        if (thrown instanceof TokenIssuedAheadError)
          throw ApplicationFailure.create({
            message: thrown.message,
            type: thrown.name,
            nonRetryable: false,
            nextRetryDelay: `${thrown.aheadSeconds + 1}s`,
          });
        throw thrown;
      }
      throw toApplicationFailure(refusal);
    }
    // The actor's refusal was recorded above: activity code that rethrows it (currentActor()) is not.
    if (scope.actorRefusal) markRecordedIn(scope.actorRefusal, scope);
    try {
      enterActivityScope(scope);
      // Cancelled while it was being verified (the workflow's cancel, a heartbeat timeout, the worker's
      // shutdown): the body does not run, and the SDK reports the cancellation (found by review: it ran,
      // beside the attempt that replaced it).
      this.ctx.cancellationSignal.throwIfAborted();
      return await next(input);
    } catch (err) {
      // Completed later by whoever holds its task token (or its id): the record that ties this activity
      // and its user to the completion's record (`activity.complete`, `fail`, `cancel`), which names the
      // token by the same digest.
      if (err instanceof CompleteAsyncError) auditAsync(scope, taskTokenRef(info.taskToken));
      // A refusal raised by activity code is made non-retryable with its stable code instead of a
      // generic retryable error. Most were audited where they happened (resolveUserContext,
      // withUserScope, the worker's client); one raised where no auditor was at hand (a malformed
      // option, an invalid context handed to runAsUser) is recorded here, as the activity's.
      if (isUserContextError(err)) {
        if (!wasRecordedIn(err, scope)) auditRefusedByCode(scope, 'activity.execute', err);
        throw toApplicationFailure(err);
      }
      throw err;
    } finally {
      closeScope(scope);
    }
  }
}

/** The record of an activity that completes later, outside its body (`CompleteAsyncError`). */
function auditAsync(scope: ActivityScope, token: string): void {
  scope.auditor.emit({
    ...scope.audit,
    action: 'activity.async',
    decision: 'allow',
    source: scope.context ? 'header' : 'system',
    reason: 'ok',
    userId: scope.context?.userId,
    workspaceId: scope.context?.workspaceId,
    tokenId: scope.claims?.jti,
    detail: `completes later, by its id or by ${token}`,
  });
}
