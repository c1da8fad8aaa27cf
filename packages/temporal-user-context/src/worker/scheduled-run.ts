import { ScheduleNotFoundError, WorkflowNotFoundError, type Client } from '@temporalio/client';
import { describeRun, lineageRefusal } from './server-lineage.js';
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
 * One confirmation per run per worker is kept (keyed by the server-vouched run id of the caller); a
 * refusal is never cached. A lookup that fails for another reason than "not found" is rethrown as it
 * is, so the activity retries. Only a root that started moments ago gets a few more lookups (see
 * {@link FRESH_ROOT_MS}); an older run that claims a schedule it does not belong to costs two calls.
 */
export class ScheduledRunCheck {
  private readonly confirmed = new SuccessCache<void>(CACHE_SIZE);

  /**
   * Resolves when the schedule `scheduleId` started the execution chain rooted at `root`.
   * @param runKey The caller's run id (server-vouched); confirmations are cached per run.
   * @throws {@link UserContextError} `USER_CONTEXT_LINEAGE_MISMATCH` when it did not, or the schedule or
   *   the root no longer exists.
   */
  confirm(
    client: Client,
    scheduleId: string,
    root: string,
    chainStart: number,
    runKey: string,
  ): Promise<void> {
    return this.confirmed.get(`${scheduleId}\u0000${root}\u0000${chainStart}\u0000${runKey}`, () =>
      this.lookup(client, scheduleId, root, chainStart),
    );
  }

  private async lookup(client: Client, scheduleId: string, root: string, chainStart: number): Promise<void> {
    const { firstRunId, startedAt, firstStartedAt } = await this.rootOf(client, root);
    if (firstStartedAt !== chainStart)
      throw lineageRefusal("the lineage is not the root's current execution chain");
    const lookups = Date.now() - startedAt < FRESH_ROOT_MS ? LOOKUPS : 1;
    const schedule = client.schedule.getHandle(scheduleId);
    for (let attempt = 0; attempt < lookups; attempt++) {
      if (attempt > 0)
        await new Promise((resolve) => setTimeout(resolve, FIRST_PAUSE_MS * 2 ** (attempt - 1)));
      let description;
      try {
        description = await schedule.describe();
      } catch (err) {
        if (err instanceof ScheduleNotFoundError) throw lineageRefusal('the schedule no longer exists');
        throw err;
      }
      const runs = [
        ...description.info.runningActions,
        ...description.info.recentActions.map((result) => result.action),
      ];
      if (runs.some((r) => r.workflow.workflowId === root && r.workflow.firstExecutionRunId === firstRunId))
        return;
    }
    throw lineageRefusal('the lineage is not a run its schedule started');
  }

  /**
   * The root's current execution chain: its first run id, when its latest run started, and when its
   * first run started (one more lookup when the chain has continued as new).
   */
  private async rootOf(
    client: Client,
    root: string,
  ): Promise<{ firstRunId: string; startedAt: number; firstStartedAt: number }> {
    let description;
    try {
      description = await client.workflow.getHandle(root).describe();
    } catch (err) {
      if (err instanceof WorkflowNotFoundError) throw lineageRefusal('the lineage root does not exist');
      throw err;
    }
    const info = description.raw.workflowExecutionInfo;
    const firstRunId = info?.firstRunId;
    if (!firstRunId) throw lineageRefusal('the server names no first run for the lineage root');
    const first =
      firstRunId === info?.execution?.runId
        ? info
        : (
            await describeRun(
              client,
              { workflowId: root, runId: firstRunId },
              "the first run of the root's chain",
            )
          ).workflowExecutionInfo;
    const started = first?.startTime;
    if (!started?.seconds) throw lineageRefusal("the server gives no start time for the root's chain");
    return {
      firstRunId,
      startedAt: description.startTime.getTime(),
      firstStartedAt: Number(started.seconds) * 1000 + Math.floor((started.nanos ?? 0) / 1e6),
    };
  }
}
