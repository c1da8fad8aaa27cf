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
  if (decision.type === 'final') return { type: 'final', content: storableText(decision.content) };
  return decision;
}

// A surrogate without its pair: not UTF-8 encodable.
const UNPAIRED_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g;

/**
 * `text` with what PostgreSQL cannot store in `text` or `jsonb` (NUL, an unpaired surrogate) replaced by
 * U+FFFD. A model's answer or tool argument holding one would fail every write of it with a data
 * exception, which no retry cures, and the run would lose its answer after ten minutes of retries.
 */
export function storableText(text: string): string {
  return text.replaceAll('\u0000', '\uFFFD').replace(UNPAIRED_SURROGATE, '\uFFFD');
}
