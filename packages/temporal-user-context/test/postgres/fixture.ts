import { scopeSealSql, type SqlDatabase } from '../../src/postgres/index.js';

/**
 * A minimal tenant schema for the library's own tests (the agent platform has the real migrations):
 * memberships, one tenant table `notes`, and `audit_log` with the same columns and policies.
 * Roles are cluster-wide, so each test file passes its own role names.
 */
export async function createFixtureSchema(
  admin: SqlDatabase,
  roles: { owner: string; app: string },
): Promise<void> {
  const { owner, app } = roles;
  await admin.session(async (s) => {
    for (const role of [owner, app]) {
      const exists = await s.query('select 1 from pg_roles where rolname = $1', [role]);
      if (exists.rowCount === 0) await s.exec(`create role ${role} nologin`);
    }
    await s.exec(`grant usage, create on schema public to ${owner}; grant usage on schema public to ${app};`);
    await s.exec(`set role ${owner}`);
    await s.exec(`
      create table memberships (
        workspace_id text not null, user_id text not null, roles text[] not null default '{}',
        primary key (workspace_id, user_id));
      alter table memberships enable row level security;
      alter table memberships force row level security;
      create policy m_read on memberships for select using (
        workspace_id = (select nullif(current_setting('app.workspace_id', true), ''))
        and user_id = (select nullif(current_setting('app.user_id', true), '')));
      grant select on memberships to ${app};

      create table notes (
        id serial,
        workspace_id text not null default nullif(current_setting('app.workspace_id', true), ''),
        body text not null,
        -- Led by the workspace: a key of id alone would let ON CONFLICT DO UPDATE reach other workspaces.
        primary key (workspace_id, id));
      create index notes_ws on notes (workspace_id);
      alter table notes enable row level security;
      alter table notes force row level security;
      create policy n_ws on notes for all
        using (workspace_id = (select nullif(current_setting('app.workspace_id', true), '')))
        with check (workspace_id = (select nullif(current_setting('app.workspace_id', true), '')));
      grant select, insert, update, delete on notes to ${app};
      grant usage on sequence notes_id_seq to ${app};

      create table audit_log (
        id uuid primary key default gen_random_uuid(), time timestamptz not null,
        recorded_at timestamptz not null default now(), workspace_id text, user_id text,
        action text not null, decision text not null, source text not null, reason text not null,
        principal text, token_id text, namespace text, workflow_id text, run_id text,
        workflow_type text, activity_type text, activity_id text, attempt integer, detail text);
      alter table audit_log enable row level security;
      alter table audit_log force row level security;
      create policy a_ins on audit_log for insert with check (
        workspace_id is null or workspace_id = (select nullif(current_setting('app.workspace_id', true), '')));
      create policy a_read on audit_log for select using (
        workspace_id = (select nullif(current_setting('app.workspace_id', true), ''))
        and (select 'admin' = any (string_to_array(nullif(current_setting('app.roles', true), ''), ','))));
      grant select, insert on audit_log to ${app};
      reset role;
    `);
  });
}

/** Unique, valid role names for one test file (roles are shared across databases of a cluster). */
export function uniqueRoles(tag: string): { owner: string; app: string } {
  const suffix = Math.random().toString(36).slice(2, 8);
  return { owner: `own_${tag}_${suffix}`, app: `app_${tag}_${suffix}` };
}

/** What a sealed policy compares a workspace with: the seal's function, once per statement. */
const SEALED_WS = '(select user_scope.workspace_id())';

/**
 * The fixture of {@link createFixtureSchema} with the sealed scope (`scopeSealSql`, schema
 * `user_scope`): the same tables, every policy reading the seal's functions instead of settings, and
 * audit records admitted from the audit sink's scopes only (a workspace's alone, or the system scope).
 */
export async function createSealedFixtureSchema(
  admin: SqlDatabase,
  roles: { owner: string; app: string },
): Promise<void> {
  await createFixtureSchema(admin, roles);
  const { owner, app } = roles;
  await admin.session(async (s) => {
    // The owner creates the schema and pgcrypto (a trusted extension): CREATE on the database.
    const db = await s.query<{ name: string }>('select current_database() as name');
    await s.exec(`grant create on database "${db.rows[0]!.name}" to ${owner}`);
    await s.exec(`set role ${owner}`);
    await s.exec(scopeSealSql({ appRole: app }));
    await s.exec(`
      alter policy m_read on memberships using (
        workspace_id = ${SEALED_WS} and user_id = (select user_scope.user_id()));
      alter policy n_ws on notes using (workspace_id = ${SEALED_WS}) with check (workspace_id = ${SEALED_WS});
      alter policy a_ins on audit_log with check (
        (workspace_id is null and (select user_scope.system_scope()))
        or workspace_id = (select user_scope.sink_workspace_id()));
      alter policy a_read on audit_log using (
        workspace_id = ${SEALED_WS} and (select 'admin' = any (user_scope.roles())));
      reset role;
    `);
  });
}

/** What `promise` rejected with; throws when it resolves. */
export async function rejection(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (err) {
    return err;
  }
  throw new Error('expected a rejection');
}
