import { Context } from '@temporalio/activity';
import { ApplicationFailure } from '@temporalio/common';
import { currentUserContext } from 'temporal-user-context';
import { withUserScope, type SqlDatabase, type UserScopeOptions } from 'temporal-user-context/postgres';
import { AgentRepository, AgentRunRepository, type AgentRunStatus } from './data/repositories/index.js';
import {
  acceptDecision,
  type AgentConfig,
  type AgentMessage,
  type ModelDecision,
  type ModelProvider,
} from './providers/index.js';

export interface ActivityDeps {
  db: SqlDatabase;
  provider: ModelProvider;
  /** Passed to withUserScope (auditor, app role). */
  scope?: Omit<UserScopeOptions, 'requireRole'>;
}

export interface DocumentHit {
  id: string;
  title: string;
  snippet: string;
}

export interface RunOutcome {
  runRecordId?: string;
  status: Extract<AgentRunStatus, 'completed' | 'failed' | 'cancelled'>;
  result?: unknown;
  error?: string;
}

/** Tools a model may call; each runs as its own activity. */
export const TOOLS = ['searchWorkspaceDocuments'] as const;

/**
 * The agent platform's activities. None takes a user context argument: each reads the verified one
 * with `currentUserContext()` (the plugin's activity guard refuses to run them without one) and does
 * all database work inside `withUserScope`, so row-level security and the live membership check apply.
 */
export function createActivities(deps: ActivityDeps) {
  const scoped = <T>(fn: Parameters<typeof withUserScope<T>>[2]) => {
    const info = Context.current().info;
    return withUserScope(deps.db, currentUserContext(), fn, {
      ...deps.scope,
      audit: {
        source: 'header',
        ...(info.workflowExecution ? { workflowId: workflowIdOf(info) } : {}),
        ...(info.workflowExecution ? { runId: info.workflowExecution?.runId ?? '' } : {}),
        ...(info.workflowType ? { workflowType: info.workflowType } : {}),
        activityType: info.activityType,
        activityId: info.activityId,
        attempt: info.attempt,
      },
    });
  };

  return {
    /** Loads the agent through RLS: another workspace's agent id is simply not found. */
    async buildAgentConfig(agentId: string): Promise<AgentConfig> {
      const agent = await scoped((tx) => new AgentRepository(tx).get(agentId));
      if (!agent) {
        throw ApplicationFailure.create({
          type: 'AGENT_NOT_FOUND',
          message: 'agent not found in this workspace',
          nonRetryable: true,
        });
      }
      return {
        agentId: agent.id,
        workspaceId: agent.workspaceId,
        name: agent.name,
        instructions: agent.instructions,
        model: agent.model,
        tools: agent.tools.filter((t) => (TOOLS as readonly string[]).includes(t)),
      };
    },

    /**
     * One model step. The membership is checked live before the provider sees anything, and the
     * model's answer is held to the agent's enabled tools.
     */
    async modelStep(agent: AgentConfig, messages: AgentMessage[]): Promise<ModelDecision> {
      await scoped(async () => undefined);
      return acceptDecision(agent, await deps.provider.step(agent, messages));
    },

    /**
     * The workspace-documents tool. The query names a workspace when the model asks for one, yet it runs
     * under RLS in the caller's workspace: another workspace's rows are invisible, so it gets nothing.
     */
    async searchWorkspaceDocuments(args: { query?: unknown; workspaceId?: unknown }): Promise<DocumentHit[]> {
      const query = typeof args.query === 'string' ? args.query.slice(0, 100) : '';
      const workspaceId = typeof args.workspaceId === 'string' ? args.workspaceId : null;
      const pattern = `%${query.replace(/[\\%_]/g, (c) => `\\${c}`)}%`;
      return scoped(async (tx) => {
        const { rows } = await tx.query<{ id: string; title: string; body: string }>(
          `select id::text as id, title, body from documents
            where ($1::text is null or workspace_id = $1) and (title ilike $2 or body ilike $2)
            order by created_at, id limit 20`,
          [workspaceId, pattern],
        );
        return rows.map((r) => ({ id: r.id, title: r.title, snippet: r.body.slice(0, 200) }));
      });
    },

    /** Stores the outcome on the run record (creating one for runs a schedule started). */
    async recordRunResult(outcome: RunOutcome): Promise<string> {
      const info = Context.current().info;
      return scoped(async (tx) => {
        const runs = new AgentRunRepository(tx);
        let id = outcome.runRecordId;
        if (!id) {
          const existing = await runs.findByWorkflowId(workflowIdOf(info));
          id = existing?.id;
        }
        if (!id) throw ApplicationFailure.nonRetryable('run record missing', 'RUN_NOT_FOUND');
        await runs.setStatus(id, outcome.status, {
          ...(outcome.result !== undefined ? { result: outcome.result } : {}),
          ...(outcome.error !== undefined ? { error: outcome.error } : {}),
        });
        return id;
      });
    },

    /** Creates the run record of a run a schedule started (API-started runs have one already). */
    async ensureRunRecord(agentId: string, input: string): Promise<string> {
      const info = Context.current().info;
      const workflowId = workflowIdOf(info);
      return scoped(async (tx) => {
        const runs = new AgentRunRepository(tx);
        const existing = await runs.findByWorkflowId(workflowId);
        if (existing) return existing.id;
        const created = await runs.create({
          agentId,
          workflowId,
          runId: info.workflowExecution?.runId ?? '',
          input: { input },
        });
        return created.id;
      });
    },
  };
}

export type AgentActivities = ReturnType<typeof createActivities>;

function workflowIdOf(info: { workflowExecution?: { workflowId: string } }): string {
  if (!info.workflowExecution) throw ApplicationFailure.nonRetryable('not in a workflow', 'RUN_NOT_FOUND');
  return info.workflowExecution.workflowId;
}
