import { isUuid, iso, type Scope } from './common.js';

export type AgentRunStatus = 'pending' | 'running' | 'completed' | 'failed' | 'cancelled';

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
   * Records a run. The composite foreign key (workspace_id, agent_id) refuses an agent of another
   * workspace even though foreign-key checks bypass RLS.
   */
  async create(input: {
    agentId: string;
    workflowId?: string;
    runId?: string;
    input?: unknown;
  }): Promise<AgentRun> {
    const { rows } = await this.scope.query<AgentRunRow>(
      `insert into agent_runs (agent_id, workflow_id, run_id, input) values ($1, $2, $3, $4) returning ${COLUMNS}`,
      [
        input.agentId,
        input.workflowId ?? null,
        input.runId ?? null,
        input.input === undefined ? null : JSON.stringify(input.input),
      ],
    );
    return toRun(rows[0] as AgentRunRow);
  }

  async get(id: string): Promise<AgentRun | undefined> {
    if (!isUuid(id)) return undefined;
    const { rows } = await this.scope.query<AgentRunRow>(`select ${COLUMNS} from agent_runs where id = $1`, [
      id,
    ]);
    return rows[0] ? toRun(rows[0]) : undefined;
  }

  async findByWorkflowId(workflowId: string): Promise<AgentRun | undefined> {
    const { rows } = await this.scope.query<AgentRunRow>(
      `select ${COLUMNS} from agent_runs where workflow_id = $1 order by created_at desc limit 1`,
      [workflowId],
    );
    return rows[0] ? toRun(rows[0]) : undefined;
  }

  /** The workspace's runs, newest first (index agent_runs_workspace_idx). */
  async list(limit = 100): Promise<AgentRun[]> {
    const { rows } = await this.scope.query<AgentRunRow>(
      `select ${COLUMNS} from agent_runs order by created_at desc, id limit $1`,
      [limit],
    );
    return rows.map(toRun);
  }

  async listForAgent(agentId: string, limit = 100): Promise<AgentRun[]> {
    if (!isUuid(agentId)) return [];
    const { rows } = await this.scope.query<AgentRunRow>(
      `select ${COLUMNS} from agent_runs where agent_id = $1 order by created_at desc, id limit $2`,
      [agentId, limit],
    );
    return rows.map(toRun);
  }

  /** Sets status (and result/error); `undefined` when the run is not visible in this workspace. */
  async setStatus(
    id: string,
    status: AgentRunStatus,
    outcome: { result?: unknown; error?: string } = {},
  ): Promise<AgentRun | undefined> {
    if (!isUuid(id)) return undefined;
    const { rows } = await this.scope.query<AgentRunRow>(
      `update agent_runs set status = $2, result = coalesce($3::jsonb, result), error = coalesce($4, error),
              updated_at = now()
        where id = $1 returning ${COLUMNS}`,
      [
        id,
        status,
        outcome.result === undefined ? null : JSON.stringify(outcome.result),
        outcome.error ?? null,
      ],
    );
    return rows[0] ? toRun(rows[0]) : undefined;
  }
}
