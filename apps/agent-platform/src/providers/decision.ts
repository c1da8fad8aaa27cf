import { ApplicationFailure } from '@temporalio/common';
import type { AgentConfig, ModelDecision } from './types.js';

/**
 * What a model answered is untrusted input (prompt injection, hallucinated tools): a tool call is
 * accepted only for a tool this agent has enabled, whatever provider produced it. Anything else fails
 * the step with the non-retryable `TOOL_NOT_ENABLED` (asking the model again would not make the tool
 * enabled). An answer over {@link MAX_ANSWER_LENGTH}, or tool arguments that are no JSON object of at
 * most {@link MAX_TOOL_ARGUMENTS_LENGTH} characters, fail it with the non-retryable
 * `MODEL_RESPONSE_INVALID`.
 */
export function acceptDecision(agent: AgentConfig, decision: ModelDecision): ModelDecision {
  checkSize(decision);
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

/**
 * The longest answer a step keeps, in UTF-16 code units (at most ~96 KB of UTF-8). An answer travels as
 * the step's result, then in the workflow's result, its progress query and the conversation every later
 * step sends: one without a bound could pass Temporal's 2 MB payload limit, which no retry cures.
 */
export const MAX_ANSWER_LENGTH = 32_000;
/** The longest tool arguments a step passes on, as JSON text (the one tool reads a 100-character query). */
export const MAX_TOOL_ARGUMENTS_LENGTH = 4096;

/** A decision too large to carry, or whose arguments are no JSON object, fails `MODEL_RESPONSE_INVALID`. */
function checkSize(decision: ModelDecision): void {
  if (decision.type === 'final') {
    if (typeof decision.content === 'string' && decision.content.length <= MAX_ANSWER_LENGTH) return;
    throw invalid(
      typeof decision.content === 'string'
        ? `the model's answer is over ${MAX_ANSWER_LENGTH} characters`
        : "the model's answer is not text",
    );
  }
  let json: string | undefined;
  try {
    json = JSON.stringify(decision.args);
  } catch {
    // A provider's own object (a cycle, a BigInt): not arguments the workflow could carry.
  }
  if (json === undefined || !json.startsWith('{'))
    throw invalid("the model's tool arguments are not a JSON object");
  if (json.length > MAX_TOOL_ARGUMENTS_LENGTH)
    throw invalid(`the model's tool arguments are over ${MAX_TOOL_ARGUMENTS_LENGTH} characters`);
}

const invalid = (message: string): ApplicationFailure =>
  ApplicationFailure.create({ type: 'MODEL_RESPONSE_INVALID', message, nonRetryable: true });

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
