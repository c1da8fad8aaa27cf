import { REVISE_PROMPT, isInstruction } from './types.js';
import type { AgentConfig, AgentMessage, ModelDecision, ModelProvider } from './types.js';

const WORKSPACE_MENTION = /\bworkspace\s+([A-Za-z0-9][A-Za-z0-9._:@|+-]{0,127})/i;
const ABOUT = /\babout\s+"?([^".?!]{1,100})/i;

/**
 * A deterministic provider that needs no network: it searches the workspace documents once for every
 * user message (when the agent has the tool), then answers with what the tool returned. A message that
 * names a workspace ("... in workspace ws-globex") makes it ask the tool for that workspace, which is how
 * the tests show that a model asking for another workspace's data gets nothing.
 */
export class LocalModelProvider implements ModelProvider {
  readonly name = 'local';

  async step(agent: AgentConfig, messages: readonly AgentMessage[]): Promise<ModelDecision> {
    // A revision request (after an added instruction) reuses the last search rather than searching for it.
    const lastUser = findLastIndex(messages, (m) => m.role === 'user' && m.content !== REVISE_PROMPT);
    const user = messages[lastUser];
    const toolAfter = messages
      .slice(lastUser + 1)
      .filter((m) => m.role === 'tool')
      .pop();
    if (user && !toolAfter && agent.tools.includes('searchWorkspaceDocuments')) {
      const workspace = WORKSPACE_MENTION.exec(user.content)?.[1];
      const query = (ABOUT.exec(user.content)?.[1] ?? user.content).trim().slice(0, 100);
      return {
        type: 'tool_call',
        tool: 'searchWorkspaceDocuments',
        args: { query, ...(workspace ? { workspaceId: workspace } : {}) },
      };
    }
    const instructions = messages.filter(isInstruction).map((m) => m.content);
    const parts = [`${agent.name}: ${toolAfter ? toolAfter.content : 'no tool used.'}`];
    if (instructions.length > 0) parts.push(`Following: ${instructions.join(' | ')}`);
    return { type: 'final', content: parts.join('\n') };
  }
}

function findLastIndex<T>(items: readonly T[], pred: (item: T) => boolean): number {
  for (let i = items.length - 1; i >= 0; i--) if (pred(items[i] as T)) return i;
  return -1;
}
