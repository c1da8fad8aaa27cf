/**
 * One message of an agent conversation, as the model provider sees it. `instruction` is what a member of
 * the workspace added to a run (the `addInstruction` update): providers pass it on as that member's
 * words, a user message, never with the authority of the agent's own instructions (the system prompt,
 * which only the agent's configuration sets). Runs started before that change carry such instructions
 * as `system` messages, and keep them so.
 */
export interface AgentMessage {
  role: 'system' | 'user' | 'assistant' | 'tool' | 'instruction';
  content: string;
  /** For `tool` messages: which tool produced the content. */
  tool?: string;
}

/** The agent as the worker loaded it (through RLS) for one run. */
export interface AgentConfig {
  agentId: string;
  workspaceId: string;
  name: string;
  instructions: string;
  model: string;
  tools: string[];
}

/** What one model step decides: call a tool, or answer. */
export type ModelDecision =
  { type: 'tool_call'; tool: string; args: Record<string, unknown> } | { type: 'final'; content: string };

/** What the `modelStep` activity hands a provider with each step. */
export interface StepOptions {
  /**
   * Aborted when the step's activity is cancelled (the run was cancelled, by its `cancel` signal or
   * through Temporal): a provider passes it to its requests, so that no call runs on, and is paid for,
   * for a run that no longer wants its answer.
   */
  signal?: AbortSignal;
}

/** A model backend. Implementations run inside the `modelStep` activity (never in workflow code). */
export interface ModelProvider {
  readonly name: string;
  step(agent: AgentConfig, messages: readonly AgentMessage[], options?: StepOptions): Promise<ModelDecision>;
}

/** A JSON object (not null, not an array): what untrusted input must be before its fields are read. */
export const isRecord = (value: unknown): value is Record<string, unknown> =>
  typeof value === 'object' && value !== null && !Array.isArray(value);

/** A member's instruction: `instruction` messages, and the `system` ones of runs started before them. */
export function isInstruction(message: AgentMessage): boolean {
  return message.role === 'instruction' || message.role === 'system';
}

/** What the workflow adds as a user message after an instruction arrives through the update. */
export const REVISE_PROMPT = 'Please revise your answer with that instruction.';
