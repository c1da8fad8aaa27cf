/**
 * Run records brought up to date with Temporal. A run's workflow writes its own record, but a run
 * terminated or timed out runs no workflow code, a workflow's write can be refused or fail, and a start
 * can fail yet take effect: whoever looks at a run (or starts one at the workspace's limit) settles it.
 */
import { WorkflowNotFoundError, type WorkflowExecutionStatusName } from '@temporalio/client';
import type { FastifyRequest } from 'fastify';
import { isUserContextError } from 'temporal-user-context';
import { AgentRunRepository, type AgentRun, type RunRecordEnding } from '../data/repositories/index.js';
import type { AgentExecutionResult } from '../workflows/agent-execution.js';
import { RunErrorCodes } from '../workflows/run-policy.js';
import type { RouteContext } from './context.js';
import { notFound, outsideEnding, recordEndingOf, runEnding } from './problems.js';
import { SettleMemory } from './settle-memory.js';

/** Statuses after which nothing follows; CONTINUED_AS_NEW is not one (the chain goes on). */
export const FINAL_STATUSES: ReadonlySet<WorkflowExecutionStatusName> = new Set([
  'COMPLETED',
  'FAILED',
  'CANCELLED',
  'TERMINATED',
  'TIMED_OUT',
]);
/** Open run records a start at the limit brings up to date with Temporal, at most (see settleOpenRuns). */
const SETTLE_AT_ONCE = 10;

/** A run record with the id of its workflow. */
export type StartedRun = AgentRun & { workflowId: string };

/** What the run routes do with run records. */
export interface RunSettling {
  /** The caller's run by its record id (404 when there is none the caller may see). */
  loadRun(request: FastifyRequest<{ Params: { runId: string } }>): Promise<StartedRun>;
  /** A replayed run's record, brought up to date when Temporal has the run closed. */
  replayedRun(request: FastifyRequest, run: AgentRun): Promise<AgentRun>;
  /** The status of a run whose start was reported failed, when its workflow is there after all. */
  startedAfterAll(
    request: FastifyRequest,
    run: { workflowId: string | null; status: string },
  ): Promise<string | undefined>;
  /** Brings some of the workspace's open run records up to date: whether any changed. */
  settleOpenRuns(request: FastifyRequest): Promise<boolean>;
  /** Writes how a run ended on its record, when the record still says it is open. */
  reconcile(request: FastifyRequest, run: StartedRun, ending: RunRecordEnding | undefined): Promise<AgentRun>;
  /** `reconcile` with the ending Temporal reports for `status`. */
  settleRecord(
    request: FastifyRequest,
    run: StartedRun,
    status: WorkflowExecutionStatusName,
  ): Promise<AgentRun>;
}

export function createRunSettling(ctx: RouteContext): RunSettling {
  const { client, limits, temporalTimeoutMs, user, scoped, asUser } = ctx;

  /**
   * A replayed run's record, brought up to date when Temporal has the run closed; as it is when
   * Temporal does not answer now (the replay still answers from the record).
   */
  const replayedRun = async (request: FastifyRequest, run: AgentRun): Promise<AgentRun> => {
    if (!run.workflowId) return run;
    const withId = { ...run, workflowId: run.workflowId };
    try {
      const { status } = await asUser(request, () =>
        client.withDeadline(Date.now() + temporalTimeoutMs, () =>
          client.workflow.getHandle(withId.workflowId).describe(),
        ),
      );
      return await settleRecord(request, withId, status.name);
    } catch (err) {
      request.log.warn({ err, runId: run.id }, 'could not ask Temporal for a replayed run');
      return run;
    }
  };

  const loadRun = async (
    request: FastifyRequest<{ Params: { runId: string } }>,
  ): Promise<AgentRun & { workflowId: string }> => {
    const run = await scoped(request, (tx) => new AgentRunRepository(tx).get(request.params.runId));
    if (!run?.workflowId) throw notFound('run');
    return run as AgentRun & { workflowId: string };
  };

  /**
   * Brings up to {@link SETTLE_AT_ONCE} of the workspace's open run records up to date with Temporal,
   * those looked at least recently first (never, then the oldest look): a run closed in Temporal gets
   * the ending its workflow could not record ({@link settleRecord}: terminated, timed out, its own
   * write refused or failed), and a record whose workflow never started (the API stopped between the
   * record and the start) is marked failed once it is a minute old. Resolves to whether any record
   * changed. One settling per workspace at a time, whose outcome (never its error: that is its
   * caller's) starts refused meanwhile share, and none again within `limits.settlePauseMs` of one that
   * changed nothing: a member at the limit cannot turn refused starts into a stream of describes (and
   * of reads of closed runs' endings). Best effort: a run Temporal cannot describe now, or a write that
   * fails, leaves the record as it is.
   */
  const settleOpenRuns = (request: FastifyRequest): Promise<boolean> => {
    const { workspaceId } = user(request);
    const running = settling.get(workspaceId);
    if (running) return running;
    if (memory.pausing(workspaceId, Date.now())) return Promise.resolve(false);
    const settle = (async () => {
      const now = Date.now();
      const open = await scoped(request, (tx) => new AgentRunRepository(tx).listOpen(limits.openRuns));
      // Records no longer open are forgotten: the map holds at most the workspace's open ones.
      const looked = memory.looks(workspaceId, new Set(open.map((run) => run.id)));
      const due = open
        .filter((run) => run.workflowId)
        .sort((a, b) => (looked.get(a.id) ?? 0) - (looked.get(b.id) ?? 0))
        .slice(0, SETTLE_AT_ONCE);
      const settled = await Promise.all(
        due.map(async (run) => {
          looked.set(run.id, now);
          const withId = { ...run, workflowId: run.workflowId! };
          try {
            const description = await asUser(request, () =>
              client.workflow.getHandle(withId.workflowId).describe(),
            );
            return (await settleRecord(request, withId, description.status.name)) !== withId;
          } catch (err) {
            // A minute since the record was written, or reopened by a retry with its idempotency key.
            if (!(err instanceof WorkflowNotFoundError) || now - Date.parse(run.updatedAt) < 60_000)
              return false;
            // A record with a Temporal run id did start: its workflow is gone (past retention), not
            // unstarted.
            // Never started: marked only while still pending (a retry with its idempotency key may
            // have started it meanwhile, and its workflow marked it running).
            return scoped(request, (tx) => {
              const runs = new AgentRunRepository(tx);
              return run.runId
                ? runs.setStatus(run.id, 'failed', { error: RunErrorCodes.RUN_LOST })
                : runs.markStartFailed(run.id);
            }).then(
              () => true,
              (writeErr: unknown) => {
                request.log.warn({ err: writeErr, runId: run.id }, 'could not settle a run record');
                return false;
              },
            );
          }
        }),
      );
      const changed = settled.some(Boolean);
      memory.settled(workspaceId, changed, Date.now());
      return changed;
    })().finally(() => settling.delete(workspaceId));
    // Others share the outcome, never the error: it is this caller's (its membership gone meanwhile, a
    // database error), answered and recorded for this caller only.
    settling.set(
      workspaceId,
      settle.catch(() => false),
    );
    return settle;
  };
  /** Settlings in progress, by workspace. */
  const settling = new Map<string, Promise<boolean>>();
  /** When a workspace's last settling changed nothing, and when its open records were last looked at. */
  const memory = new SettleMemory(limits.settlePauseMs);

  /**
   * How a run Temporal reports closed (`status`) ended, as its record should say, read from Temporal as
   * the caller: a terminated or timed-out run's from its status alone, any other's from its result or
   * its failure. `undefined` for a run still open, or when Temporal does not tell now (logged).
   */
  const temporalEnding = async (
    request: FastifyRequest,
    workflowId: string,
    status: WorkflowExecutionStatusName,
  ): Promise<RunRecordEnding | undefined> => {
    const outside = outsideEnding(status);
    if (outside) return recordEndingOf(outside);
    if (!FINAL_STATUSES.has(status)) return undefined;
    try {
      const result = await asUser(request, () =>
        client.withDeadline(
          Date.now() + temporalTimeoutMs,
          () => client.workflow.getHandle(workflowId).result() as Promise<AgentExecutionResult>,
        ),
      );
      return recordEndingOf({ status: result.status, result });
    } catch (err) {
      const ending = runEnding(err);
      if (ending) return recordEndingOf(ending);
      request.log.warn({ err, workflowId }, 'could not read how a run ended');
      return undefined;
    }
  };

  /**
   * Writes how a run ended on its record, as the caller, when the record still says `pending` or
   * `running`: a terminated or timed-out run ran no workflow code to record it, and a workflow's own
   * write can be refused (its creator removed meanwhile) or fail (the database down past the activity's
   * retries). Until somebody looks, listings show the last recorded status, and the record counts as
   * open. Best effort: a read must not fail because this write did (it is logged, and tried again on
   * the next look).
   */
  const reconcile = async (
    request: FastifyRequest,
    run: AgentRun & { workflowId: string },
    ending: RunRecordEnding | undefined,
  ): Promise<AgentRun> => {
    if (!ending || (run.status !== 'pending' && run.status !== 'running')) return run;
    try {
      return await scoped(request, async (tx) => {
        const repo = new AgentRunRepository(tx);
        // Nothing updated: another request (or a late write of the workflow) got there first.
        return (await repo.markEnded(run.id, run.workflowId, ending)) ?? (await repo.get(run.id)) ?? run;
      });
    } catch (err) {
      // A refusal of the caller (removed, or the scope misconfigured) is the answer: found by review, a
      // member removed while waiting on a result was logged here and given the result.
      if (isUserContextError(err)) throw err;
      request.log.warn({ err, runId: run.id }, 'could not record the run ending on its record');
      return run;
    }
  };

  /** {@link reconcile} with the ending Temporal reports for `status` (read only for a record still open). */
  const settleRecord = async (
    request: FastifyRequest,
    run: AgentRun & { workflowId: string },
    status: WorkflowExecutionStatusName,
  ): Promise<AgentRun> =>
    run.status === 'pending' || run.status === 'running'
      ? reconcile(request, run, await temporalEnding(request, run.workflowId, status))
      : run;

  /**
   * The status a run whose start was reported failed answers with when its workflow is there after all
   * (the start took effect): `running` while it runs; once it ended, its record's, which stays `failed`
   * (`START_FAILED`) when the workflow ended before claiming it (GET settles only open records).
   * Undefined when Temporal does not have it.
   */
  const startedAfterAll = async (
    request: FastifyRequest,
    run: { workflowId: string | null; status: string },
  ): Promise<string | undefined> => {
    const { workflowId } = run;
    if (!workflowId) return undefined;
    try {
      const description = await asUser(request, () => client.workflow.getHandle(workflowId).describe());
      return description.status.name === 'RUNNING' ? 'running' : run.status;
    } catch (err) {
      if (err instanceof WorkflowNotFoundError) return undefined;
      throw err;
    }
  };

  return { loadRun, replayedRun, startedAfterAll, settleOpenRuns, reconcile, settleRecord };
}
