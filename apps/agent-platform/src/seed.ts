import type { UserContext } from 'temporal-user-context';
import { withUserScope, type SqlDatabase, type UserScopeOptions } from 'temporal-user-context/postgres';
import { AgentRepository, DocumentRepository } from './data/repositories/index.js';

export interface DemoWorkspace {
  id: string;
  name: string;
  members: { userId: string; roles: string[] }[];
  documents: { title: string; body: string }[];
}

export const DEMO_WORKSPACES: DemoWorkspace[] = [
  {
    id: 'ws-acme',
    name: 'Acme',
    members: [
      { userId: 'carol', roles: ['admin', 'member'] },
      { userId: 'alice', roles: ['member'] },
    ],
    documents: [
      { title: 'Acme onboarding', body: 'Welcome to Acme. Expense reports are due on Fridays.' },
      { title: 'Acme roadmap', body: 'Q3: rocket skates. Q4: portable holes.' },
    ],
  },
  {
    id: 'ws-globex',
    name: 'Globex',
    members: [
      { userId: 'bob', roles: ['admin', 'member'] },
      { userId: 'dave', roles: ['member'] },
    ],
    documents: [{ title: 'Globex secret plan', body: 'Confidential: the roadmap of Globex.' }],
  },
];

/**
 * Provisions workspaces and memberships with the connection's own (owner/superuser) rights — there is
 * no API for creating a tenant — then creates each workspace's agent and documents as its admin,
 * through withUserScope like any request. Idempotent: skips a workspace that already exists.
 */
export async function seedDemo(
  db: SqlDatabase,
  workspaces: DemoWorkspace[] = DEMO_WORKSPACES,
  /** For its scopes (the auditor its records go to; default the process's, pino on stdout). */
  scope: UserScopeOptions = {},
): Promise<Record<string, string>> {
  const agentIds: Record<string, string> = {};
  for (const ws of workspaces) {
    const created = await db.transaction(async (tx) => {
      const inserted = await tx.query(
        'insert into workspaces (id, name) values ($1, $2) on conflict (id) do nothing',
        [ws.id, ws.name],
      );
      for (const m of ws.members) {
        await tx.query(
          'insert into memberships (workspace_id, user_id, roles) values ($1, $2, $3) on conflict do nothing',
          [ws.id, m.userId, m.roles],
        );
      }
      return inserted.rowCount > 0;
    });
    const admin = ws.members.find((m) => m.roles.includes('admin'));
    if (!admin) continue;
    const ctx: UserContext = { userId: admin.userId, workspaceId: ws.id, roles: admin.roles };
    agentIds[ws.id] = await withUserScope(
      db,
      ctx,
      async (tx) => {
        const agents = new AgentRepository(tx);
        if (!created) {
          const existing = await agents.list(1);
          if (existing[0]) return existing[0].id;
        }
        const docs = new DocumentRepository(tx);
        for (const d of ws.documents) await docs.create(d);
        const agent = await agents.create({
          name: `${ws.name} assistant`,
          instructions: `You help the ${ws.name} team find things in their documents.`,
          model: 'local',
          tools: ['searchWorkspaceDocuments'],
        });
        return agent.id;
      },
      scope,
    );
  }
  return agentIds;
}
