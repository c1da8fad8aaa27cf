import { isGrpcServiceError, type Client } from '@temporalio/client';
import { arrayFromPayloads, type Payload, type SerializationContext } from '@temporalio/common';
import type { temporal } from '@temporalio/proto';
import { ErrorCodes, UserContextError, isUserContextError } from '../context/errors.js';
import { argsDigest } from '../crypto/args-digest.js';
import type { ContextClaims } from '../crypto/claims.js';
import type { ContextHeader, Lineage } from '../header/wire.js';
import { SuccessCache } from './success-cache.js';

/** A run's lineage as the server records it. */
export interface ConfirmedLineage {
  /** The root workflow of the run's lineage. */
  root: string;
  /** When the first run of the root's execution chain started (epoch ms). */
  chainStart: number;
  /** The first run of the root's execution chain: its id, workflow type and task queue. */
  firstRunId: string;
  workflowType: string;
  taskQueue: string;
}

/** A workflow run, by ids. */
export interface RunRef {
  workflowId: string;
  runId: string;
}

type Description = Awaited<ReturnType<Client['workflowService']['describeWorkflowExecution']>>;

/** gRPC status codes of a lookup that is a verdict, not an outage: NOT_FOUND, INVALID_ARGUMENT. */
const VERDICT_CODES = new Set([5, 3]);
/** gRPC status codes of a lookup the server refused the worker: PERMISSION_DENIED, UNAUTHENTICATED. */
const FORBIDDEN_CODES: ReadonlyMap<number, LookupRefusedError['status']> = new Map([
  [7, 'PERMISSION_DENIED'],
  [16, 'UNAUTHENTICATED'],
]);
/** Runs whose lineage a worker keeps. */
const CACHE_SIZE = 10_000;

/**
 * How long one lookup of the server's records may take. Without a deadline of its own a lookup waits
 * for the SDK core's default (30 s, reported as `CANCELLED`), and an activity's check makes up to ten of
 * them in turn (found by review): a slow cluster held an attempt for minutes, past heartbeat timeouts.
 * A lookup past it fails the attempt retryable, as any outage.
 */
export const LOOKUP_TIMEOUT_MS = 10_000;

/** `fn`'s calls of the server with the lookup's deadline ({@link LOOKUP_TIMEOUT_MS}). */
export function withLookupDeadline<T>(client: Client, fn: () => Promise<T>): Promise<T> {
  return client.withDeadline(Date.now() + LOOKUP_TIMEOUT_MS, fn);
}

/** `DescribeWorkflowExecution` of one run; a missing or malformed run is a refusal, anything else rethrown. */
export async function describeRun(client: Client, run: RunRef, what: string): Promise<Description> {
  try {
    return await withLookupDeadline(client, () =>
      client.workflowService.describeWorkflowExecution({
        namespace: client.options.namespace,
        execution: { workflowId: run.workflowId, runId: run.runId },
      }),
    );
  } catch (err) {
    throw refusedLookup(err, what);
  }
}

/**
 * A lookup of the server's records that the server refused this worker (`PERMISSION_DENIED`,
 * `UNAUTHENTICATED`): the worker's configuration, not a verdict on the context, and one an operator can
 * mend while the run waits. Not a `UserContextError`, so that no list of this library's codes
 * (`nonRetryableErrorTypes`) makes it final: the activity or Nexus operation fails its attempt
 * retryable (audited with reason `ERROR` and the gRPC status, logged with this message), and the next attempt asks again.
 */
export class LookupRefusedError extends Error {
  override readonly name = 'LookupRefusedError';

  constructor(
    /** The gRPC status the server answered with. */
    readonly status: 'PERMISSION_DENIED' | 'UNAUTHENTICATED',
    what: string,
    options?: { cause?: unknown },
  ) {
    super(
      `the server refused this worker a lookup of ${what} (${status}): it needs permission to describe ` +
        'workflows and schedules and to read history in its namespace',
      options,
    );
  }
}

/**
 * A failed lookup of `what`: a refusal when the server's answer is a verdict (NOT_FOUND,
 * INVALID_ARGUMENT); a {@link LookupRefusedError} when the server refused the worker the lookup, also
 * wrapped in the client's `ServiceError`; else the error as it is (retried).
 */
export function refusedLookup(err: unknown, what: string): unknown {
  if (isUserContextError(err)) return err;
  if (isGrpcServiceError(err) && VERDICT_CODES.has(err.code))
    return lineageRefusal(`${what} is not on the server`);
  const status = forbiddenStatusOf(err);
  return status === undefined ? err : new LookupRefusedError(status, what, { cause: err });
}

/** PERMISSION_DENIED or UNAUTHENTICATED when `err` or an error it wraps (`cause`) is one. */
function forbiddenStatusOf(err: unknown): LookupRefusedError['status'] | undefined {
  for (let e = err, depth = 0; e instanceof Error && depth < 4; e = e.cause, depth++)
    if (isGrpcServiceError(e)) return FORBIDDEN_CODES.get(e.code);
  return undefined;
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
    firstRunId,
    workflowType: firstInfo?.type?.name ?? '',
    taskQueue: firstInfo?.taskQueue ?? '',
  };
}

/**
 * `header` with the lineage the server stated in place of the one its workflow wrote: root and chain
 * start and, for a start token that binds its root's start (`wt`), how the chain's first run started:
 * its workflow type and task queue, its cron schedule, retry policy (whether it has one) and start
 * delay (its start event: one history read per chain, kept in `starts`) and, when the token binds
 * arguments (`ad`), the digest of its input. A first run past retention cannot be read, and is
 * refused.
 */
export async function withServerLineage(
  client: Client,
  header: ContextHeader,
  lineage: ConfirmedLineage,
  claims: Pick<ContextClaims, 'use' | 'wt' | 'ad'>,
  starts: FirstRunStarts,
): Promise<ContextHeader> {
  const lin: { -readonly [K in keyof Lineage]?: Lineage[K] } = Object.assign({}, header.lin, {
    root: lineage.root,
    start: lineage.chainStart,
  });
  if (claims.use === 'start' && claims.wt !== undefined) {
    const firstRun = { workflowId: lineage.root, runId: lineage.firstRunId };
    // The digest first: its read of the start event serves the facts too.
    if (claims.ad !== undefined) lin.ad = await starts.digest(client, firstRun);
    const first = await starts.facts(client, firstRun);
    lin.wt = lineage.workflowType;
    lin.tq = lineage.taskQueue;
    delete lin.cr;
    delete lin.dl;
    delete lin.rp;
    if (first.retried) lin.rp = 1;
    // A cron run's first task waits for its tick, not for a start delay.
    if (first.cronSchedule) lin.cr = first.cronSchedule;
    else lin.dl = first.backoffMs;
  }
  return Object.assign({}, header, { lin: lin as Lineage });
}

type StartedAttributes = temporal.api.history.v1.IWorkflowExecutionStartedEventAttributes;

const key = (run: RunRef) => `${run.workflowId}\u0000${run.runId}`;

function factsOf(started: StartedAttributes): StartFacts {
  return {
    ...(started.cronSchedule ? { cronSchedule: started.cronSchedule } : {}),
    // Absent means none (the server writes it for every start).
    backoffMs: started.firstWorkflowTaskBackoff ? timestampMs(started.firstWorkflowTaskBackoff) : 0,
    retried: Boolean(started.retryPolicy),
  };
}

/** What a run's start event says of when and how often it runs. */
export interface StartFacts {
  cronSchedule?: string;
  /** `firstWorkflowTaskBackoff` in ms: the start delay, or a cron run's wait for its tick. */
  backoffMs: number;
  /** Whether the run has a workflow retry policy. */
  retried: boolean;
}

/**
 * What start events say (one history read per chain per worker) and the digests of runs' input, for
 * start tokens that bind their root's start (check 10). Only those facts are kept, not the events.
 */
export class FirstRunStarts {
  private readonly starts = new SuccessCache<StartFacts>(CACHE_SIZE);
  private readonly digests = new SuccessCache<string>(CACHE_SIZE);

  facts(client: Client, run: RunRef): Promise<StartFacts> {
    return this.starts.get(key(run), async () => factsOf(await firstStart(client, run)));
  }

  digest(client: Client, run: RunRef): Promise<string> {
    return this.digests.get(key(run), async () => {
      const started = await firstStart(client, run);
      // The same read gives the facts (errors of that are the digest's: the loader only maps fields).
      void this.starts.get(key(run), () => Promise.resolve(factsOf(started)));
      return inputDigest(client, run, started);
    });
  }
}

/**
 * The server's lineage of activity runs (`activityLineage: 'server'`), one lookup per run per worker:
 * the activity task names its run (server data), and the token is then checked against that run's
 * root and chain start instead of the `lin` facts its workflow wrote, which a workflow of a worker
 * without this plugin can forge (docs/wire-format.md, _Limits_). Only confirmations are cached.
 */
export class ActivityLineageCheck {
  private readonly confirmed = new SuccessCache<ConfirmedLineage>(CACHE_SIZE);
  /** How the chains' first runs started, for tokens that bind their root's start. */
  readonly starts = new FirstRunStarts();

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

/**
 * The digest ({@link argsDigest}) of the arguments `run` was started with, decoded by the worker's own
 * data converter as the SDK decodes a workflow's input: its codecs in reverse order, then its payload
 * converter, in the run's serialization context. A payload that does not decode is a refusal.
 */
export async function startArgsDigest(client: Client, run: RunRef): Promise<string> {
  return inputDigest(client, run, await firstStart(client, run));
}

/** The start event of `run` (one history read); a run the server does not show is a refusal. */
async function firstStart(client: Client, run: RunRef): Promise<StartedAttributes> {
  let history;
  try {
    history = await withLookupDeadline(client, () =>
      client.workflowService.getWorkflowExecutionHistory({
        namespace: client.options.namespace,
        execution: run,
        maximumPageSize: 1,
      }),
    );
  } catch (err) {
    throw refusedLookup(err, "the first run of the root's chain");
  }
  const started = history.history?.events?.[0]?.workflowExecutionStartedEventAttributes;
  if (!started) throw lineageRefusal("the server shows no start of the root's chain");
  return started;
}

/** {@link startArgsDigest} of a start event already read. */
async function inputDigest(client: Client, run: RunRef, started: StartedAttributes): Promise<string> {
  const { namespace, loadedDataConverter: converter } = client.options;
  const context: SerializationContext = { type: 'workflow', namespace, workflowId: run.workflowId };
  // Named by its code or class only: a payload converter's message may quote the payload (JSON.parse's
  // does), and the reason goes to the audit trail.
  const unreadable = (err: unknown) =>
    lineageRefusal(
      `the run's arguments cannot be read (${isUserContextError(err) ? err.code : err instanceof Error ? err.name : typeof err})`,
    );
  let payloads = (started.input?.payloads ?? []) as Payload[];
  try {
    for (const codec of [...converter.payloadCodecs].reverse())
      payloads = await codec.decode(payloads, context);
  } catch (err) {
    // A codec's refusal is a verdict; anything else (a remote codec's outage) is retried.
    throw isUserContextError(err) ? unreadable(err) : err;
  }
  try {
    return argsDigest(arrayFromPayloads(converter.payloadConverter, payloads, context));
  } catch (err) {
    throw unreadable(err);
  }
}
