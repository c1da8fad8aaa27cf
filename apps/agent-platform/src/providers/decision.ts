import { ApplicationFailure } from '@temporalio/common';
import type { AgentConfig, ModelDecision } from './types.js';

/**
 * What a model answered is untrusted input (prompt injection, hallucinated tools): a tool call is
 * accepted only for a tool this agent has enabled, whatever provider produced it. Anything else fails
 * the step with the non-retryable `TOOL_NOT_ENABLED` (asking the model again would not make the tool
 * enabled). Tool arguments that are no JSON object of at most {@link MAX_TOOL_ARGUMENTS_LENGTH}
 * characters, and an answer that is no text, fail it with the non-retryable `MODEL_RESPONSE_INVALID`.
 * An answer longer than {@link MAX_ANSWER_LENGTH} is cut to it (ending with `…`): the run keeps what it
 * can carry rather than losing the whole answer.
 */
export function acceptDecision(agent: AgentConfig, decision: ModelDecision): ModelDecision {
  if (decision.type === 'final') {
    if (typeof decision.content !== 'string') throw invalid("the model's answer is not text");
    return { type: 'final', content: storableText(cut(decision.content, MAX_ANSWER_LENGTH)) };
  }
  if (!agent.tools.includes(decision.tool)) {
    throw ApplicationFailure.create({
      type: 'TOOL_NOT_ENABLED',
      message: 'the model asked for a tool this agent does not have',
      nonRetryable: true,
    });
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
  return decision;
}

/**
 * The longest answer a step keeps, in UTF-16 code units (at most ~96 KB of UTF-8; 192 KB as JSON if
 * every character is a control character). An answer travels as the step's result, then in the
 * workflow's result, its progress query and the conversation every later step sends: one without a
 * bound could pass Temporal's 2 MB payload limit, which no retry cures.
 */
export const MAX_ANSWER_LENGTH = 32_000;
/**
 * The longest tool arguments a step passes on, as JSON text: far above what the one tool reads (a
 * 100-character query), and a bound on the step's result and the tool's input.
 */
export const MAX_TOOL_ARGUMENTS_LENGTH = 65_536;

/** `text` cut to at most `max` UTF-16 units, ending with `…` when cut, never between a surrogate pair. */
function cut(text: string, max: number): string {
  if (text.length <= max) return text;
  let end = max - 1;
  const last = text.charCodeAt(end - 1);
  if (last >= 0xd800 && last <= 0xdbff) end--;
  return `${text.slice(0, end)}…`;
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
