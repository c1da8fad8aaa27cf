import { ScheduleNotFoundError, WorkflowNotFoundError, type Client } from '@temporalio/client';
import { ErrorCodes, UserContextError } from '../context/errors.js';

export interface ScheduledRunCheckOptions {
  /**
   * Lookups of the schedule before a run it has not recorded is refused (default 5). The schedule
   * records a run just after starting it, so the run's first activity can ask before the record exists.
   */
  attempts?: number;
  /** Pause before the second lookup, in ms, doubled for each further one (default 100). */
  delayMs?: number;
  /** Confirmed runs kept in memory (default 10 000). */
  cacheSize?: number;
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
 * does not pass.
 *
 * One confirmation per run per worker is kept (keyed by the server-vouched run id of the caller); a
 * refusal is never cached. A lookup that fails for another reason than "not found" is rethrown as it
 * is, so the activity retries.
 */
export class ScheduledRunCheck {
  private readonly confirmed = new Map<string, Promise<void>>();
  private readonly attempts: number;
  private readonly delayMs: number;
  private readonly cacheSize: number;

  constructor(options: ScheduledRunCheckOptions = {}) {
    this.attempts = options.attempts ?? 5;
    this.delayMs = options.delayMs ?? 100;
    this.cacheSize = options.cacheSize ?? 10_000;
  }

  /**
   * Resolves when the schedule `scheduleId` started the execution chain rooted at `root`.
   * @param runKey The caller's run id (server-vouched); confirmations are cached per run.
   * @throws {@link UserContextError} `USER_CONTEXT_LINEAGE_MISMATCH` when it did not, or the schedule or
   *   the root no longer exists.
   */
  confirm(client: Client, scheduleId: string, root: string, runKey: string): Promise<void> {
    const key = `${scheduleId}\u0000${root}\u0000${runKey}`;
    const hit = this.confirmed.get(key);
    if (hit) return hit;
    const lookup = this.lookup(client, scheduleId, root);
    this.confirmed.set(key, lookup);
    lookup.then(
      () => {
        if (this.confirmed.size > this.cacheSize)
          this.confirmed.delete(this.confirmed.keys().next().value as string);
      },
      () => this.confirmed.delete(key),
    );
    return lookup;
  }

  private async lookup(client: Client, scheduleId: string, root: string): Promise<void> {
    const firstRunId = await this.firstRunIdOf(client, root);
    const schedule = client.schedule.getHandle(scheduleId);
    for (let attempt = 0; attempt < this.attempts; attempt++) {
      if (attempt > 0) await new Promise((resolve) => setTimeout(resolve, this.delayMs * 2 ** (attempt - 1)));
      let description;
      try {
        description = await schedule.describe();
      } catch (err) {
        if (err instanceof ScheduleNotFoundError) throw refusal('the schedule no longer exists');
        throw err;
      }
      const runs = [
        ...description.info.runningActions,
        ...description.info.recentActions.map((result) => result.action),
      ];
      if (runs.some((r) => r.workflow.workflowId === root && r.workflow.firstExecutionRunId === firstRunId))
        return;
    }
    throw refusal('the lineage is not a run its schedule started');
  }

  private async firstRunIdOf(client: Client, root: string): Promise<string> {
    try {
      const description = await client.workflow.getHandle(root).describe();
      const firstRunId = description.raw.workflowExecutionInfo?.firstRunId;
      if (!firstRunId) throw refusal('the server names no first run for the lineage root');
      return firstRunId;
    } catch (err) {
      if (err instanceof WorkflowNotFoundError) throw refusal('the lineage root does not exist');
      throw err;
    }
  }
}

function refusal(reason: string): UserContextError {
  return new UserContextError(ErrorCodes.LINEAGE_MISMATCH, reason);
}
