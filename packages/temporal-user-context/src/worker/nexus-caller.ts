import type { Client } from '@temporalio/client';
import { ErrorCodes, UserContextError } from '../context/errors.js';
import {
  describeRun,
  lineageRefusal,
  serverLineage,
  type ConfirmedLineage,
  type RunRef,
} from './server-lineage.js';

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
  /** Endpoint name (Server 1.30+ routes it with the request). */
  endpoint: string;
  service: string;
  operation: string;
}

/**
 * How a Nexus handler treats callers it cannot confirm with the server (another namespace than its
 * client's): `'confirm'` refuses them; `{ trustLinksFrom }` accepts, on their links alone, callers whose
 * links name one of these namespaces.
 */
export type NexusCallerPolicy = 'confirm' | { readonly trustLinksFrom: readonly string[] };

/** The `nexusCallers` option as given, or `USER_CONTEXT_MISCONFIGURED`: only undefined means the default. */
export function nexusCallerPolicyOf(value: unknown): NexusCallerPolicy {
  if (value === undefined || value === 'confirm') return 'confirm';
  const list = (value as { trustLinksFrom?: unknown } | null)?.trustLinksFrom;
  if (
    typeof value === 'object' &&
    value !== null &&
    Object.keys(value).length === 1 &&
    Array.isArray(list) &&
    list.every((ns) => typeof ns === 'string' && ns.length > 0) &&
    new Set(list).size === list.length
  ) {
    return { trustLinksFrom: [...(list as string[])] };
  }
  throw new UserContextError(
    ErrorCodes.MISCONFIGURED,
    "nexusCallers must be 'confirm' or { trustLinksFrom: [namespace, ...] } (distinct namespaces)",
  );
}

/** Whether `policy` accepts, on its links alone, a caller whose links name `namespace`. */
export function trustsLinksFrom(policy: NexusCallerPolicy, namespace: string): boolean {
  return policy !== 'confirm' && policy.trustLinksFrom.includes(namespace);
}

/**
 * Pending states in which the server may be sending a request: `PENDING_NEXUS_OPERATION_STATE_SCHEDULED`
 * (a start attempt queued or in flight) and `_BLOCKED` (the endpoint's circuit breaker is not closed,
 * and while it is half-open the server still lets one attempt through).
 */
const START_PENDING = new Set([1, 4]);
/** The same for a cancel: `NEXUS_OPERATION_CANCELLATION_STATE_SCHEDULED` and `_BLOCKED`. */
const CANCEL_PENDING = new Set([1, 6]);
/** Resets of a caller that a cancel is followed through (each one more lookup). */
const MAX_RESETS = 5;

/**
 * Confirms with the Temporal server that a Nexus request comes from the workflow its links name, and
 * states that workflow's lineage from the server's records rather than from the caller's header.
 *
 * Why the links and the header are not enough: Server 1.32 attaches a correct link (the caller's
 * `NexusOperationScheduled` event), then applies the caller's own Nexus headers over it, so a caller
 * that writes a `nexus-link` header itself names any workflow it likes, and the lineage facts in our
 * header are the caller's to write as well (docs/wire-format.md, check 8). The facts only the server
 * writes: the named run's pending Nexus operations, its root, and when the root's execution chain
 * began. The request must be a start attempt of one of those operations (the scheduling event the
 * link names, this endpoint, service and operation, state SCHEDULED or BLOCKED), and the guard then
 * checks the token against the root and chain start stated here.
 *
 * What it leaves: while the named run has that very start attempt in flight, a second request forged
 * to name it passes too; it carries the lineage the genuine one carries. A chain whose first run is
 * past the namespace's retention cannot be dated, and is refused. A lookup that fails for another
 * reason than a verdict is rethrown as it is, so the request is retried. Nothing is cached. Returns
 * the server's lineage of `caller`; throws `USER_CONTEXT_LINEAGE_MISMATCH` when it is not confirmed.
 */
export async function confirmNexusCaller(
  client: Client,
  caller: NexusCaller,
  op: NexusOperationFacts,
): Promise<ConfirmedLineage> {
  if (caller.runId === undefined || caller.eventId === undefined)
    throw lineageRefusal('the Nexus request names no scheduling event of its caller');
  if (!op.endpoint) throw lineageRefusal('the server routed the Nexus request without its endpoint');
  const described = await describeRun(
    client,
    { workflowId: caller.workflowId, runId: caller.runId },
    'the named caller',
  );
  const inFlight = (described.pendingNexusOperations ?? []).some(
    (p) =>
      Number(p.scheduledEventId) === caller.eventId &&
      START_PENDING.has(p.state ?? 0) &&
      p.endpoint === op.endpoint &&
      p.service === op.service &&
      p.operation === op.operation,
  );
  if (!inFlight)
    throw lineageRefusal('the workflow the Nexus request names has no such start attempt in flight');
  return serverLineage(client, { workflowId: caller.workflowId, runId: caller.runId }, described);
}

/**
 * Confirms with the Temporal server that a Nexus **cancel** request comes from the run that holds the
 * operation, and states that run's lineage from the server's records.
 *
 * A cancel request carries no links (the server sends it with the headers of the operation's
 * scheduling event), and anyone who may call the endpoint can send one, with a header and an operation
 * token copied from history. The guard takes the caller's run from the sealed operation token
 * (`sealOperationToken`), which the guard itself wrote when the operation started. The facts only the
 * server writes: that run must hold this operation (the operation token, this endpoint, service and
 * operation) with a cancel request queued or in flight (state SCHEDULED, or BLOCKED while the
 * endpoint's circuit breaker lets a probe through). The guard then checks the token against the root
 * and chain start stated here, as for a start (check 8 of docs/wire-format.md).
 *
 * A caller reset after the operation started holds it in the run it was reset to: the guard follows
 * the server's `resetRunId` from the sealed run, up to {@link MAX_RESETS} times, and the run found
 * must hold the very same operation token.
 *
 * What it leaves: while that cancel request is pending, a second one forged to name it passes too; it
 * asks for what the caller asked. Returns the run that holds the cancel and its lineage; throws
 * `USER_CONTEXT_LINEAGE_MISMATCH` when the cancel is not confirmed, and rethrows a lookup failure that
 * is not a verdict, so the request is retried.
 */
export async function confirmNexusCancel(
  client: Client,
  sealed: RunRef,
  op: NexusOperationFacts & { token: string },
): Promise<ConfirmedLineage & { runId: string }> {
  if (!op.endpoint) throw lineageRefusal('the server routed the Nexus cancel without its endpoint');
  let run = sealed;
  let described = await describeRun(client, run, 'the run that started the operation');
  for (let resets = 0; ; resets++) {
    const requested = (described.pendingNexusOperations ?? []).some(
      (p) =>
        p.operationToken === op.token &&
        CANCEL_PENDING.has(p.cancellationInfo?.state ?? 0) &&
        p.endpoint === op.endpoint &&
        p.service === op.service &&
        p.operation === op.operation,
    );
    if (requested) return { runId: run.runId, ...(await serverLineage(client, run, described)) };
    const resetTo = described.workflowExtendedInfo?.resetRunId;
    if (!resetTo || resets === MAX_RESETS)
      throw lineageRefusal('the run that started the operation has no cancel of it in flight');
    run = { workflowId: run.workflowId, runId: resetTo };
    described = await describeRun(client, run, 'the run its caller was reset to');
  }
}
