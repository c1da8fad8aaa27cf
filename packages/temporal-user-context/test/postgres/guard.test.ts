import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fromPgPool } from 'temporal-user-context/postgres';
import { BACKENDS, openBackend, type Backend } from '../../../../test-support/db-backends.js';
import { ErrorCodes, isUserContextError, parseUserContext } from '../../src/context/index.js';
import { assertIsolation, withUserScope } from '../../src/postgres/index.js';
import { createFixtureSchema, uniqueRoles } from './fixture.js';

const roles = uniqueRoles('guard');

async function refusal(b: Backend, tenantTables?: string[]): Promise<string> {
  try {
    await assertIsolation(b.admin, { appRole: roles.app, ...(tenantTables ? { tenantTables } : {}) });
  } catch (err) {
    expect(isUserContextError(err, ErrorCodes.MISCONFIGURED)).toBe(true);
    return (err as Error).message;
  }
  throw new Error('guard accepted a misconfigured database');
}

describe.each(BACKENDS)('assertIsolation on %s (case 17)', (kind) => {
  let b: Backend;

  beforeAll(async () => {
    b = await openBackend(kind, { prefix: 'guard' });
    await createFixtureSchema(b.admin, roles);
    await b.admin.query(`insert into memberships values ('ws-a','alice','{member}')`);
    await b.admin.query(`insert into notes (workspace_id, body) values ('ws-a','a1'), ('ws-b','b1')`);
  });
  afterAll(async () => {
    // Roles are cluster-wide: do not leave this file's roles with dangerous attributes behind.
    await b?.admin.query(`alter role ${roles.app} nobypassrls nosuperuser`).catch(() => undefined);
    await b?.close();
  });

  it('accepts the well-configured fixture and reports the tenant tables it found', async () => {
    const report = await assertIsolation(b.admin, { appRole: roles.app });
    expect(report.tenantTables).toEqual(['audit_log', 'memberships', 'notes']);
    // The admin handle logs in as a superuser (PGlite has no other; the test server's login is one):
    // reported, not refused. The server's own `is_superuser` setting says which it is.
    const { rows } = await b.admin.query<{ role: string; su: string }>(
      "select session_user::text as role, current_setting('is_superuser') as su",
    );
    expect(rows[0]!.su).toBe('on');
    // A superuser is a member of every role: it reaches the tables' owner too.
    expect(report.login).toEqual({ role: rows[0]!.role, bypassesRls: true, reachesOwner: true });
    // Where the seal must hold against SQL run inside a scope, such a login is refused.
    await expect(assertIsolation(b.admin, { appRole: roles.app, strictLogin: true })).rejects.toThrow(
      `login role ${rows[0]!.role} may become a role that bypasses RLS`,
    );
  });

  // PGlite has one role: only a real server can show a login role that is not a superuser.
  if (kind === 'postgres')
    it('reports a login role that can only switch to the app role as not bypassing RLS', async () => {
      const login = `login_${roles.app}`;
      await b.admin.query(
        `create role ${login} login noinherit nosuperuser nobypassrls password 'guard-login'`,
      );
      await b.admin.query(`grant ${roles.app} to ${login}`);
      const url = new URL(b.url!);
      url.username = login;
      url.password = 'guard-login';
      const pool = new pg.Pool({ connectionString: url.toString(), max: 1 });
      try {
        const report = await assertIsolation(fromPgPool(pool), { appRole: roles.app, strictLogin: true });
        expect(report.login).toEqual({ role: login, bypassesRls: false, reachesOwner: false });
        // NOINHERIT: outside a scoped transaction (SET ROLE) that login cannot read tenant tables at all.
        await expect(pool.query('select * from notes')).rejects.toThrow(/permission denied/);
        // The same login with BYPASSRLS is reported as bypassing.
        await b.admin.query(`alter role ${login} bypassrls`);
        const again = await assertIsolation(fromPgPool(pool), { appRole: roles.app });
        expect(again.login).toEqual({ role: login, bypassesRls: true, reachesOwner: false });
        await b.admin.query(`alter role ${login} nobypassrls`);
        // NOINHERIT or not, SQL inside a scope may switch to any role its login is a member of
        // (`set_config('role', …)`): a member of a role that bypasses RLS, or of the tables' owner, is
        // reported so, and refused where the seal must hold.
        /** The login's report while it is a member of `role`, and the strict guard's refusal. */
        const asMemberOf = async (role: string, reported: object, refusal: string) => {
          await b.admin.query(`grant ${role} to ${login}`);
          try {
            expect((await assertIsolation(fromPgPool(pool), { appRole: roles.app })).login).toEqual({
              role: login,
              ...reported,
            });
            await expect(
              assertIsolation(fromPgPool(pool), { appRole: roles.app, strictLogin: true }),
            ).rejects.toThrow(`login role ${login} may become a role that ${refusal}`);
          } finally {
            await b.admin.query(`revoke ${role} from ${login}`);
          }
        };
        const bypasser = `bypass_${roles.app}`;
        await b.admin.query(`create role ${bypasser} nologin bypassrls`);
        try {
          await asMemberOf(bypasser, { bypassesRls: true, reachesOwner: false }, 'bypasses RLS');
        } finally {
          await b.admin.query(`drop role ${bypasser}`);
        }
        await asMemberOf(roles.owner, { bypassesRls: false, reachesOwner: true }, 'owns tenant tables');
        // A login that may not switch to the app role could not open a single scope.
        await b.admin.query(`revoke ${roles.app} from ${login}`);
        await expect(assertIsolation(fromPgPool(pool), { appRole: roles.app })).rejects.toThrow(
          `login role ${login} cannot SET ROLE to app role ${roles.app}`,
        );
        // A connection that will serve no scope (a migration as the tables' owner) need not.
        await expect(
          assertIsolation(fromPgPool(pool), { appRole: roles.app, checkLogin: false }),
        ).resolves.toMatchObject({ appRole: roles.app, tenantTables: ['audit_log', 'memberships', 'notes'] });
      } finally {
        await pool.end();
        await b.admin.query(`drop role ${login}`);
      }
    });

  it("refuses a schema without what withUserScope needs: memberships, its columns, the app role's grant", async () => {
    // Each change is undone whatever the assertion says: the other tests share this schema.
    const broken = async (change: string, undo: string, expected: string) => {
      await b.admin.query(change);
      try {
        expect(await refusal(b)).toContain(expected);
      } finally {
        await b.admin.query(undo);
      }
    };
    await broken(
      `alter table memberships rename column roles to role_list`,
      `alter table memberships rename column role_list to roles`,
      'table public.memberships lacks column roles text[]',
    );
    await broken(
      `revoke select on memberships from ${roles.app}`,
      `grant select on memberships to ${roles.app}`,
      `app role ${roles.app} may not SELECT workspace_id of public.memberships`,
    );
    await broken(
      `alter table memberships rename to memberships_old`,
      `alter table memberships_old rename to memberships`,
      "table public.memberships, which withUserScope's membership check reads, does not exist",
    );
    // SELECT granted on the three columns only is enough for the scope's query.
    await b.admin.query(`revoke select on memberships from ${roles.app}`);
    try {
      await b.admin.query(`grant select (workspace_id, user_id, roles) on memberships to ${roles.app}`);
      await expect(assertIsolation(b.admin, { appRole: roles.app })).resolves.toMatchObject({
        appRole: roles.app,
        tenantTables: ['audit_log', 'memberships', 'notes'],
      });
    } finally {
      await b.admin.query(`revoke select (workspace_id, user_id, roles) on memberships from ${roles.app}`);
      await b.admin.query(`grant select on memberships to ${roles.app}`);
    }
    await expect(assertIsolation(b.admin, { appRole: roles.app })).resolves.toMatchObject({
      appRole: roles.app,
      tenantTables: ['audit_log', 'memberships', 'notes'],
    });
  });

  it('refuses an unknown app role', async () => {
    await expect(assertIsolation(b.admin, { appRole: 'no_such_role_x' })).rejects.toMatchObject({
      code: ErrorCodes.MISCONFIGURED,
    });
  });

  it('refuses when the app role owns a tenant table', async () => {
    await b.admin.query(`alter table notes owner to ${roles.app}`);
    try {
      expect(await refusal(b)).toMatch(new RegExp(`table public\\.notes is owned by ${roles.app}`));
    } finally {
      await b.admin.query(`alter table notes owner to ${roles.owner}`);
      // The app role's grants were folded into ownership and went with it: give them back.
      await b.admin.query(`grant select, insert, update, delete on notes to ${roles.app}`);
    }
  });

  it('refuses when the app role is a member of the owning role', async () => {
    await b.admin.query(`grant ${roles.owner} to ${roles.app}`);
    try {
      expect(await refusal(b)).toMatch(/table public\.memberships is owned by/);
    } finally {
      await b.admin.query(`revoke ${roles.owner} from ${roles.app}`);
    }
  });

  it('refuses when the app role has BYPASSRLS (and shows why: it would see every workspace)', async () => {
    await b.admin.query(`alter role ${roles.app} bypassrls`);
    try {
      expect(await refusal(b)).toMatch(new RegExp(`app role ${roles.app} has BYPASSRLS`));
      const alice = parseUserContext({ userId: 'alice', workspaceId: 'ws-a', roles: ['member'] });
      const seen = await withUserScope(
        b.db,
        alice,
        async (tx) => (await tx.query('select * from notes')).rows.length,
        {
          appRole: roles.app,
        },
      );
      expect(seen).toBe(2);
    } finally {
      await b.admin.query(`alter role ${roles.app} nobypassrls`);
    }
  });

  it('refuses when the app role is SUPERUSER', async () => {
    await b.admin.query(`alter role ${roles.app} superuser`);
    try {
      expect(await refusal(b)).toMatch(/is SUPERUSER/);
    } finally {
      await b.admin.query(`alter role ${roles.app} nosuperuser`);
    }
  });

  it('refuses a tenant table without FORCE ROW LEVEL SECURITY', async () => {
    await b.admin.query('alter table notes no force row level security');
    try {
      expect(await refusal(b)).toMatch(/table public\.notes does not FORCE ROW LEVEL SECURITY/);
    } finally {
      await b.admin.query('alter table notes force row level security');
    }
  });

  it('refuses a tenant table without ENABLE ROW LEVEL SECURITY', async () => {
    await b.admin.query('alter table notes disable row level security');
    try {
      expect(await refusal(b)).toMatch(/table public\.notes does not ENABLE ROW LEVEL SECURITY/);
    } finally {
      await b.admin.query('alter table notes enable row level security');
    }
  });

  it('discovers new tables with a workspace_id column and checks configured ones', async () => {
    await b.admin.query(`create table leaky (workspace_id text, secret text)`);
    await b.admin.query(`create table tenant_keyed (tenant text, secret text)`);
    try {
      expect(await refusal(b)).toMatch(/table public\.leaky does not ENABLE ROW LEVEL SECURITY/);
      await b.admin.query('drop table leaky');
      await assertIsolation(b.admin, { appRole: roles.app });
      expect(await refusal(b, ['tenant_keyed'])).toMatch(/table public\.tenant_keyed does not ENABLE/);
      expect(await refusal(b, ['missing_table'])).toMatch(
        /configured tenant table public\.missing_table does not exist/,
      );
    } finally {
      await b.admin.query('drop table if exists leaky');
      await b.admin.query('drop table tenant_keyed');
    }
  });

  it('refuses a table the app role may use that is no tenant table, unless listed as shared', async () => {
    // A child table keyed by its parent: no workspace_id, no RLS, readable by the app role. (notes is
    // keyed by (workspace_id, id): the reference names a note by id alone, without a constraint.)
    await b.admin.query(`create table note_parts (note_id int, part text)`);
    await b.admin.query(`grant select on note_parts to ${roles.app}`);
    try {
      expect(await refusal(b)).toMatch(
        /table public\.note_parts is usable by [a-z0-9_]+ but is no tenant table/,
      );
      await expect(
        assertIsolation(b.admin, { appRole: roles.app, sharedTables: ['note_parts'] }),
      ).resolves.toMatchObject({ tenantTables: ['audit_log', 'memberships', 'notes'] });
      // Listed as a tenant table, it must isolate like one.
      expect(await refusal(b, ['note_parts'])).toMatch(
        /table public\.note_parts does not ENABLE ROW LEVEL SECURITY/,
      );
    } finally {
      await b.admin.query('drop table note_parts');
    }
  });

  it('counts a table the app role may only write through a column grant as one it may use', async () => {
    // Found by review: only SELECT counted at column level, so a grant of UPDATE (body) alone passed.
    await b.admin.query(`create table labels (ws text, body text)`);
    await b.admin.query(`insert into labels values ('ws-a', 'a'), ('ws-b', 'b')`);
    await b.admin.query(`grant update (body) on labels to ${roles.app}`);
    const alice = parseUserContext({ userId: 'alice', workspaceId: 'ws-a', roles: ['member'] });
    try {
      expect(await refusal(b)).toMatch(/table public\.labels is usable by [a-z0-9_]+ but is no tenant table/);
      // What it refuses it for: a scope of ws-a overwrites the rows of every workspace.
      const changed = await withUserScope(
        b.db,
        alice,
        async (tx) => (await tx.query(`update labels set body = 'overwritten'`)).rowCount,
        { appRole: roles.app },
      );
      expect(changed).toBe(2);
    } finally {
      await b.admin.query('drop table labels');
    }
  });

  it('inspects every schema the app role may use, not only the configured one', async () => {
    await b.admin.query(`create schema reporting`);
    await b.admin.query(`grant usage on schema reporting to ${roles.app}`);
    try {
      // A tenant table there without RLS, a definer view over notes, a SECURITY DEFINER function.
      await b.admin.query(`create table reporting.summaries (workspace_id text, total int)`);
      await b.admin.query(`grant select on reporting.summaries to ${roles.app}`);
      await b.admin.query(`create view reporting.all_notes as select workspace_id, body from notes`);
      await b.admin.query(`grant select on reporting.all_notes to ${roles.app}`);
      await b.admin.query(
        `create function reporting.notes_of(ws text) returns setof text language sql security definer
           as $$ select body from public.notes where workspace_id = ws $$`,
      );
      // A table there the app role has no grant on is none of its business.
      await b.admin.query(`create table reporting.archive (workspace_id text, body text)`);
      const message = await refusal(b);
      expect(message).not.toMatch(/archive/);
      expect(message).toMatch(/table reporting\.summaries does not ENABLE ROW LEVEL SECURITY/);
      expect(message).toMatch(/view reporting\.all_notes lacks security_invoker=true/);
      expect(message).toMatch(/function reporting\.notes_of\(text\) is SECURITY DEFINER/);
      // Without USAGE on the schema the app role reaches none of it.
      await b.admin.query(`revoke usage on schema reporting from ${roles.app}`);
      await assertIsolation(b.admin, { appRole: roles.app });
    } finally {
      await b.admin.query('drop schema reporting cascade');
    }
  });

  it('refuses a definer view the app role can use through a column grant or a write-only grant', async () => {
    await b.admin.query('create view notes_cols as select workspace_id, body from notes');
    try {
      await b.admin.query(`grant select (body) on notes_cols to ${roles.app}`);
      expect(await refusal(b)).toMatch(/view public\.notes_cols lacks security_invoker=true/);
      await b.admin.query(`revoke select (body) on notes_cols from ${roles.app}`);
      await b.admin.query(`grant insert on notes_cols to ${roles.app}`);
      expect(await refusal(b)).toMatch(/view public\.notes_cols lacks security_invoker=true/);
    } finally {
      await b.admin.query('drop view notes_cols');
    }
  });

  it('refuses TRUNCATE on a tenant table (RLS does not apply to it)', async () => {
    await b.admin.query(`grant truncate on notes to ${roles.app}`);
    try {
      expect(await refusal(b)).toMatch(/app role \S+ may TRUNCATE table public\.notes/);
    } finally {
      await b.admin.query(`revoke truncate on notes from ${roles.app}`);
    }
  });

  it('refuses TRUNCATE, a non-tenant table and a SECURITY DEFINER function reachable through a role the NOINHERIT app role may switch to', async () => {
    // Found by review: only the app role's own privileges were read, and SQL in a scope may SET ROLE to
    // any role it is a member of.
    const other = `${roles.app}_other`;
    try {
      await b.admin.query(`create role ${other} nologin`);
      await b.admin.query(`grant ${other} to ${roles.app}`);
      await b.admin.query(`alter role ${roles.app} noinherit`);
      await b.admin.query(`create table note_copies (body text)`);
      await b.admin.query(
        `create function note_count() returns bigint language sql security definer as 'select count(*) from notes'`,
      );
      await b.admin.query(`revoke execute on function note_count() from public`);
      // The membership alone is no problem.
      await expect(assertIsolation(b.admin, { appRole: roles.app })).resolves.toBeDefined();
      await b.admin.query(`grant truncate on notes to ${other}`);
      await b.admin.query(`grant select on note_copies to ${other}`);
      await b.admin.query(`grant execute on function note_count() to ${other}`);
      const refused = await refusal(b);
      expect(refused).toMatch(/app role \S+ may TRUNCATE table public\.notes \(itself, or through a role/);
      expect(refused).toMatch(/table public\.note_copies is usable by \S+ but is no tenant table/);
      expect(refused).toMatch(/function note_count\(\) is SECURITY DEFINER and executable/);
    } finally {
      await b.admin.query(`alter role ${roles.app} inherit`);
      await b.admin.query('drop function if exists note_count()');
      await b.admin.query('drop table if exists note_copies');
      if ((await b.admin.query(`select 1 from pg_roles where rolname = $1`, [other])).rowCount) {
        await b.admin.query(`drop owned by ${other}`);
        await b.admin.query(`drop role ${other}`);
      }
    }
  });

  it('refuses an app role that can SET ROLE to a role bypassing RLS', async () => {
    const bypass = `${roles.app}_bypass`;
    await b.admin.query(`create role ${bypass} nologin bypassrls`);
    await b.admin.query(`grant ${bypass} to ${roles.app}`);
    try {
      expect(await refusal(b)).toMatch(new RegExp(`can SET ROLE to ${bypass}, which bypasses RLS`));
    } finally {
      await b.admin.query(`revoke ${bypass} from ${roles.app}`);
      await b.admin.query(`drop role ${bypass}`);
    }
  });

  it('refuses a SECURITY DEFINER function the app role may execute (and shows the leak)', async () => {
    await b.admin.query(
      "create function all_note_bodies() returns setof text language sql security definer as 'select body from notes'",
    );
    const alice = parseUserContext({ userId: 'alice', workspaceId: 'ws-a', roles: ['member'] });
    try {
      expect(await refusal(b)).toMatch(/function all_note_bodies\(\) is SECURITY DEFINER/);
      const seen = await withUserScope(
        b.db,
        alice,
        async (tx) =>
          (await tx.query<{ b: string }>('select all_note_bodies() as b order by 1')).rows.map((r) => r.b),
        { appRole: roles.app },
      );
      expect(seen).toEqual(['a1', 'b1']);
    } finally {
      await b.admin.query('drop function all_note_bodies()');
    }
  });

  it('refuses a permissive policy on a tenant table that does not read app.workspace_id', async () => {
    await b.admin.query('create policy notes_everyone on notes for select using (true)');
    try {
      expect(await refusal(b)).toMatch(
        /policy notes_everyone on public\.notes does not read app\.workspace_id/,
      );
    } finally {
      await b.admin.query('drop policy notes_everyone on notes');
    }
    // Also one for a group role the app role belongs to.
    const readers = `${roles.app}_readers`;
    await b.admin.query(`create role ${readers} nologin`);
    await b.admin.query(`grant ${readers} to ${roles.app}`);
    await b.admin.query(`create policy notes_readers on notes for select to ${readers} using (true)`);
    try {
      expect(await refusal(b)).toMatch(
        /policy notes_readers on public\.notes does not read app\.workspace_id/,
      );
    } finally {
      await b.admin.query('drop policy notes_readers on notes');
      await b.admin.query(`revoke ${readers} from ${roles.app}`);
      await b.admin.query(`drop role ${readers}`);
    }
  });

  it('refuses a view without security_invoker (and shows the leak it would allow)', async () => {
    // Created by a superuser (say, a DBA's reporting view): without security_invoker it runs with its
    // owner's rights, and a superuser owner skips RLS.
    await b.admin.query('create view notes_view as select * from notes');
    await b.admin.query(`grant select on notes_view to ${roles.app}`);
    const alice = parseUserContext({ userId: 'alice', workspaceId: 'ws-a', roles: ['member'] });
    const viaView = () =>
      withUserScope(
        b.db,
        alice,
        async (tx) =>
          (await tx.query<{ body: string }>('select body from notes_view order by body')).rows.map(
            (r) => r.body,
          ),
        { appRole: roles.app },
      );
    try {
      expect(await refusal(b)).toMatch(/view public\.notes_view lacks security_invoker=true/);
      expect(await viaView()).toEqual(['a1', 'b1']);
      await b.admin.query('alter view notes_view set (security_invoker = true)');
      const report = await assertIsolation(b.admin, { appRole: roles.app });
      expect(report.views).toEqual(['notes_view']);
      expect(await viaView()).toEqual(['a1']);
    } finally {
      await b.admin.query('drop view notes_view');
    }
  });
});
