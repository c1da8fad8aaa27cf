import type { Client } from '@temporalio/client';
import { ErrorCodes, UserContextError } from '../context/errors.js';
import {
  describeLatestRun,
  describeRun,
  lineageRefusal,
  serverLineage,
  type ConfirmedLineage,
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
    list.every((ns) => typeof ns === 'string' && ns.length > 0)
  ) {
    return { trustLinksFrom: [...(list as string[])] };
  }
  throw new UserContextError(
    ErrorCodes.MISCONFIGURED,
    "nexusCallers must be 'confirm' or { trustLinksFrom: [namespace, ...] }",
  );
}

/** Whether `policy` accepts, on its links alone, a caller whose links name `namespace`. */
export function trustsLinksFrom(policy: NexusCallerPolicy, namespace: string): boolean {
  return policy !== 'confirm' && policy.trustLinksFrom.includes(namespace);
}

/** `PENDING_NEXUS_OPERATION_STATE_SCHEDULED`: a start attempt queued or in flight. */
const SCHEDULED = 1;
/** `NEXUS_OPERATION_CANCELLATION_STATE_SCHEDULED`: a cancel attempt queued or in flight. */
const CANCEL_SCHEDULED = 1;

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
 * link names, this endpoint, service and operation, state SCHEDULED), and the guard then checks the
 * token against the root and chain start stated here.
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
      p.state === SCHEDULED &&
      p.endpoint === op.endpoint &&
      p.service === op.service &&
      p.operation === op.operation,
  );
  if (!inFlight)
    throw lineageRefusal('the workflow the Nexus request names has no such start attempt in flight');
  return serverLineage(client, { workflowId: caller.workflowId, runId: caller.runId }, described);
}

/** A caller confirmed by the server: its run and that run's lineage. */
export interface ConfirmedCaller extends ConfirmedLineage {
  runId: string;
}

/**
 * Confirms with the Temporal server that a Nexus **cancel** request comes from the workflow that holds
 * the operation, and states that workflow's lineage from the server's records.
 *
 * A cancel request carries no links. The server sends it with the headers of the operation's
 * scheduling event, so the caller is the workflow that our header's lineage names (`lin.wf`), and
 * anyone who may call the endpoint can send a cancel with a header and an operation token copied from
 * history. The facts only the server writes: the current run of that workflow must hold this
 * operation (the operation token, this endpoint, service and operation) with a cancel request in
 * flight (state SCHEDULED). The guard then checks the token against the root and chain start stated
 * here, as for a start (check 8 of docs/wire-format.md).
 *
 * What it leaves: while that cancel request is in flight, a second one forged to name it passes too;
 * it asks for what the caller asked. A caller that closes or continues as new before its cancel is
 * delivered no longer holds the operation, so that cancel is refused (the SDK does not promise to
 * deliver it then either). Returns the caller's run and lineage; throws
 * `USER_CONTEXT_LINEAGE_MISMATCH` when the cancel is not confirmed, and rethrows a lookup failure that
 * is not a verdict, so the request is retried.
 */
export async function confirmNexusCancel(
  client: Client,
  workflowId: string,
  op: NexusOperationFacts & { token: string },
): Promise<ConfirmedCaller> {
  if (!op.endpoint) throw lineageRefusal('the server routed the Nexus cancel without its endpoint');
  const described = await describeLatestRun(client, workflowId);
  const runId = described.workflowExecutionInfo?.execution?.runId;
  if (!runId) throw lineageRefusal('the server names no run of the workflow the Nexus cancel names');
  const requested = (described.pendingNexusOperations ?? []).some(
    (p) =>
      p.operationToken === op.token &&
      p.cancellationInfo?.state === CANCEL_SCHEDULED &&
      p.endpoint === op.endpoint &&
      p.service === op.service &&
      p.operation === op.operation,
  );
  if (!requested)
    throw lineageRefusal('the workflow the Nexus cancel names has no cancel of this operation in flight');
  const run = { workflowId, runId };
  return { runId, ...(await serverLineage(client, run, described)) };
}
