import { ApplicationFailure } from '@temporalio/common';
import type { AgentConfig, ModelDecision } from './types.js';

/**
 * What a model answered is untrusted input (prompt injection, hallucinated tools): a tool call is
 * accepted only for a tool this agent has enabled, whatever provider produced it. Anything else fails
 * the step with the non-retryable `TOOL_NOT_ENABLED` (asking the model again would not make the tool
 * enabled).
 */
export function acceptDecision(agent: AgentConfig, decision: ModelDecision): ModelDecision {
  if (decision.type === 'tool_call' && !agent.tools.includes(decision.tool)) {
    throw ApplicationFailure.create({
      type: 'TOOL_NOT_ENABLED',
      message: 'the model asked for a tool this agent does not have',
      nonRetryable: true,
    });
  }
  return decision;
}
