import { isGrpcServiceError, type Client } from '@temporalio/client';
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
  /** Endpoint name (Server 1.30+ routes it with the request). */
  endpoint: string;
  service: string;
  operation: string;
}

/** The lineage of a confirmed caller, as the server states it. */
export interface ConfirmedLineage {
  /** The root workflow of the caller's lineage. */
  root: string;
  /** When the first run of the root's execution chain started (epoch ms). */
  chainStart: number;
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
/** gRPC status codes of a lookup that is a verdict, not an outage: NOT_FOUND, INVALID_ARGUMENT. */
const VERDICT_CODES = new Set([5, 3]);

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
    throw refusal('the Nexus request names no scheduling event of its caller');
  if (!op.endpoint) throw refusal('the server routed the Nexus request without its endpoint');
  const described = await describe(client, caller.workflowId, caller.runId, 'the named caller');
  const inFlight = (described.pendingNexusOperations ?? []).some(
    (p) =>
      Number(p.scheduledEventId) === caller.eventId &&
      p.state === SCHEDULED &&
      p.endpoint === op.endpoint &&
      p.service === op.service &&
      p.operation === op.operation,
  );
  if (!inFlight) throw refusal('the workflow the Nexus request names has no such start attempt in flight');
  // The server names every run's root (a top-level run's is itself: then nothing more is looked up).
  const rootRef = described.workflowExecutionInfo?.rootExecution;
  const root =
    rootRef?.workflowId && rootRef.runId
      ? { workflowId: rootRef.workflowId, runId: rootRef.runId }
      : { workflowId: caller.workflowId, runId: caller.runId };
  const isCaller = root.workflowId === caller.workflowId && root.runId === caller.runId;
  const rootInfo = isCaller
    ? described.workflowExecutionInfo
    : (await describe(client, root.workflowId, root.runId, 'the lineage root')).workflowExecutionInfo;
  const firstRunId = rootInfo?.firstRunId || root.runId;
  const firstInfo =
    firstRunId === root.runId
      ? rootInfo
      : (await describe(client, root.workflowId, firstRunId, "the first run of the root's chain"))
          .workflowExecutionInfo;
  const started = firstInfo?.startTime;
  if (!started?.seconds) throw refusal("the server gives no start time for the root's chain");
  return {
    root: root.workflowId,
    chainStart: Number(started.seconds) * 1000 + Math.floor((started.nanos ?? 0) / 1e6),
  };
}

async function describe(client: Client, workflowId: string, runId: string, what: string) {
  try {
    return await client.workflowService.describeWorkflowExecution({
      namespace: client.options.namespace,
      execution: { workflowId, runId },
    });
  } catch (err) {
    if (isGrpcServiceError(err) && VERDICT_CODES.has(err.code)) throw refusal(`${what} is not on the server`);
    throw err;
  }
}

function refusal(reason: string): UserContextError {
  return new UserContextError(ErrorCodes.LINEAGE_MISMATCH, reason);
}
