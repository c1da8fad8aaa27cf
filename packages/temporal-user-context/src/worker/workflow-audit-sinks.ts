import type { InjectedSinks } from '@temporalio/worker';
import type { WorkflowInfo } from '@temporalio/workflow';
import { REJECTED_BY_VALIDATOR, type AuditDecision, type IdentitySource } from '../audit/event.js';
import type { Auditor } from '../audit/sinks.js';
import type { ContextHeader } from '../header/wire.js';
import type { UserContextSinks } from '../workflow/interceptors.js';
import type { ContextVerifier } from './verifier.js';

/**
 * The Node side of the workflow interceptors' audit sink (`userContextAudit`): the sandbox reports what
 * it decided (actor-policy refusals and admissions, and acts for the originator), and the record is
 * written here, filed under the workflow's workspace once its originator verifies. Not called during
 * replay.
 */
export function workflowAuditSinks(
  auditor: Auditor,
  verifier: ContextVerifier,
): InjectedSinks<UserContextSinks> {
  const record = (
    info: WorkflowInfo,
    decision: AuditDecision,
    source: IdentitySource,
    action: string,
    reason: string,
    detail: string,
    originator: ContextHeader | undefined,
    /** The workflow acted for its originator: the record names the verified user too. */
    byOriginator = false,
  ) => {
    const emit = (workspaceId?: string, userId?: string) =>
      auditor.emit({
        action,
        decision,
        source,
        reason,
        detail,
        ...(userId === undefined ? {} : { userId }),
        ...(workspaceId === undefined ? {} : { workspaceId }),
        namespace: info.namespace,
        workflowId: info.workflowId,
        runId: info.runId,
        workflowType: info.workflowType,
      });
    if (originator === undefined) return emit();
    // Filed under the workflow's workspace, so that its admins see what was refused on their
    // workflow (a sender of another workspace, say): the workspace of the workflow's start token, once
    // it verifies as this very workflow's originator (bound to its root, in its start window: a token
    // copied into another workflow does not, threat-model case 6). A schedule token would also need
    // the server's word on the run (check 7), and so would a retry or cron run that started after its
    // token's window (check 5): such records stay unfiled. Not who acted (`userId`):
    // the sender is unverified.
    return verifier
      .verifyOriginator(originator, { namespace: info.namespace, workflowId: info.workflowId })
      .then(
        (verified) =>
          verified.claims.use === 'start'
            ? emit(verified.context.workspaceId, byOriginator ? verified.context.userId : undefined)
            : emit(),
        () => emit(),
      );
  };
  return {
    userContextAudit: {
      deny: {
        fn: (info, event) =>
          // A refusal by the actor policy judged pseudonyms nobody verified (a sender may write any):
          // recorded as such, like the policy's admissions, not as a verified header's.
          record(
            info,
            'deny',
            event.pseudonyms ? 'pseudonym' : 'header',
            event.action,
            event.code,
            event.pseudonyms
              ? `refused by the actor policy on unverified pseudonyms: ${event.detail ?? ''}: ${event.reason}`
              : event.detail
                ? `${event.detail}: ${event.reason}`
                : event.reason,
            event.originator,
          ),
        callDuringReplay: false,
      },
      allow: {
        fn: (info, event) =>
          record(
            info,
            'allow',
            'pseudonym',
            event.action,
            event.rejected === true && event.action === 'workflow.update' ? REJECTED_BY_VALIDATOR : 'ok',
            `admitted by the actor policy on unverified pseudonyms: ${event.detail}`,
            event.originator,
          ),
        callDuringReplay: false,
      },
      acted: {
        fn: (info, event) =>
          record(info, 'allow', 'header', event.action, 'ok', event.detail, event.originator, true),
        callDuringReplay: false,
      },
    },
  };
}
