import type { Scope } from './common.js';

/**
 * The schedules the API created in the scope's workspace (migration 0012), kept to hold the
 * workspace's schedule limit across API processes: Temporal's listing shows a new schedule only a while
 * after its create, and a deleted one a while after its delete.
 */
export class ScheduleRepository {
  constructor(private readonly scope: Scope) {}

  /**
   * Records schedule `scheduleId` (of agent `agentId`, when given) as about to be created, unless the
   * workspace is at `limit` (false) or the agent is not there (`agent-missing`); true when recorded.
   * With an idempotency key this user gave a create whose row is still counted, that create's schedule
   * instead (`prior`, whether its request had the same digest), whatever the limit.
   * Takes the workspace's schedule-create lock for the rest of the transaction, so that creates at the
   * same moment, in any API process, take turns and each counts the ones before it, and an agent's
   * delete ({@link namesAgent}) sees the row or the create sees the agent gone.
   *
   * Counts the workspace's rows not marked deleted, together with `listed` (the schedules Temporal lists
   * as the workspace's: those created before this table, or by another path) less those marked
   * deleted. First drops what is older than `staleAfterMs` (by the database's clock): rows Temporal
   * does not list (their schedule was deleted outside the API, or never created) and deletion marks.
   */
  async reserve(input: {
    scheduleId: string;
    agentId?: string;
    limit: number;
    listed: readonly string[];
    staleAfterMs: number;
    /** The create's idempotency key and the digest of its request (migration 0016). */
    idempotency?: { key: string; digest: string };
  }): Promise<boolean | 'agent-missing' | { prior: { scheduleId: string; sameRequest: boolean } }> {
    await this.lock();
    if (input.agentId !== undefined) {
      const agent = await this.scope.query(`select 1 from agents where id = $1`, [input.agentId]);
      if (agent.rowCount === 0) return 'agent-missing';
    }
    await this.scope.query(
      `delete from agent_schedules
        where coalesce(deleted_at, created_at) < now() - pg_catalog.make_interval(secs => $1)
          and (deleted_at is not null or not (schedule_id = any ($2::text[])))`,
      [input.staleAfterMs / 1000, input.listed],
    );
    // A schedule this user created with the same key, still counted: the retry's answer, not a new one.
    if (input.idempotency) {
      const { rows: prior } = await this.scope.query<{ schedule_id: string; request_digest: string }>(
        `select schedule_id, request_digest from agent_schedules
          where created_by = $1 and idempotency_key = $2 and deleted_at is null`,
        [this.scope.context.userId, input.idempotency.key],
      );
      if (prior[0])
        return {
          prior: {
            scheduleId: prior[0].schedule_id,
            sameRequest: prior[0].request_digest === input.idempotency.digest,
          },
        };
    }
    const { rows } = await this.scope.query<{ counted: number }>(
      `select count(*)::int as counted from (
         select schedule_id from agent_schedules where deleted_at is null
         union
         select listed from unnest($1::text[]) listed
          where not exists (select 1 from agent_schedules where schedule_id = listed)) s`,
      [input.listed],
    );
    if ((rows[0]?.counted ?? 0) >= input.limit) return false;
    await this.scope.query(
      `insert into agent_schedules (schedule_id, agent_id, idempotency_key, request_digest)
       values ($1, $2, $3, $4)`,
      [
        input.scheduleId,
        input.agentId ?? null,
        input.idempotency?.key ?? null,
        input.idempotency?.digest ?? null,
      ],
    );
    return true;
  }

  /**
   * Whether a schedule written in the last `recentMs` and not deleted names agent `agentId`: one
   * Temporal's listing may not show yet. Takes the schedule-create lock, so that a create either wrote
   * its row before this reads or sees the agent gone after the caller's delete commits. Older rows are
   * the listing's to show (a row whose schedule is gone must not keep the agent for good).
   */
  async namesAgent(agentId: string, recentMs: number): Promise<boolean> {
    await this.lock();
    const { rowCount } = await this.scope.query(
      `select 1 from agent_schedules
        where agent_id = $1 and deleted_at is null and created_at >= now() - pg_catalog.make_interval(secs => $2)`,
      [agentId, recentMs / 1000],
    );
    return (rowCount ?? 0) > 0;
  }

  /** The workspace's schedule-create lock, for the rest of the transaction. */
  private async lock(): Promise<void> {
    await this.scope.query(
      `select pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('agent_schedules:' || $1))`,
      [this.scope.context.workspaceId],
    );
  }

  /**
   * The schedules `userId` created in the workspace through the API in the last `recentMs` and not
   * marked deleted: what Temporal's listing may not show yet (it lists a new schedule a while after its
   * create). Older rows are the listing's to show: one whose schedule is gone names nothing to pause.
   */
  async createdBy(userId: string, recentMs: number): Promise<string[]> {
    const { rows } = await this.scope.query<{ schedule_id: string }>(
      `select schedule_id from agent_schedules
        where created_by = $1 and deleted_at is null and created_at >= now() - pg_catalog.make_interval(secs => $2)
        order by schedule_id`,
      [userId, recentMs / 1000],
    );
    return rows.map((r) => r.schedule_id);
  }

  /**
   * Marks schedule `scheduleId` deleted (or never created): not counted any longer, even while
   * Temporal's listing still shows it.
   */
  async markDeleted(scheduleId: string): Promise<void> {
    await this.scope.query(
      `update agent_schedules set deleted_at = now() where schedule_id = $1 and deleted_at is null`,
      [scheduleId],
    );
  }
}
