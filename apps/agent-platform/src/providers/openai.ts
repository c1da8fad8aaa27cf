import { ApplicationFailure } from '@temporalio/common';
import {
  isInstruction,
  isRecord,
  type AgentConfig,
  type AgentMessage,
  type ModelDecision,
  type ModelProvider,
  type StepOptions,
} from './types.js';

export interface OpenAiProviderOptions {
  baseUrl: string;
  apiKey: string;
  /** Model to use when the agent's own `model` is `default`. */
  model: string;
  fetch?: typeof fetch;
}

const TOOL_SCHEMAS: Record<string, object> = {
  searchWorkspaceDocuments: {
    type: 'function',
    function: {
      name: 'searchWorkspaceDocuments',
      description: "Searches the documents of the caller's workspace (title and body, case-insensitive).",
      parameters: {
        type: 'object',
        properties: { query: { type: 'string', maxLength: 100 } },
        required: ['query'],
      },
    },
  },
};

/** What a chat-completions answer is expected to hold: read as unknown, field by field. */
interface ChatResponse {
  choices?: unknown[];
}

/**
 * The largest response body read, in bytes: far above any answer a step keeps (decision.ts), and a
 * bound on what a provider (or whatever answers at its address) can make the worker hold in memory.
 */
export const MAX_RESPONSE_BYTES = 1024 * 1024;

/** How long one request may take, its answer read included. */
const REQUEST_TIMEOUT_MS = 60_000;

/** A failure of the model's answer or of the request itself, which no retry cures. */
function modelFailure(
  type: 'MODEL_REJECTED' | 'MODEL_RESPONSE_INVALID',
  message: string,
): ApplicationFailure {
  return ApplicationFailure.create({ type, message, nonRetryable: true });
}

/** A message's text: a string, or the text parts of a list of parts (both are in the wild); else refused. */
function textOf(content: unknown): string {
  if (content === undefined || content === null) return '';
  if (typeof content === 'string') return content;
  if (Array.isArray(content))
    return content.map((part) => (isRecord(part) && typeof part.text === 'string' ? part.text : '')).join('');
  throw modelFailure('MODEL_RESPONSE_INVALID', 'model answer content is neither text nor parts');
}

/**
 * The response body as JSON, read up to {@link MAX_RESPONSE_BYTES}: a larger one (declared or sent) is
 * refused without reading the rest, and one that is no JSON is an answer no step can use.
 */
async function readJson(res: Response): Promise<unknown> {
  const declared = Number(res.headers.get('content-length') ?? '0');
  if (declared > MAX_RESPONSE_BYTES) {
    await res.body?.cancel().catch(() => undefined);
    throw modelFailure('MODEL_RESPONSE_INVALID', `model answer is over ${MAX_RESPONSE_BYTES} bytes`);
  }
  const chunks: Uint8Array[] = [];
  let size = 0;
  if (res.body) {
    const reader = res.body.getReader();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      size += value.byteLength;
      if (size > MAX_RESPONSE_BYTES) {
        await reader.cancel().catch(() => undefined);
        throw modelFailure('MODEL_RESPONSE_INVALID', `model answer is over ${MAX_RESPONSE_BYTES} bytes`);
      }
      chunks.push(value);
    }
  }
  try {
    // TextDecoder drops a byte order mark, as `res.json()` does.
    return JSON.parse(new TextDecoder().decode(Buffer.concat(chunks))) as unknown;
  } catch {
    throw modelFailure('MODEL_RESPONSE_INVALID', 'model answer is not JSON');
  }
}

/**
 * A tool call's arguments: a JSON object (as text, per the API, or as an object, as some compatible
 * servers send it), else none — models do emit broken or non-object JSON.
 */
function argumentsOf(raw: unknown): Record<string, unknown> {
  if (isRecord(raw)) return raw;
  try {
    const value: unknown = JSON.parse(typeof raw === 'string' ? raw : '{}');
    return isRecord(value) ? value : {};
  } catch {
    return {};
  }
}

/**
 * An OpenAI-compatible chat-completions provider (OpenAI, vLLM, Ollama, LM Studio, ...), selected by
 * OPENAI_BASE_URL / OPENAI_API_KEY / OPENAI_MODEL. Tested against a chat-completions endpoint served
 * on loopback (test/unit/openai-provider.test.ts); the tests never reach a real model.
 */
export class OpenAiCompatibleProvider implements ModelProvider {
  readonly name = 'openai-compatible';
  constructor(private readonly options: OpenAiProviderOptions) {}

  async step(
    agent: AgentConfig,
    messages: readonly AgentMessage[],
    options: StepOptions = {},
  ): Promise<ModelDecision> {
    const tools = agent.tools.map((t) => TOOL_SCHEMAS[t]).filter((t): t is object => t !== undefined);
    const body = {
      model: agent.model === 'default' || agent.model === 'local' ? this.options.model : agent.model,
      messages: [
        { role: 'system', content: agent.instructions || `You are ${agent.name}.` },
        ...messages.map((m) => {
          if (m.role === 'tool')
            return { role: 'user', content: `Result of ${m.tool ?? 'tool'}: ${m.content}` };
          // A member's words, not the agent's configuration: a user message, never a system one. That
          // includes the `system` messages of runs older than `instruction` (isInstruction): they were
          // members' instructions too, and continue-as-new carries them on.
          if (isInstruction(m))
            return { role: 'user', content: `Instruction from a member of this workspace: ${m.content}` };
          return { role: m.role, content: m.content };
        }),
      ],
      ...(tools.length > 0 ? { tools } : {}),
    };
    const doFetch = this.options.fetch ?? fetch;
    const res = await doFetch(`${this.options.baseUrl.replace(/\/$/, '')}/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${this.options.apiKey}` },
      body: JSON.stringify(body),
      // The request's own cut, and the step's cancellation: reading the body stops with either too.
      signal: options.signal
        ? AbortSignal.any([options.signal, AbortSignal.timeout(REQUEST_TIMEOUT_MS)])
        : AbortSignal.timeout(REQUEST_TIMEOUT_MS),
    });
    if (!res.ok) {
      // Not read: released, rather than held open until the request's timeout.
      await res.body?.cancel().catch(() => undefined);
      // The request itself refused (an unknown model, a bad key, a conversation too long): asking again
      // gets the same answer, and each attempt costs a call. Timeouts, conflicts and rate limits pass.
      if (res.status >= 400 && res.status < 500 && ![408, 409, 429].includes(res.status))
        throw modelFailure('MODEL_REJECTED', `model provider refused the request: HTTP ${res.status}`);
      throw new Error(`model provider answered HTTP ${res.status}`);
    }
    const json = (await readJson(res)) as ChatResponse | null;
    // Some gateways answer an upstream failure with 200 and an error body: no answer, try again.
    if (isRecord(json) && isRecord(json.error))
      throw new Error('model provider answered an error with HTTP 200');
    const message = isRecord(json) && Array.isArray(json.choices) ? json.choices[0]?.message : undefined;
    if (!isRecord(message)) throw modelFailure('MODEL_RESPONSE_INVALID', 'model answer has no message');
    const call = Array.isArray(message.tool_calls) ? message.tool_calls[0]?.function : undefined;
    if (isRecord(call) && call.name !== undefined && call.name !== null && call.name !== '') {
      if (typeof call.name !== 'string')
        throw modelFailure('MODEL_RESPONSE_INVALID', 'model answer names a tool that is not a string');
      return { type: 'tool_call', tool: call.name, args: argumentsOf(call.arguments) };
    }
    return { type: 'final', content: textOf(message.content) };
  }
}
