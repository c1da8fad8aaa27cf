import { WorkflowNotFoundError, type Client } from '@temporalio/client';
import { ErrorCodes, UserContextError } from '../context/errors.js';

/** A Nexus request's caller as the request's links name it: caller-supplied, not server-vouched. */
export interface NexusCaller {
  namespace: string;
  workflowId: string;
  runId?: string;
  /** The caller's `NexusOperationScheduled` event, when the link names one. */
  eventId?: number;
}

/** What the handler knows of the operation from the server that routed the request to it. */
export interface NexusOperationFacts {
  /** Endpoint name; empty when the server does not say (before 1.30), and then not compared. */
  endpoint: string;
  service: string;
  operation: string;
}

/**
 * How a Nexus handler treats callers it cannot confirm with the server (another namespace than the
 * handler's client): `confirm` refuses them, `trust-links` accepts them on their links alone.
 */
export type NexusCallerPolicy = 'confirm' | 'trust-links';

/**
 * Confirms with the Temporal server that a Nexus request comes from the workflow its links name.
 *
 * Why the links are not enough: Server 1.32 attaches a correct link (the caller's
 * `NexusOperationScheduled` event), then applies the caller's own Nexus headers over it, so a caller
 * that writes a `nexus-link` header itself names any workflow it likes, and with `lin` from its own
 * header the token checks would compare only facts it wrote (docs/wire-format.md, check 8). The named
 * run's pending Nexus operations are a fact only the server writes: the request must be one of them
 * (the scheduling event the link names, with this endpoint, service and operation), and the run's root
 * must be the lineage root the header states.
 *
 * What it leaves: while the named run has that very operation pending, a second request forged to name
 * it passes too; it carries the lineage the genuine one carries. A lookup that fails for another reason
 * than "not found" is rethrown as it is, so the request is retried. Nothing is cached: every request is
 * a new operation.
 */
export class NexusCallerCheck {
  /**
   * Resolves when `caller`'s run has operation `op` pending at the event its link names and belongs to
   * the lineage rooted at `lineageRoot`.
   * @throws {@link UserContextError} `USER_CONTEXT_LINEAGE_MISMATCH` otherwise.
   */
  async confirm(
    client: Client,
    caller: NexusCaller,
    op: NexusOperationFacts,
    lineageRoot: string,
  ): Promise<void> {
    if (caller.runId === undefined || caller.eventId === undefined)
      throw refusal('the Nexus request names no scheduling event of its caller');
    let raw;
    try {
      ({ raw } = await client.workflow.getHandle(caller.workflowId, caller.runId).describe());
    } catch (err) {
      if (err instanceof WorkflowNotFoundError)
        throw refusal('the workflow the Nexus request names does not exist');
      throw err;
    }
    const pending = (raw.pendingNexusOperations ?? []).some(
      (p) =>
        Number(p.scheduledEventId) === caller.eventId &&
        p.service === op.service &&
        p.operation === op.operation &&
        (op.endpoint === '' || p.endpoint === op.endpoint),
    );
    if (!pending) throw refusal('the workflow the Nexus request names has no such operation pending');
    // A top-level run is its own root; the server names the root of any other.
    const root = raw.workflowExecutionInfo?.rootExecution?.workflowId || caller.workflowId;
    if (root !== lineageRoot) throw refusal('the calling workflow belongs to another lineage');
  }
}

function refusal(reason: string): UserContextError {
  return new UserContextError(ErrorCodes.LINEAGE_MISMATCH, reason);
}
