import { RunErrorCodes } from '../../workflows/run-policy.js';
import { isUuid, iso, keysetPage, type Page, type PageRequest, type Scope } from './common.js';

export type AgentRunStatus = 'pending' | 'running' | 'completed' | 'failed' | 'cancelled';

/** How a run ended, as its record says it: a result (`completed`, `cancelled`) or a code (`failed`, `cancelled`). */
export interface RunRecordEnding {
  status: 'completed' | 'failed' | 'cancelled';
  result?: unknown;
  error?: string;
}

export interface AgentRun {
  id: string;
  workspaceId: string;
  agentId: string;
  workflowId: string | null;
  runId: string | null;
  status: AgentRunStatus;
  input: unknown;
  result: unknown;
  error: string | null;
  createdBy: string;
  createdAt: string;
  updatedAt: string;
}

interface AgentRunRow {
  id: string;
  workspace_id: string;
  agent_id: string;
  workflow_id: string | null;
  run_id: string | null;
  status: AgentRunStatus;
  input: unknown;
  result: unknown;
  error: string | null;
  created_by: string;
  created_at: Date | string;
  updated_at: Date | string;
}

const COLUMNS =
  'id::text as id, workspace_id, agent_id::text as agent_id, workflow_id, run_id, status, input, result, error, created_by, created_at, updated_at';

function toRun(r: AgentRunRow): AgentRun {
  return {
    id: r.id,
    workspaceId: r.workspace_id,
    agentId: r.agent_id,
    workflowId: r.workflow_id,
    runId: r.run_id,
    status: r.status,
    input: r.input,
    result: r.result,
    error: r.error,
    createdBy: r.created_by,
    createdAt: iso(r.created_at),
    updatedAt: iso(r.updated_at),
  };
}

/** Runs of agents in the scope's workspace. */
export class AgentRunRepository {
  constructor(private readonly scope: Scope) {}

  /**
   * Runs of the workspace pending or running, counted up to `limit` (enough to say "at the limit"),
   * after taking the workspace's run-start lock for the rest of the transaction: two starts at once
   * take turns, so that both cannot count below the limit and both insert.
   */
  async countOpenLocked(limit: number): Promise<number> {
    await this.scope.query(
      `select pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('agent_runs:' || $1))`,
      [this.scope.context.workspaceId],
    );
    const { rows } = await this.scope.query<{ open: number }>(
      `select count(*)::int as open from (
         select 1 from agent_runs where status in ('pending', 'running') limit $1) o`,
      [limit],
    );
    return rows[0]?.open ?? 0;
  }

  /** Up to `limit` runs of the workspace pending or running, oldest first. */
  async listOpen(limit: number): Promise<AgentRun[]> {
    const { rows } = await this.scope.query<AgentRunRow>(
      `select ${COLUMNS} from agent_runs where status in ('pending', 'running') order by created_at limit $1`,
      [limit],
    );
    return rows.map(toRun);
  }

  /**
   * Records a run. The composite foreign key (workspace_id, agent_id) refuses an agent of another
   * workspace even though foreign-key checks bypass RLS.
   */
  async create(input: {
    agentId: string;
    workflowId?: string;
    runId?: string;
    input?: unknown;
    /** The start request's idempotency key, with the digest of the request ({@link findByIdempotencyKey}). */
    idempotency?: { key: string; digest: string };
  }): Promise<AgentRun> {
    const { rows } = await this.scope.query<AgentRunRow>(
      `insert into agent_runs (agent_id, workflow_id, run_id, input, idempotency_key, request_digest)
       values ($1, $2, $3, $4, $5, $6) returning ${COLUMNS}`,
      [
        input.agentId,
        input.workflowId ?? null,
        input.runId ?? null,
        input.input === undefined ? null : JSON.stringify(input.input),
        input.idempotency?.key ?? null,
        input.idempotency?.digest ?? null,
      ],
    );
    return toRun(rows[0] as AgentRunRow);
  }

  /**
   * The run the scope's user started with idempotency key `key` (migration 0015), and the digest of the
   * request it came with; keys are the user's own in the workspace.
   */
  async findByIdempotencyKey(key: string): Promise<{ run: AgentRun; digest: string } | undefined> {
    const { rows } = await this.scope.query<AgentRunRow & { request_digest: string }>(
      `select ${COLUMNS}, request_digest from agent_runs
        where created_by = $1 and idempotency_key = $2`,
      [this.scope.context.userId, key],
    );
    return rows[0] ? { run: toRun(rows[0]), digest: rows[0].request_digest } : undefined;
  }

  async get(id: string): Promise<AgentRun | undefined> {
    if (!isUuid(id)) return undefined;
    const { rows } = await this.scope.query<AgentRunRow>(`select ${COLUMNS} from agent_runs where id = $1`, [
      id,
    ]);
    return rows[0] ? toRun(rows[0]) : undefined;
  }

  /**
   * The run record of workflow `workflowId`, created (as `pending`) if it has none. One statement
   * against the unique (workspace_id, workflow_id) constraint (migration 0004), so two overlapping
   * calls — an activity attempt that timed out but still commits, and its retry — get the same row.
   * `undefined` when the workflow's record was written by another user or for another agent.
   */
  async ensureForWorkflow(input: {
    agentId: string;
    workflowId: string;
    runId?: string;
    input?: unknown;
  }): Promise<AgentRun | undefined> {
    const { rows } = await this.scope.query<AgentRunRow>(
      `insert into agent_runs (agent_id, workflow_id, run_id, input) values ($1, $2, $3, $4)
         on conflict (workspace_id, workflow_id) do nothing returning ${COLUMNS}`,
      [
        input.agentId,
        input.workflowId,
        input.runId ?? null,
        input.input === undefined ? null : JSON.stringify(input.input),
      ],
    );
    if (rows[0]) return toRun(rows[0]);
    // The conflicting row is committed (the insert waited for it) and in this workspace.
    const existing = await this.findByWorkflowId(input.workflowId);
    if (!existing) throw new Error('run record conflict without a visible row');
    // Only a record this user wrote for this agent (an earlier attempt's): another member could have
    // written one first for the workflow id a schedule's run will take, with an input of theirs.
    return existing.createdBy === this.scope.context.userId && existing.agentId === input.agentId
      ? existing
      : undefined;
  }

  /** Run `id`, only when it is the record of workflow `workflowId`. */
  async getForWorkflow(id: string, workflowId: string): Promise<AgentRun | undefined> {
    if (!isUuid(id)) return undefined;
    const { rows } = await this.scope.query<AgentRunRow>(
      `select ${COLUMNS} from agent_runs where id = $1 and workflow_id = $2`,
      [id, workflowId],
    );
    return rows[0] ? toRun(rows[0]) : undefined;
  }

  /**
   * Marks a run `failed` with `START_FAILED` after its start call failed, only while it is still
   * `pending`: a start that failed ambiguously (a deadline) may have started the workflow, which may
   * have marked its record `running` first.
   */
  async markStartFailed(id: string): Promise<AgentRun | undefined> {
    if (!isUuid(id)) return undefined;
    const { rows } = await this.scope.query<AgentRunRow>(
      `update agent_runs set status = 'failed', error = $2, updated_at = now()
        where id = $1 and status = 'pending' returning ${COLUMNS}`,
      [id, RunErrorCodes.START_FAILED],
    );
    return rows[0] ? toRun(rows[0]) : undefined;
  }

  /**
   * Puts a record whose start failed (`START_FAILED`) back to `pending`, for a retry with its idempotency
   * key to start it: it counts as open again from now on. `undefined` when it is no longer so.
   */
  async reopenStartFailed(id: string): Promise<AgentRun | undefined> {
    if (!isUuid(id)) return undefined;
    const { rows } = await this.scope.query<AgentRunRow>(
      `update agent_runs set status = 'pending', error = null, updated_at = now()
        where id = $1 and status = 'failed' and error = $2 returning ${COLUMNS}`,
      [id, RunErrorCodes.START_FAILED],
    );
    return rows[0] ? toRun(rows[0]) : undefined;
  }

  /**
   * Marks a run `running` once its workflow really runs, clearing an error written before (the API's
   * `START_FAILED` when the start call failed after the server had started the workflow) and filling in
   * the Temporal run id. A run that already completed, was cancelled, or failed for any other reason
   * (an ending the API recorded, `RUN_TERMINATED`, if a claim that was under way commits late) keeps
   * that status.
   */
  async markRunning(id: string, runId?: string): Promise<AgentRun | undefined> {
    if (!isUuid(id)) return undefined;
    const { rows } = await this.scope.query<AgentRunRow>(
      `update agent_runs set status = 'running', error = null, run_id = coalesce(run_id, $2), updated_at = now()
        where id = $1 and (status in ('pending', 'running') or (status = 'failed' and error = $3))
        returning ${COLUMNS}`,
      [id, runId ?? null, RunErrorCodes.START_FAILED],
    );
    return rows[0] ? toRun(rows[0]) : undefined;
  }

  /**
   * Records an ending the workflow did not record: one it could not (terminated, timed out: its code
   * stops running; `failed` with the code) or whose write was refused or failed (its result, or its
   * failure's code). Only a record still `pending` or `running`, and only the record of `workflowId`:
   * an ending the workflow did record is never overwritten.
   */
  async markEnded(id: string, workflowId: string, ending: RunRecordEnding): Promise<AgentRun | undefined> {
    if (!isUuid(id)) return undefined;
    const { rows } = await this.scope.query<AgentRunRow>(
      `update agent_runs set status = $3, result = coalesce($4::jsonb, result), error = $5, updated_at = now()
        where id = $1 and workflow_id = $2 and status in ('pending', 'running') returning ${COLUMNS}`,
      [
        id,
        workflowId,
        ending.status,
        ending.result === undefined ? null : JSON.stringify(ending.result),
        ending.error ?? null,
      ],
    );
    return rows[0] ? toRun(rows[0]) : undefined;
  }

  /** One row at most: RLS limits it to the scope's workspace, where the workflow id is unique (0004). */
  async findByWorkflowId(workflowId: string): Promise<AgentRun | undefined> {
    const { rows } = await this.scope.query<AgentRunRow>(
      `select ${COLUMNS} from agent_runs where workflow_id = $1`,
      [workflowId],
    );
    return rows[0] ? toRun(rows[0]) : undefined;
  }

  /** The workspace's runs, newest first (index agent_runs_page_idx). */
  async list(limit = 100): Promise<AgentRun[]> {
    return (await this.page({ limit })).items;
  }

  async listForAgent(agentId: string, limit = 100): Promise<AgentRun[]> {
    return (await this.page({ limit }, agentId)).items;
  }

  /** A page of the workspace's runs (of one agent, when given), newest first ({@link keysetPage}). */
  async page(page: PageRequest, agentId?: string): Promise<Page<AgentRun>> {
    if (agentId !== undefined && !isUuid(agentId)) return { items: [] };
    return keysetPage(
      this.scope,
      agentId === undefined
        ? { columns: COLUMNS, table: 'agent_runs', where: 'true', values: [] }
        : { columns: COLUMNS, table: 'agent_runs', where: 't.agent_id = $3', values: [agentId] },
      page,
      toRun,
    );
  }

  /**
   * Sets status (and result/error); `undefined` when the run is not visible in this workspace or, with
   * `only.workflowId`, is not that workflow's record. `error` is replaced, not kept: an error from an
   * earlier status (a failed start of a workflow that did start) must not outlive a later completion.
   */
  async setStatus(
    id: string,
    status: AgentRunStatus,
    outcome: { result?: unknown; error?: string } = {},
    only: { workflowId?: string } = {},
  ): Promise<AgentRun | undefined> {
    if (!isUuid(id)) return undefined;
    const { rows } = await this.scope.query<AgentRunRow>(
      `update agent_runs set status = $2, result = coalesce($3::jsonb, result), error = $4, updated_at = now()
        where id = $1 and ($5::text is null or workflow_id = $5) returning ${COLUMNS}`,
      [
        id,
        status,
        outcome.result === undefined ? null : JSON.stringify(outcome.result),
        outcome.error ?? null,
        only.workflowId ?? null,
      ],
    );
    return rows[0] ? toRun(rows[0]) : undefined;
  }
}
