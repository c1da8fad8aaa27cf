import { LocalModelProvider } from './local.js';
import { OpenAiCompatibleProvider } from './openai.js';
import type { ModelProvider } from './types.js';

export * from './types.js';
export { MAX_ANSWER_LENGTH, MAX_TOOL_ARGUMENTS_LENGTH, acceptDecision, storableText } from './decision.js';
export { LocalModelProvider } from './local.js';
export { MAX_RESPONSE_BYTES, OpenAiCompatibleProvider } from './openai.js';

/** OpenAI-compatible provider when OPENAI_BASE_URL and OPENAI_API_KEY are set, else the local one. */
export function providerFromEnv(env: NodeJS.ProcessEnv = process.env): ModelProvider {
  if (env.OPENAI_BASE_URL && env.OPENAI_API_KEY) {
    return new OpenAiCompatibleProvider({
      baseUrl: env.OPENAI_BASE_URL,
      apiKey: env.OPENAI_API_KEY,
      model: env.OPENAI_MODEL ?? 'gpt-4o-mini',
    });
  }
  return new LocalModelProvider();
}
