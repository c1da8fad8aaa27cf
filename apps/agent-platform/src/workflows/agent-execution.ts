import {
  ActivityFailure,
  ApplicationFailure,
  allHandlersFinished,
  condition,
  continueAsNew,
  defineQuery,
  defineSignal,
  defineUpdate,
  patched,
  proxyActivities,
  setHandler,
  workflowInfo,
} from '@temporalio/workflow';
import { ErrorCodes, verifyActor } from 'temporal-user-context/workflow';
import type { AgentActivities, DocumentHit } from '../activities.js';
import { REVISE_PROMPT, type AgentMessage } from '../providers/types.js';

export const TASK_QUEUE = 'agent-tasks';
export const MAX_INSTRUCTION_LENGTH = 2000;
export const DEFAULT_STEPS_PER_RUN = 20;

export interface AgentExecutionInput {
  agentId: string;
  input: string;
  /** The agent_runs row the API created (absent for scheduled runs: the workflow creates one). */
  runRecordId?: string;
  /** Keep the conversation open this long after an answer for more instructions (default 0, max 3600). */
  followUpSeconds?: number;
  /** Continue-as-new after this many model steps in one run (default 20). */
  maxStepsPerRun?: number;
  /** State carried across continue-as-new. */
  carried?: CarriedState;
}

export interface CarriedState {
  messages: AgentMessage[];
  steps: number;
  toolCalls: number;
  instructions: InstructionRecord[];
  pending: string[];
  generation: number;
  answer?: string;
  runRecordId: string;
}

export interface InstructionRecord {
  text: string;
  addedBy: string;
}

export type RunStatus = 'starting' | 'running' | 'waiting' | 'completed' | 'cancelled';

export interface Progress {
  status: RunStatus;
  steps: number;
  toolCalls: number;
  generation: number;
  instructions: InstructionRecord[];
  answer?: string;
}

export interface AgentExecutionResult {
  status: 'completed' | 'cancelled';
  answer?: string;
  steps: number;
  toolCalls: number;
  instructions: InstructionRecord[];
}

export const cancelSignal = defineSignal<[reason?: string]>('cancel');
export const addInstructionUpdate = defineUpdate<{ accepted: true; pending: number }, [string]>(
  'addInstruction',
);
export const progressQuery = defineQuery<Progress>('progress');

const nonRetryableErrorTypes = [...Object.values(ErrorCodes), 'AGENT_NOT_FOUND', 'RUN_NOT_FOUND'];
const acts = proxyActivities<AgentActivities>({
  startToCloseTimeout: '90s',
  retry: { maximumAttempts: 3, nonRetryableErrorTypes },
});

/**
 * The seed's AgentExecutionWorkflow. It never receives a user context argument: every activity runs as
 * the verified originator the plugin carries (continue-as-new included).
 */
export async function AgentExecutionWorkflow(params: AgentExecutionInput): Promise<AgentExecutionResult> {
  const maxSteps = Math.min(Math.max(Math.trunc(params.maxStepsPerRun ?? DEFAULT_STEPS_PER_RUN), 1), 200);
  const followUpMs = Math.min(Math.max(params.followUpSeconds ?? 0, 0), 3600) * 1000;
  const state: CarriedState = params.carried ?? {
    messages: [{ role: 'user', content: params.input }],
    steps: 0,
    toolCalls: 0,
    instructions: [],
    pending: [],
    generation: 0,
    runRecordId: params.runRecordId ?? '',
  };
  let status: RunStatus = params.carried ? 'running' : 'starting';
  let cancelled = false;
  let finished = false;

  setHandler(cancelSignal, async () => {
    // The sandbox policy compared pseudonyms it cannot verify: verify the sender before acting on it.
    // A forged or replayed actor header is refused here and the signal changes nothing.
    try {
      await verifyActor();
    } catch {
      return;
    }
    cancelled = true;
  });
  setHandler(
    addInstructionUpdate,
    async (text) => {
      // Who added it, verified by the worker (the plugin already refused other workspaces).
      const actor = await verifyActor();
      state.pending.push(text.trim());
      state.instructions.push({ text: text.trim(), addedBy: actor.userId });
      return { accepted: true, pending: state.pending.length };
    },
    {
      validator: (text) => {
        if (typeof text !== 'string' || text.trim().length === 0) throw new Error('instruction is empty');
        if (text.length > MAX_INSTRUCTION_LENGTH)
          throw new Error(`instruction over ${MAX_INSTRUCTION_LENGTH} characters`);
        if (finished || cancelled) throw new Error('run is no longer accepting instructions');
      },
    },
  );
  setHandler(progressQuery, () => ({
    status,
    steps: state.steps,
    toolCalls: state.toolCalls,
    generation: state.generation,
    instructions: state.instructions,
    ...(state.answer !== undefined ? { answer: state.answer } : {}),
  }));

  if (!state.runRecordId) state.runRecordId = await acts.ensureRunRecord(params.agentId, params.input);
  try {
    return await execute();
  } catch (err) {
    await recordFailure(state.runRecordId, err);
    throw err;
  }

  // The run itself; a failure above is also written to the run record.
  async function execute(): Promise<AgentExecutionResult> {
    const agent = await acts.buildAgentConfig(params.agentId);
    status = 'running';
    let stepsThisRun = 0;

    for (;;) {
      if (cancelled) break;
      while (state.pending.length > 0) {
        state.messages.push({ role: 'system', content: state.pending.shift() as string });
        state.messages.push({ role: 'user', content: REVISE_PROMPT });
      }
      if (stepsThisRun >= maxSteps || workflowInfo().continueAsNewSuggested) {
        await condition(allHandlersFinished);
        return continueAsNew<typeof AgentExecutionWorkflow>({
          ...params,
          carried: { ...state, generation: state.generation + 1 },
        });
      }
      const decision = await acts.modelStep(agent, state.messages);
      state.steps++;
      stepsThisRun++;
      if (decision.type === 'tool_call') {
        state.toolCalls++;
        const hits = await runTool(decision.tool, decision.args);
        state.messages.push({ role: 'tool', tool: decision.tool, content: describeHits(hits) });
        continue;
      }
      state.answer = decision.content;
      state.messages.push({ role: 'assistant', content: decision.content });
      if (followUpMs === 0 || cancelled) break;
      status = 'waiting';
      const more = await condition(() => cancelled || state.pending.length > 0, followUpMs);
      status = 'running';
      if (!more) break;
    }

    finished = true;
    status = cancelled ? 'cancelled' : 'completed';
    const result: AgentExecutionResult = {
      status,
      ...(state.answer !== undefined ? { answer: state.answer } : {}),
      steps: state.steps,
      toolCalls: state.toolCalls,
      instructions: state.instructions,
    };
    await acts.recordRunResult({ runRecordId: state.runRecordId, status, result });
    await condition(allHandlersFinished);
    return result;
  }
}

/**
 * A run that an activity or this workflow refused for good (`TOOL_NOT_ENABLED`, `AGENT_NOT_FOUND`, a
 * context refusal...) says so on its record too, not only in Temporal. continue-as-new also travels as
 * an exception: it is no ApplicationFailure and passes untouched. Behind `patched`, so that histories of
 * runs that failed before this change replay as they were.
 */
async function recordFailure(runRecordId: string, err: unknown): Promise<void> {
  const failure = err instanceof ActivityFailure ? err.cause : err;
  if (!(failure instanceof ApplicationFailure) || !patched('record-failed-runs')) return;
  try {
    await acts.recordRunResult({ runRecordId, status: 'failed', error: failure.type ?? 'RUN_FAILED' });
  } catch {
    // The record cannot be written (a membership revoked meanwhile: RLS refuses the write too). The
    // failure stands in Temporal, and the API reports it from there.
  }
}

async function runTool(tool: string, args: Record<string, unknown>): Promise<DocumentHit[]> {
  if (tool === 'searchWorkspaceDocuments') return acts.searchWorkspaceDocuments(args);
  throw ApplicationFailure.nonRetryable(`unknown tool ${tool}`, 'UNKNOWN_TOOL');
}

function describeHits(hits: DocumentHit[]): string {
  if (hits.length === 0) return 'found no documents.';
  return `found ${hits.length} document(s): ${hits.map((h) => h.title).join(', ')}.`;
}
