import { isGrpcServiceError, type Client } from '@temporalio/client';
import { ErrorCodes, UserContextError } from '../context/errors.js';
import { SuccessCache } from './success-cache.js';

/** A run's lineage as the server records it. */
export interface ConfirmedLineage {
  /** The root workflow of the run's lineage. */
  root: string;
  /** When the first run of the root's execution chain started (epoch ms). */
  chainStart: number;
}

/** A workflow run, by ids. */
export interface RunRef {
  workflowId: string;
  runId: string;
}

type Description = Awaited<ReturnType<Client['workflowService']['describeWorkflowExecution']>>;

/** gRPC status codes of a lookup that is a verdict, not an outage: NOT_FOUND, INVALID_ARGUMENT. */
const VERDICT_CODES = new Set([5, 3]);
/** Runs whose lineage a worker keeps. */
const CACHE_SIZE = 10_000;

/** `DescribeWorkflowExecution` of one run; a missing or malformed run is a refusal, anything else rethrown. */
export async function describeRun(client: Client, run: RunRef, what: string): Promise<Description> {
  try {
    return await client.workflowService.describeWorkflowExecution({
      namespace: client.options.namespace,
      execution: { workflowId: run.workflowId, runId: run.runId },
    });
  } catch (err) {
    throw refusedLookup(err, what);
  }
}

/** A failed lookup of `what`: a refusal when the server's answer is a verdict, else the error as it is. */
export function refusedLookup(err: unknown, what: string): unknown {
  return isGrpcServiceError(err) && VERDICT_CODES.has(err.code)
    ? lineageRefusal(`${what} is not on the server`)
    : err;
}

/**
 * The lineage of `run` from the server's records: the root it names (a top-level run is its own) and
 * the start of the first run of the root's execution chain. One lookup for a top-level run that has
 * not continued as new (`described`, when the caller already has it, makes that none), up to three
 * otherwise. A chain whose first run is past retention cannot be dated: refused.
 */
export async function serverLineage(
  client: Client,
  run: RunRef,
  described?: Description,
): Promise<ConfirmedLineage> {
  const own = described ?? (await describeRun(client, run, 'the run'));
  const rootRef = own.workflowExecutionInfo?.rootExecution;
  const root: RunRef =
    rootRef?.workflowId && rootRef.runId ? { workflowId: rootRef.workflowId, runId: rootRef.runId } : run;
  const isRun = root.workflowId === run.workflowId && root.runId === run.runId;
  const rootInfo = isRun
    ? own.workflowExecutionInfo
    : (await describeRun(client, root, 'the lineage root')).workflowExecutionInfo;
  const firstRunId = rootInfo?.firstRunId || root.runId;
  const firstInfo =
    firstRunId === root.runId
      ? rootInfo
      : (
          await describeRun(
            client,
            { workflowId: root.workflowId, runId: firstRunId },
            "the first run of the root's chain",
          )
        ).workflowExecutionInfo;
  const started = firstInfo?.startTime;
  if (!started?.seconds) throw lineageRefusal("the server gives no start time for the root's chain");
  return {
    root: root.workflowId,
    chainStart: timestampMs(started),
  };
}

/**
 * The server's lineage of activity runs (`activityLineage: 'server'`), one lookup per run per worker:
 * the activity task names its run (server data), and the token is then checked against that run's
 * root and chain start instead of the `lin` facts its workflow wrote, which a workflow of a worker
 * without this plugin can forge (docs/wire-format.md, _Limits_). Only confirmations are cached.
 */
export class ActivityLineageCheck {
  private readonly confirmed = new SuccessCache<ConfirmedLineage>(CACHE_SIZE);

  confirm(client: Client, run: RunRef): Promise<ConfirmedLineage> {
    return this.confirmed.get(`${run.workflowId}\u0000${run.runId}`, () => serverLineage(client, run));
  }
}

/** Epoch milliseconds (floored) of a protobuf timestamp whose `seconds` may be a number or a Long. */
export function timestampMs(ts: { seconds?: unknown; nanos?: number | null }): number {
  return Number(ts.seconds) * 1000 + Math.floor((ts.nanos ?? 0) / 1e6);
}

/** `USER_CONTEXT_LINEAGE_MISMATCH` with `reason`. */
export function lineageRefusal(reason: string): UserContextError {
  return new UserContextError(ErrorCodes.LINEAGE_MISMATCH, reason);
}
