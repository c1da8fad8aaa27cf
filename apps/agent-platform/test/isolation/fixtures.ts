// Activities and workflows for the isolation test: data access goes through the library's scope only.
import type { SqlDatabase } from 'temporal-user-context/postgres';
import { withCurrentUserScope } from 'temporal-user-context/postgres';
import { AgentRepository } from '../../src/data/repositories/index.js';

export function makeActivities(db: SqlDatabase) {
  return {
    async listAgentNames(): Promise<string[]> {
      return withCurrentUserScope(db, async (tx) =>
        (await new AgentRepository(tx).list()).map((a) => a.name),
      );
    },
    async getAgentById(id: string): Promise<string | null> {
      return withCurrentUserScope(db, async (tx) => (await new AgentRepository(tx).get(id))?.name ?? null);
    },
    async renameAgent(id: string, name: string): Promise<boolean> {
      return withCurrentUserScope(
        db,
        async (tx) => (await new AgentRepository(tx).update(id, { name })) !== undefined,
      );
    },
    async insertAgentInto(workspaceId: string): Promise<string> {
      try {
        await withCurrentUserScope(db, (tx) =>
          tx.query(
            `insert into agents (workspace_id, name, instructions, model) values ($1, 'planted', '', 'local')`,
            [workspaceId],
          ),
        );
        return 'inserted';
      } catch (err) {
        return (err as { code?: string }).code ?? 'refused';
      }
    },
  };
}
export type IsolationActivities = ReturnType<typeof makeActivities>;
