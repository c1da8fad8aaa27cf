// A seal read before a restore opens nothing after it (found by review). A cluster restored from a copy
// (a dump, a base backup, a copied PGlite directory) hands the same transaction ids out again, under the
// same seal key: a seal captured in a victim's scope (compromised code running there) opened the
// victim's scope again once a transaction of the restored cluster got the same id. The seal names the
// transaction's start time too (migration 0018): a restored or crash-restarted cluster reissues ids, never
// with the same start. PGlite shows it in one process: a second instance loaded from
// the first one's data directory is such a restore.
import { PGlite } from '@electric-sql/pglite';
import { pgcrypto } from '@electric-sql/pglite/contrib/pgcrypto';
import { afterAll, describe, expect, it } from 'vitest';
import { fromPGlite } from 'temporal-user-context/postgres';
import { migrate } from '../../src/data/migrate.js';

interface Captured {
  xact: string;
  workspace: string;
  user: string;
  roles: string;
  seal: string;
  /** What the victim's own scope reads: the seal opens there. */
  read: string | null;
}

const SETTINGS = `select pg_current_xact_id()::text as xact, current_setting('app.workspace_id') as workspace,
  current_setting('app.user_id') as user, current_setting('app.roles') as roles,
  current_setting('app.scope_seal') as seal, user_scope.workspace_id() as read`;

describe('sealed scopes across a restore', () => {
  const opened: PGlite[] = [];
  afterAll(async () => {
    for (const db of opened) await db.close();
  });

  it("a seal captured before the restore does not open the victim's scope after it", async () => {
    const original = new PGlite({ extensions: { pgcrypto } });
    opened.push(original);
    await migrate(fromPGlite(original));
    await original.exec(`insert into workspaces (id, name) values ('ws-b', 'Workspace B');
      insert into memberships (workspace_id, user_id, roles) values ('ws-b', 'bob', '{admin,member}')`);
    // The copy: taken now, restored later.
    const copy = await original.dumpDataDir('none');
    const captured = await original.transaction(async (tx) => {
      await tx.query(`select user_scope.enter('bob', 'ws-b', '{admin,member}')`);
      return (await tx.query<Captured>(SETTINGS)).rows[0]!;
    });
    expect(captured).toMatchObject({ workspace: 'ws-b', user: 'bob', read: 'ws-b' });

    const restored = new PGlite({ loadDataDir: copy, extensions: { pgcrypto } });
    opened.push(restored);
    const replayed = await restored.transaction(async (tx) => {
      // The restored cluster's first transaction gets the same id as the victim's did.
      const { xact } = (await tx.query<{ xact: string }>('select pg_current_xact_id()::text as xact'))
        .rows[0]!;
      await tx.query(
        `select set_config('app.workspace_id', $1, true), set_config('app.user_id', $2, true),
                set_config('app.roles', $3, true), set_config('app.scope_seal', $4, true)`,
        [captured.workspace, captured.user, captured.roles, captured.seal],
      );
      const { read } = (await tx.query<{ read: string | null }>('select user_scope.workspace_id() as read'))
        .rows[0]!;
      return { xact, read };
    });
    expect(replayed).toEqual({ xact: captured.xact, read: null });
  });
});
