import { ErrorCodes, UserContextError } from '../context/errors.js';
import type { SqlQueryable } from './database.js';
import { DEFAULT_APP_ROLE } from './scope.js';
import { assertRoleName } from './ident.js';

/** Options of {@link assertIsolation}: which role and tables to check. */
export interface IsolationGuardOptions {
  /** The role scoped transactions switch to. Default `app_user`. */
  appRole?: string;
  /** Schema to inspect. Default `public`. */
  schema?: string;
  /** Tables to treat as tenant tables in addition to every table with a `workspace_id` column. */
  tenantTables?: readonly string[];
  /**
   * Check that the login role may `SET ROLE` to the app role (default true). Off for a connection that
   * will not serve scopes, such as a migration run as the tables' owner.
   */
  checkLogin?: boolean;
}

/** What the guard inspected, for start-up logs. */
export interface IsolationReport {
  appRole: string;
  schema: string;
  tenantTables: string[];
  views: string[];
  /**
   * The role the connection logged in as. When it is SUPERUSER or BYPASSRLS (`bypassesRls`), scoped
   * transactions are still isolated (they switch to the app role), but a query run outside one sees
   * every workspace: log it, and in production log in as a role that can only `SET ROLE` to the app
   * role. Not refused: embedded PGlite has only a superuser.
   */
  login: { role: string; bypassesRls: boolean };
}

interface TableRow {
  name: string;
  kind: string;
  rls: boolean;
  force: boolean;
  owner: string;
  app_is_owner: boolean;
  options: string[] | null;
  app_can_use: boolean;
  app_can_truncate: boolean;
  has_workspace_id: boolean;
}

const TRUE_VALUES = new Set(['true', 'on', '1', 'yes']);

/**
 * Start-up guard: refuses to run with a database that would not isolate workspaces.
 *
 * Refuses (`USER_CONTEXT_MISCONFIGURED`, naming every offending table or view) when the app role
 * does not exist, is SUPERUSER or BYPASSRLS, owns (or is a member of the owner of) a tenant table; when
 * a tenant table lacks ENABLE or FORCE ROW LEVEL SECURITY; when a view the app role can read lacks
 * `security_invoker=true` (such a view runs with its owner's rights and skips RLS; any grant on it,
 * column-level or write-only too, counts); when the app role can use a materialized view over tenant
 * data (RLS does not apply to those); when it may TRUNCATE a tenant table, `SET ROLE` to a role that
 * bypasses RLS, or execute a `SECURITY DEFINER` function of the schema; or when a permissive policy on a
 * tenant table does not read `app.workspace_id`. Also when what `withUserScope` needs is missing:
 * a readable `memberships(workspace_id text, user_id text, roles text[])`, and a login role that may
 * `SET ROLE` to the app role.
 *
 * Tenant tables: every table of `schema` with a `workspace_id` column, plus `tenantTables`.
 */
export async function assertIsolation(
  db: SqlQueryable,
  options: IsolationGuardOptions = {},
): Promise<IsolationReport> {
  const appRole = assertRoleName(options.appRole ?? DEFAULT_APP_ROLE, 'app role');
  const schema = options.schema ?? 'public';
  const configured = [...(options.tenantTables ?? [])];
  const problems: string[] = [];

  const role = await db.query<{ rolsuper: boolean; rolbypassrls: boolean }>(
    'select rolsuper, rolbypassrls from pg_roles where rolname = $1',
    [appRole],
  );
  const attrs = role.rows[0];
  if (!attrs) {
    throw new UserContextError(ErrorCodes.MISCONFIGURED, `app role ${appRole} does not exist`);
  }
  if (attrs.rolsuper) problems.push(`app role ${appRole} is SUPERUSER`);
  if (attrs.rolbypassrls) problems.push(`app role ${appRole} has BYPASSRLS`);
  const loginRow = await db.query<{ role: string; bypasses: boolean }>(
    `select session_user::text as role, (rolsuper or rolbypassrls) as bypasses
       from pg_roles where rolname = session_user`,
  );
  const login = {
    role: loginRow.rows[0]?.role ?? 'unknown',
    bypassesRls: loginRow.rows[0]?.bypasses ?? true,
  };

  // pg_has_role(..., 'MEMBER') is true for the owner itself and for any member of the owning role:
  // either way the app role could ALTER the table or disable its policies.
  const { rows } = await db.query<TableRow>(
    `select c.relname as name, c.relkind::text as kind, c.relrowsecurity as rls, c.relforcerowsecurity as force,
            pg_get_userbyid(c.relowner) as owner, pg_has_role($2, c.relowner, 'MEMBER') as app_is_owner,
            c.reloptions as options,
            (has_any_column_privilege($2, c.oid, 'SELECT')
              or has_table_privilege($2, c.oid, 'SELECT,INSERT,UPDATE,DELETE')) as app_can_use,
            has_table_privilege($2, c.oid, 'TRUNCATE') as app_can_truncate,
            exists (select 1 from pg_attribute a
                     where a.attrelid = c.oid and a.attname = 'workspace_id' and a.attnum > 0 and not a.attisdropped)
              as has_workspace_id
       from pg_class c join pg_namespace n on n.oid = c.relnamespace
      where n.nspname = $1 and c.relkind in ('r', 'p', 'v', 'm')
      order by c.relname`,
    [schema, appRole],
  );

  const tenantTables: string[] = [];
  const views: string[] = [];
  for (const r of rows) {
    const isTable = r.kind === 'r' || r.kind === 'p';
    if (isTable && (r.has_workspace_id || configured.includes(r.name))) {
      tenantTables.push(r.name);
      if (r.app_is_owner)
        problems.push(
          `table ${schema}.${r.name} is owned by ${r.owner}, which app role ${appRole} is or belongs to`,
        );
      if (!r.rls) problems.push(`table ${schema}.${r.name} does not ENABLE ROW LEVEL SECURITY`);
      if (!r.force) problems.push(`table ${schema}.${r.name} does not FORCE ROW LEVEL SECURITY`);
      // RLS does not apply to TRUNCATE: one member's scope would empty the table for every workspace.
      if (r.app_can_truncate) problems.push(`app role ${appRole} may TRUNCATE table ${schema}.${r.name}`);
    } else if (r.kind === 'v' && r.app_can_use) {
      views.push(r.name);
      if (!securityInvoker(r.options)) problems.push(`view ${schema}.${r.name} lacks security_invoker=true`);
    } else if (r.kind === 'm' && r.app_can_use && r.has_workspace_id) {
      problems.push(
        `materialized view ${schema}.${r.name} holds tenant data and is readable by ${appRole} (no RLS on those)`,
      );
    }
  }
  for (const name of configured) {
    if (!tenantTables.includes(name))
      problems.push(`configured tenant table ${schema}.${name} does not exist`);
  }
  problems.push(...(await escapes(db, schema, appRole, tenantTables)));
  problems.push(...(await scopePrerequisites(db, schema, appRole, options.checkLogin ?? true)));
  if (problems.length > 0) {
    throw new UserContextError(ErrorCodes.MISCONFIGURED, `isolation guard: ${problems.join('; ')}`);
  }
  return { appRole, schema, tenantTables, views, login };
}

/**
 * Other ways out of RLS for the app role: a role it can `SET ROLE` to that bypasses RLS; a
 * `SECURITY DEFINER` function it may execute (it runs with its owner's rights, as a definer view does);
 * a permissive policy on a tenant table, for `PUBLIC` or any role the app role is or belongs to, whose
 * condition does not read `app.workspace_id` (such as
 * `using (true)`, or one on `current_user`, which is the app role for every workspace). The last is a
 * textual check of the policy's expressions: it catches the mistake, not a policy written to deceive.
 */
async function escapes(
  db: SqlQueryable,
  schema: string,
  appRole: string,
  tenantTables: readonly string[],
): Promise<string[]> {
  const problems: string[] = [];
  const reachable = await db.query<{ name: string }>(
    `select rolname as name from pg_roles
      where (rolsuper or rolbypassrls) and rolname <> $1 and pg_has_role($1, oid, 'MEMBER')
      order by rolname`,
    [appRole],
  );
  for (const r of reachable.rows)
    problems.push(`app role ${appRole} can SET ROLE to ${r.name}, which bypasses RLS`);
  const definers = await db.query<{ name: string }>(
    `select p.oid::regprocedure::text as name from pg_proc p join pg_namespace n on n.oid = p.pronamespace
      where n.nspname = $1 and p.prosecdef and has_function_privilege($2, p.oid, 'EXECUTE')
      order by 1`,
    [schema, appRole],
  );
  for (const f of definers.rows)
    problems.push(`function ${f.name} is SECURITY DEFINER and executable by ${appRole} (it skips RLS)`);
  const policies = await db.query<{ table: string; name: string; qual: string | null; check: string | null }>(
    `select tablename as table, policyname as name, qual, with_check as check from pg_policies
      where schemaname = $1 and permissive = 'PERMISSIVE'
        and ('public' = any (roles)
             or exists (select 1 from unnest(roles) r where r <> 'public' and pg_has_role($2, r, 'MEMBER')))
      order by tablename, policyname`,
    [schema, appRole],
  );
  const readsWorkspace = (expr: string | null) => expr === null || expr.includes('app.workspace_id');
  for (const p of policies.rows) {
    if (!tenantTables.includes(p.table)) continue;
    if (!readsWorkspace(p.qual) || !readsWorkspace(p.check) || (p.qual === null && p.check === null))
      problems.push(`policy ${p.name} on ${schema}.${p.table} does not read app.workspace_id`);
  }
  return problems;
}

/**
 * What `withUserScope` needs to work at all, checked here so that a schema missing it fails at start-up
 * rather than at its first request: the `memberships(workspace_id, user_id, roles text[])` relation that
 * the live membership check reads, its three columns readable by the app role, and a login role that
 * may `SET ROLE` to the app role. (Whether its policy lets a user read their own row is the policy's to
 * say.) The scope reads `memberships` through the search path; this checks the one in `schema`.
 */
async function scopePrerequisites(
  db: SqlQueryable,
  schema: string,
  appRole: string,
  checkLogin: boolean,
): Promise<string[]> {
  const problems: string[] = [];
  const { rows } = await db.query<{ column: string | null; type: string | null; readable: boolean | null }>(
    `select a.attname::text as column, format_type(a.atttypid, a.atttypmod) as type,
            has_column_privilege($2, c.oid, a.attnum, 'SELECT') as readable
       from pg_class c join pg_namespace n on n.oid = c.relnamespace
       left join pg_attribute a on a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped
                               and a.attname in ('workspace_id', 'user_id', 'roles')
      where n.nspname = $1 and c.relname = 'memberships' and c.relkind in ('r', 'p', 'v')`,
    [schema, appRole],
  );
  if (rows.length === 0) {
    problems.push(
      `table ${schema}.memberships, which withUserScope's membership check reads, does not exist`,
    );
  } else {
    for (const [column, type] of [
      ['workspace_id', 'text'],
      ['user_id', 'text'],
      ['roles', 'text[]'],
    ] as const) {
      const found = rows.find((r) => r.column === column);
      if (found?.type !== type) problems.push(`table ${schema}.memberships lacks column ${column} ${type}`);
      else if (!found.readable)
        problems.push(`app role ${appRole} may not SELECT ${column} of ${schema}.memberships`);
    }
  }
  if (checkLogin) {
    // From PostgreSQL 16 a membership grant may withhold SET (`WITH SET FALSE`, the ADMIN grant a
    // CREATEROLE creator gets); before 16 membership is what SET ROLE asks.
    const login = await db.query<{ role: string; can: boolean }>(
      `select session_user::text as role,
              pg_has_role(session_user, $1,
                          case when current_setting('server_version_num')::int >= 160000 then 'SET' else 'MEMBER' end)
                as can`,
      [appRole],
    );
    if (login.rows[0] && !login.rows[0].can)
      problems.push(`login role ${login.rows[0].role} cannot SET ROLE to app role ${appRole}`);
  }
  return problems;
}

function securityInvoker(options: string[] | null): boolean {
  for (const opt of options ?? []) {
    const [key, value] = opt.split('=', 2);
    if (key === 'security_invoker') return TRUE_VALUES.has((value ?? '').toLowerCase());
  }
  return false;
}
