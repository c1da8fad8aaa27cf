import { ScheduleNotFoundError, WorkflowNotFoundError, type Client } from '@temporalio/client';
import { ErrorCodes, isUserContextError } from '../context/errors.js';
import { scheduledRunTime } from '../context/scheduled-run-id.js';
import type { ScheduledAction } from '../crypto/claims.js';
import {
  describeRun,
  lineageRefusal,
  refusedLookup,
  startArgsDigest,
  timestampMs,
  withLookupDeadline,
} from './server-lineage.js';
import { SuccessCache } from './success-cache.js';

/** Lookups of the schedule before a fresh run it has not recorded yet is refused. */
const LOOKUPS = 5;
/** Pause before the second lookup, doubled for each further one (0.1 + 0.2 + 0.4 + 0.8 s at most). */
const FIRST_PAUSE_MS = 100;
/**
 * A root that started longer ago than this must already be in the schedule's record: the schedule
 * records a run just after starting it, so only a run's first activities can ask before the record
 * exists. Older roots are decided on the first lookup.
 */
const FRESH_ROOT_MS = 30_000;
/** Confirmed runs kept per worker. */
const CACHE_SIZE = 10_000;
/** How long a run's confirmation is kept before the schedule is asked again. */
const CONFIRMATION_TTL_MS = 60_000;
/**
 * How long after issuing a schedule token its schedule may have been created: the edge issues the token
 * in the `create` call itself, just before asking the server. Generous, because the server's older
 * (workflow-based) scheduler records the creation time only when its own workflow first runs, which a
 * backlog of the server's internal worker delays.
 */
const CREATE_WINDOW_MS = 10 * 60_000;

/**
 * Whether the time a scheduled run's id names (`<action id>-<RFC 3339 time>`, the server's naming) is
 * later than now: a schedule names a run by the time it was due, never a time to come, so such a run
 * is no late-recorded one.
 */
function scheduledInFuture(root: string, skewMs: number): boolean {
  const due = scheduledRunTime(root);
  return Number.isFinite(due) && due > Date.now() + skewMs + 60_000;
}

/** The root's current execution chain, as {@link ScheduledRunCheck} reads it from the server. */
interface Chain {
  firstRunId: string;
  /** When its latest run started (epoch ms). */
  startedAt: number;
  /** When its first run started, unless that run is past retention. */
  firstStartedAt: number | undefined;
  /** The first run's workflow type and task queue (the latest run's past retention). */
  workflowType: string;
  taskQueue: string;
}

/**
 * A run younger than 30 s that its schedule has not recorded yet, after a few lookups: not a refusal
 * (the attempt is retried by the activity's retry policy; audited with reason `ERROR`). The same run
 * still unrecorded once older is refused with `USER_CONTEXT_LINEAGE_MISMATCH`.
 */
export class ScheduledRunNotRecordedError extends Error {
  constructor() {
    super('the schedule has not recorded this run yet; retry');
    this.name = 'ScheduledRunNotRecordedError';
  }
}

/**
 * Confirms with the Temporal server that a lineage whose token is a schedule token was started by that
 * schedule.
 *
 * Why the token and the lineage facts are not enough: a schedule token says that its creator asked for
 * the runs of one schedule, and every run carries a copy of it, readable by anyone who reads history.
 * The facts that name a run as scheduled are not the server's alone: a client may set the
 * `TemporalScheduledById` search attribute when it starts a workflow, and may take any free workflow id
 * of the scheduled shape `<action id>-<time>`. The schedule's own record of the runs it started (its
 * running and recent actions, each with the first run id of its execution chain) is a fact only the
 * server writes. The lineage's root must be one of those runs, and the root's current execution chain
 * must be the one the schedule started, so that a workflow id reused after the scheduled run closed
 * does not pass. And the lineage must be that very chain: its chain start (the `lin.start` its
 * workflows carry, or the server's with `activityLineage: 'server'`) must be when that chain's first
 * run started. Otherwise a run that took the id *before* the schedule did (then closed, leaving an
 * abandoned child behind) would pass once the schedule starts its own run of that id (a backfill or a
 * trigger), because the id's latest chain is then the schedule's.
 *
 * One confirmation per run per worker is kept for a minute (keyed by the server-vouched run id of the
 * caller), then the schedule is asked again; a refusal is never cached. A lookup the server refuses the
 * worker is a {@link LookupRefusedError}; one that fails for another reason than "not found" is
 * rethrown as it is; the activity retries either. Only a root that started moments ago gets a few
 * more lookups (see {@link FRESH_ROOT_MS}), and then a retryable {@link ScheduledRunNotRecordedError}
 * rather than a refusal; an older run that claims a schedule it does not belong to costs two calls.
 */
export class ScheduledRunCheck {
  private readonly confirmed: SuccessCache<void>;
  /** Digests of first runs' arguments, by root and first run id: a run's input never changes. */
  private readonly startDigests = new SuccessCache<string>(CACHE_SIZE);

  /**
   * @param skewMs clock skew tolerated between the edge and the server (the verifier's).
   * @param confirmationTtlMs how long a run's confirmation is kept (default a minute): then the
   *   schedule is asked again, so that a run's activities stop passing once the schedule is deleted or
   *   the run has left its recent actions.
   */
  constructor(
    private readonly skewMs: number,
    confirmationTtlMs = CONFIRMATION_TTL_MS,
  ) {
    this.confirmed = new SuccessCache<void>(CACHE_SIZE, confirmationTtlMs);
  }

  /**
   * Resolves when the schedule `scheduleId`, created when the token was issued (`issuedAt`, its `iat`),
   * started the execution chain rooted at `root` that the lineage (`chainStart`) belongs to.
   * @param runKey The caller's run id (server-vouched); confirmations are cached per run.
   * @param action What the token binds of the schedule's action (tokens issued since it does): the
   *   chain's first run must have had this workflow type and task queue and been started with these
   *   arguments.
   * @throws {@link UserContextError} `USER_CONTEXT_LINEAGE_MISMATCH` when it did not, or the schedule or
   *   the root no longer exists.
   */
  confirm(
    client: Client,
    scheduleId: string,
    root: string,
    chainStart: number,
    issuedAt: number,
    runKey: string,
    action?: ScheduledAction,
  ): Promise<void> {
    return this.confirmed.get(
      `${scheduleId}\u0000${root}\u0000${chainStart}\u0000${issuedAt}\u0000${runKey}\u0000${action?.workflowType ?? ''}\u0000${action?.taskQueue ?? ''}\u0000${action?.argsDigest ?? ''}`,
      () => this.lookup(client, scheduleId, root, chainStart, issuedAt, action),
    );
  }

  private async lookup(
    client: Client,
    scheduleId: string,
    root: string,
    chainStart: number,
    issuedAt: number,
    action: ScheduledAction | undefined,
  ): Promise<void> {
    const chain = await this.rootOf(client, root);
    const { firstRunId, firstStartedAt, workflowType, taskQueue } = chain;
    // What the schedule was created to run (the token's `wt`, `tq`): an update that kept the creator's
    // header but changed the workflow type or queue does not run as the creator.
    if (action && (workflowType !== action.workflowType || taskQueue !== action.taskQueue))
      throw lineageRefusal(
        "the run's workflow type or task queue is not the one its schedule was created with",
      );
    // Runs of the chain the schedule started (its first run, retries, continued runs, their children)
    // carry a chain start at or after its first run's: a lineage that started earlier is another chain.
    if (firstStartedAt !== undefined && chainStart < firstStartedAt)
      throw lineageRefusal("the lineage started before the root's current execution chain");
    await this.recordedBySchedule(client, scheduleId, root, chainStart, issuedAt, chain);
    // Started with the arguments the schedule was created with (the token's `ad`), compared once the
    // schedule vouched for the run: the chain's first run is the one the schedule started (later runs
    // continue as new with whatever arguments workflow code gives them).
    if (action?.argsDigest === undefined) return;
    if (firstStartedAt === undefined)
      throw lineageRefusal(
        "the first run of the root's chain is past retention: its arguments cannot be compared",
      );
    const digest = await this.startDigests.get(`${root}\u0000${firstRunId}`, () =>
      startArgsDigest(client, { workflowId: root, runId: firstRunId }),
    );
    if (digest !== action.argsDigest)
      throw lineageRefusal("the run's arguments are not the ones its schedule was created with");
  }

  /**
   * Resolves when the schedule `scheduleId`, the one created with the token, lists the execution chain
   * rooted at `root` (`chain`, as {@link rootOf} found it) among the runs it started; else refuses, or
   * after a few lookups fails retryable for a fresh run (see {@link ScheduledRunCheck}).
   */
  private async recordedBySchedule(
    client: Client,
    scheduleId: string,
    root: string,
    chainStart: number,
    issuedAt: number,
    { firstRunId, firstStartedAt, startedAt }: Chain,
  ): Promise<void> {
    // Fresh by the chain's first run, which is what the schedule records (a chain that keeps continuing
    // as new would otherwise stay fresh for ever). The start is the server's time, the age this worker's:
    // within the skew tolerated, a worker clock ahead of the server's must not age a fresh run (found by
    // review: 29 s ahead, a run of 2 s was refused for good instead of retried).
    const age = Date.now() - (firstStartedAt ?? startedAt);
    const lookups = age < FRESH_ROOT_MS + this.skewMs ? LOOKUPS : 1;
    let otherChain = false;
    const schedule = client.schedule.getHandle(scheduleId);
    for (let attempt = 0; attempt < lookups; attempt++) {
      if (attempt > 0)
        await new Promise((resolve) => setTimeout(resolve, FIRST_PAUSE_MS * 2 ** (attempt - 1)));
      let description;
      try {
        description = await withLookupDeadline(client, () => schedule.describe());
      } catch (err) {
        if (err instanceof ScheduleNotFoundError) throw lineageRefusal('the schedule no longer exists');
        throw refusedLookup(err, 'the schedule');
      }
      // The token was issued for this schedule, not for an earlier one of the same id: a deleted
      // schedule's token (readable in its runs' history) must not drive a schedule re-created under its
      // id by someone else. The server's creation time must follow the token's issue at once.
      const created = description.info.createdAt.getTime();
      if (
        created < issuedAt * 1000 - this.skewMs ||
        created > issuedAt * 1000 + 1000 + this.skewMs + CREATE_WINDOW_MS
      )
        throw lineageRefusal(
          `the schedule was not created with this token (created ${new Date(created).toISOString()}, ` +
            `token issued ${new Date(issuedAt * 1000).toISOString()})`,
        );
      const recorded = (r: { workflow: { workflowId: string; firstExecutionRunId: string } }) =>
        r.workflow.workflowId === root && r.workflow.firstExecutionRunId === firstRunId;
      const recent = description.info.recentActions.find((result) => recorded(result.action));
      if (recent || description.info.runningActions.some(recorded)) {
        // The chain's first run is past retention: date the chain by when the schedule took the action
        // (a second of slack: the scheduler notes the time, then starts the run).
        if (firstStartedAt === undefined) {
          // Listed only as running (out of the ten recent actions), it has no time to be dated by: a
          // lineage claiming an earlier chain of the same id could not be told apart. Refused.
          if (!recent)
            throw lineageRefusal(
              "the lineage cannot be dated: its chain's first run is past retention and the schedule " +
                'no longer lists when it started it',
            );
          if (chainStart < recent.takenAt.getTime() - 1000)
            throw lineageRefusal('the lineage started before the schedule started its root');
        }
        return;
      }
      // Not recorded, and the schedule started this id as another chain: the id was taken again after
      // its run closed, or the schedule itself named two runs alike (due in the same second) and has not
      // recorded the second yet. Looked up again, but no retry after that.
      const sameId = (a: { workflow: { workflowId: string } }) => a.workflow.workflowId === root;
      if (
        description.info.recentActions.some((r) => sameId(r.action)) ||
        description.info.runningActions.some(sameId)
      )
        otherChain = true;
    }
    if (otherChain) throw lineageRefusal('the schedule started another execution chain of this workflow id');
    // A run of moments ago that the schedule has not recorded yet (a busy server's scheduler records it
    // late): not a verdict. The attempt fails retryable, so that the activity's retry policy asks again;
    // once the run is older than FRESH_ROOT_MS, one lookup decides.
    if (lookups > 1 && !scheduledInFuture(root, this.skewMs)) throw new ScheduledRunNotRecordedError();
    throw lineageRefusal('the lineage is not a run its schedule started');
  }

  /**
   * The root's current execution chain: its first run id, when its latest run started, and when its
   * first run started (one more lookup when the chain has continued as new).
   */
  private async rootOf(client: Client, root: string): Promise<Chain> {
    let description;
    try {
      description = await withLookupDeadline(client, () => client.workflow.getHandle(root).describe());
    } catch (err) {
      if (err instanceof WorkflowNotFoundError) throw lineageRefusal('the lineage root does not exist');
      throw refusedLookup(err, 'the lineage root');
    }
    const info = description.raw.workflowExecutionInfo;
    const firstRunId = info?.firstRunId;
    if (!firstRunId) throw lineageRefusal('the server names no first run for the lineage root');
    // A continued chain's first run may be past retention: then it cannot be dated here (undefined).
    const first =
      firstRunId === info?.execution?.runId
        ? info
        : await describeRun(
            client,
            { workflowId: root, runId: firstRunId },
            "the first run of the root's chain",
          )
            .then((d) => d.workflowExecutionInfo)
            .catch((err: unknown) => {
              // Not on the server: past retention. A lookup refused the worker is no such verdict.
              if (isUserContextError(err, ErrorCodes.LINEAGE_MISMATCH)) return undefined;
              throw err;
            });
    const started = first?.startTime;
    return {
      firstRunId,
      startedAt: description.startTime.getTime(),
      firstStartedAt: started?.seconds ? timestampMs(started) : undefined,
      // The run the schedule started is the chain's first: later runs may continue as new into another
      // type or queue, legally. Past retention, the latest run's stand in (docs/wire-format.md, _Limits_).
      workflowType: first?.type?.name || description.type,
      taskQueue: first?.taskQueue || description.taskQueue,
    };
  }
}
