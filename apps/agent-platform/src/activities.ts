import { Context } from '@temporalio/activity';
import { ApplicationFailure } from '@temporalio/common';
import { currentUserContext, recordDecision } from 'temporal-user-context';
import { withUserScope, type SqlDatabase, type UserScopeOptions } from 'temporal-user-context/postgres';
import { AgentRepository, AgentRunRepository, type AgentRunStatus } from './data/repositories/index.js';
import {
  acceptDecision,
  storableText,
  type AgentConfig,
  type AgentMessage,
  type ModelDecision,
  type ModelProvider,
} from './providers/index.js';
import { MODEL_STEP_HEARTBEAT_MS, RunErrorCodes } from './workflows/run-policy.js';

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
  // The scope's audit records carry the activity's ids and token id: withUserScope's default inside a
  // plugin worker's activity.
  const scoped = <T>(fn: Parameters<typeof withUserScope<T>>[2]) =>
    withUserScope(deps.db, currentUserContext(), fn, deps.scope);

  /** The agent through RLS, inside a scope (live membership check): another workspace's id is not found. */
  const loadAgentConfig = async (agentId: string): Promise<AgentConfig> => {
    const agent = await scoped((tx) => new AgentRepository(tx).get(agentId));
    if (!agent) throw refused('agent.load', agentNotFound(), `agent ${agentId}`);
    return {
      agentId: agent.id,
      workspaceId: agent.workspaceId,
      name: agent.name,
      instructions: agent.instructions,
      model: agent.model,
      tools: agent.tools.filter((t) => (TOOLS as readonly string[]).includes(t)),
    };
  };

  /** One model step of the agent as it is now, its answer held to the tools enabled now. */
  const takeStep = async (
    agentId: string,
    messages: AgentMessage[],
    signal: AbortSignal,
  ): Promise<ModelDecision> => {
    const current = await loadAgentConfig(agentId);
    let decision: ModelDecision;
    try {
      decision = await deps.provider.step(current, messages, { signal });
    } catch (err) {
      // The provider refused the request (its model name, key, size) or answered something unusable:
      // no retry cures it, and the run fails with that code, on the trail.
      if (!(err instanceof ApplicationFailure && MODEL_FAILURES.has(err.type ?? ''))) throw err;
      throw refused('agent.model', err, `agent ${current.agentId} model ${JSON.stringify(current.model)}`);
    }
    try {
      return acceptDecision(current, decision);
    } catch (err) {
      // Arguments too large to carry, or no object, or an answer that is no text, whatever the provider.
      if (err instanceof ApplicationFailure && err.type === RunErrorCodes.MODEL_RESPONSE_INVALID)
        throw refused('agent.model', err, `agent ${current.agentId} model ${JSON.stringify(current.model)}`);
      // Only the refusal of a tool is a decision; anything else is an error.
      if (!(err instanceof ApplicationFailure && err.type === 'TOOL_NOT_ENABLED')) throw err;
      // A provider of our own checks the name is a string; another might not: never let that turn
      // the refusal into a TypeError.
      const tool = decision.type === 'tool_call' ? String(decision.tool).slice(0, 64) : '';
      throw refused('agent.tool', err, `agent ${current.agentId} tool ${JSON.stringify(tool)}`);
    }
  };

  return {
    /** Loads the agent through RLS: another workspace's agent id is simply not found. */
    async buildAgentConfig(agentId: string): Promise<AgentConfig> {
      return loadAgentConfig(agentId);
    },

    /**
     * One model step. The membership is checked live before the provider sees anything, and the agent
     * is read again: an admin's change (instructions, model, a tool turned off) applies from the next
     * step of every run, not from its next generation. The model's answer is held to the tools enabled
     * now. The configuration the workflow passes only names the agent.
     */
    async modelStep(agent: AgentConfig, messages: AgentMessage[]): Promise<ModelDecision> {
      const activity = Context.current();
      // Heartbeats from the start (the step has a heartbeat timeout), and while the provider works: a
      // cancellation of the step reaches the worker only in a heartbeat's answer, and aborts the
      // provider's request through the signal.
      activity.heartbeat();
      const beating = setInterval(() => activity.heartbeat(), MODEL_STEP_HEARTBEAT_MS);
      try {
        return await takeStep(agent.agentId, messages, activity.cancellationSignal);
      } finally {
        clearInterval(beating);
      }
    },

    /**
     * The workspace-documents tool. The query names a workspace when the model asks for one, yet it runs
     * under RLS in the caller's workspace: another workspace's rows are invisible, so it gets nothing.
     */
    async searchWorkspaceDocuments(args: { query?: unknown; workspaceId?: unknown }): Promise<DocumentHit[]> {
      // Model output: made storable, or PostgreSQL would refuse the parameters on every retry.
      const query = typeof args.query === 'string' ? storableText(args.query.slice(0, 100)) : '';
      const workspaceId = typeof args.workspaceId === 'string' ? storableText(args.workspaceId) : null;
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

    /**
     * Stores the outcome on the run record. The id comes from workflow input, which whoever starts a
     * workflow chooses: it is written only when the record belongs to the calling workflow (another
     * run's record in the same workspace is as good as missing: `RUN_NOT_FOUND`).
     */
    async recordRunResult(outcome: RunOutcome): Promise<string> {
      const workflowId = workflowIdOf(Context.current().info);
      return scoped(async (tx) => {
        const runs = new AgentRunRepository(tx);
        const id = outcome.runRecordId || (await runs.findByWorkflowId(workflowId))?.id;
        const fields = {
          ...(outcome.result !== undefined ? { result: outcome.result } : {}),
          ...(outcome.error !== undefined ? { error: outcome.error } : {}),
        };
        const written = id ? await runs.setStatus(id, outcome.status, fields, { workflowId }) : undefined;
        if (!written) throw refused('run.record', runNotFound(), `run record ${id ?? 'none'}`);
        return written.id;
      });
    },

    /**
     * The run record of the calling workflow, marked `running`: the record the API created
     * (`runRecordId`, accepted only when it is this workflow's) or, for runs a schedule started, the
     * one found or created for this workflow id.
     */
    async ensureRunRecord(agentId: string, input: string, runRecordId?: string): Promise<string> {
      const info = Context.current().info;
      const workflowId = workflowIdOf(info);
      const runId = info.workflowExecution?.runId ?? '';
      return scoped(async (tx) => {
        const runs = new AgentRunRepository(tx);
        const run = runRecordId
          ? await runs.getForWorkflow(runRecordId, workflowId)
          : await runs
              .ensureForWorkflow({ agentId, workflowId, runId, input: { input } })
              .catch((err: unknown) => {
                // The (workspace, agent) foreign key: the agent was deleted after the schedule that
                // starts this run was made (or never was in this workspace). No retry brings it back.
                if ((err as { code?: unknown }).code === '23503')
                  throw refused('run.claim', agentNotFound(), `agent ${agentId}`);
                throw err;
              });
        if (!run) throw refused('run.claim', runNotFound(), `run record ${runRecordId ?? 'none'}`);
        await runs.markRunning(run.id, runId);
        return run.id;
      });
    },
  };
}

export type AgentActivities = ReturnType<typeof createActivities>;

/** The model provider's failures that no retry cures (providers/openai.ts). */
const MODEL_FAILURES: ReadonlySet<string> = new Set([
  RunErrorCodes.MODEL_REJECTED,
  RunErrorCodes.MODEL_RESPONSE_INVALID,
]);

/**
 * An application refusal, recorded in the worker's audit trail (with the activity's ids and user) before
 * it fails the activity: ids of another workspace or another run show up there as what they are.
 */
function refused(action: string, failure: ApplicationFailure, detail: string): ApplicationFailure {
  try {
    recordDecision({ action, decision: 'deny', reason: failure.type ?? 'ERROR', detail });
  } catch (err) {
    // Outside a plugin worker's activity (a unit test without the guard) there is no trail to write
    // to: the refusal itself must still be what the activity fails with.
    console.error('agent-platform: could not record a refusal', err);
  }
  return failure;
}

function agentNotFound(): ApplicationFailure {
  return ApplicationFailure.create({
    type: 'AGENT_NOT_FOUND',
    message: 'agent not found in this workspace',
    nonRetryable: true,
  });
}

function runNotFound(): ApplicationFailure {
  return ApplicationFailure.create({
    type: 'RUN_NOT_FOUND',
    message: "run record missing, or not this workflow's",
    nonRetryable: true,
  });
}

function workflowIdOf(info: { workflowExecution?: { workflowId: string } }): string {
  if (!info.workflowExecution) throw ApplicationFailure.nonRetryable('not in a workflow', 'RUN_NOT_FOUND');
  return info.workflowExecution.workflowId;
}
