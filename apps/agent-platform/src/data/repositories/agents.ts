import { isUuid, iso, keysetPage, type Page, type PageRequest, type Scope } from './common.js';

export interface Agent {
  id: string;
  workspaceId: string;
  name: string;
  instructions: string;
  model: string;
  tools: string[];
  createdBy: string;
  createdAt: string;
  updatedAt: string;
}

export interface NewAgent {
  name: string;
  instructions?: string;
  model: string;
  tools?: readonly string[];
}

interface AgentRow {
  id: string;
  workspace_id: string;
  name: string;
  instructions: string;
  model: string;
  tools: string[];
  created_by: string;
  created_at: Date | string;
  updated_at: Date | string;
}

const COLUMNS =
  'id::text as id, workspace_id, name, instructions, model, tools, created_by, created_at, updated_at';

function toAgent(r: AgentRow): Agent {
  return {
    id: r.id,
    workspaceId: r.workspace_id,
    name: r.name,
    instructions: r.instructions,
    model: r.model,
    tools: r.tools,
    createdBy: r.created_by,
    createdAt: iso(r.created_at),
    updatedAt: iso(r.updated_at),
  };
}

/** Agents of the scope's workspace (the seed's `AgentRepository(session, userContext)`, on RLS). */
/**
 * SQLSTATEs of a delete the key refuses: `foreign_key_violation`, and `restrict_violation`, which
 * PGlite (and PostgreSQL, by version) report for `on delete restrict`.
 */
const KEY_REFUSALS: readonly unknown[] = ['23503', '23001'];

export class AgentRepository {
  constructor(private readonly scope: Scope) {}

  async create(input: NewAgent): Promise<Agent> {
    const { rows } = await this.scope.query<AgentRow>(
      `insert into agents (name, instructions, model, tools) values ($1, $2, $3, $4) returning ${COLUMNS}`,
      [input.name, input.instructions ?? '', input.model, [...(input.tools ?? [])]],
    );
    return toAgent(rows[0] as AgentRow);
  }

  async get(id: string): Promise<Agent | undefined> {
    if (!isUuid(id)) return undefined;
    const { rows } = await this.scope.query<AgentRow>(`select ${COLUMNS} from agents where id = $1`, [id]);
    return rows[0] ? toAgent(rows[0]) : undefined;
  }

  async list(limit = 100): Promise<Agent[]> {
    return (await this.page({ limit })).items;
  }

  /** A page of the workspace's agents, newest first ({@link keysetPage}). */
  async page(page: PageRequest): Promise<Page<Agent>> {
    return keysetPage(
      this.scope,
      { columns: COLUMNS, table: 'agents', where: 'true', values: [] },
      page,
      toAgent,
    );
  }

  /** Updates the given fields; `undefined` when the agent does not exist in this workspace. */
  async update(id: string, patch: Partial<NewAgent>): Promise<Agent | undefined> {
    if (!isUuid(id)) return undefined;
    const { rows } = await this.scope.query<AgentRow>(
      `update agents set name = coalesce($2, name), instructions = coalesce($3, instructions),
              model = coalesce($4, model), tools = coalesce($5, tools), updated_at = now()
        where id = $1 returning ${COLUMNS}`,
      [
        id,
        patch.name ?? null,
        patch.instructions ?? null,
        patch.model ?? null,
        patch.tools ? [...patch.tools] : null,
      ],
    );
    return rows[0] ? toAgent(rows[0]) : undefined;
  }

  /** True when a row was deleted (false for another workspace's agent: RLS hides it). */
  /**
   * Deletes an agent that has no runs: `deleted`, `missing`, or `in-use` (it has run records, which the
   * workspace keeps; the foreign key refuses such a delete too, migration 0005, as a backstop).
   */
  async delete(id: string): Promise<'deleted' | 'missing' | 'in-use'> {
    if (!isUuid(id)) return 'missing';
    const { rows } = await this.scope.query<{ runs: number }>(
      'select count(*)::int as runs from agent_runs where agent_id = $1',
      [id],
    );
    if ((rows[0]?.runs ?? 0) > 0) return 'in-use';
    // A run committed since the count makes the key refuse the delete: under a savepoint, so that the
    // refusal leaves the transaction usable and is answered like the count's.
    await this.scope.query('savepoint agent_delete');
    try {
      const { rowCount } = await this.scope.query('delete from agents where id = $1', [id]);
      await this.scope.query('release savepoint agent_delete');
      return rowCount > 0 ? 'deleted' : 'missing';
    } catch (err) {
      if (!KEY_REFUSALS.includes((err as { code?: unknown }).code)) throw err;
      await this.scope.query('rollback to savepoint agent_delete');
      return 'in-use';
    }
  }
}
