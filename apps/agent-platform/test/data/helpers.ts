import { openBackend, type Backend, type BackendKind } from '../../../../test-support/db-backends.js';
import { migrate } from '../../src/data/migrate.js';

/** A migrated database with two workspaces: ws-a (alice admin, carol member) and ws-b (bob admin). */
export async function openPlatformDb(kind: BackendKind, prefix: string, poolSize = 4): Promise<Backend> {
  const b = await openBackend(kind, { prefix, poolSize, seal: true });
  await migrate(b.admin);
  // Provisioning runs as the superuser test login: the app role cannot create workspaces.
  await b.admin.query(
    `insert into workspaces (id, name) values ('ws-a', 'Workspace A'), ('ws-b', 'Workspace B')`,
  );
  await b.admin.query(
    `insert into memberships (workspace_id, user_id, roles) values
       ('ws-a', 'alice', '{admin,member}'), ('ws-a', 'carol', '{member}'), ('ws-b', 'bob', '{admin,member}')`,
  );
  return b;
}
