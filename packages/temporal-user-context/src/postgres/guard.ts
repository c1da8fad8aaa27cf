import { ErrorCodes, UserContextError } from '../context/errors.js';
import type { SqlDatabase, SqlQueryable } from './database.js';
import { DEFAULT_APP_ROLE } from './scope.js';
import { assertRoleName } from './ident.js';
import { SEAL_ACCESSORS, SEAL_FUNCTIONS, SEAL_VERSION, resolveSeal } from './seal.js';
import { AUDIT_TABLE } from './audit.js';
import { BY_APP_OR_ITS_ROLES, plantingGrounds, tenantKeys } from './guard-sealed.js';

/** Options of {@link assertIsolation}: which role and tables to check. */
export interface IsolationGuardOptions {
  /** The role scoped transactions switch to. Default `app_user`. */
  appRole?: string;
  /** Schema to inspect. Default `public`. */
  schema?: string;
  /** Tables to treat as tenant tables in addition to every table with a `workspace_id` column. */
  tenantTables?: readonly string[];
  /**
   * Tables the app role may use that hold no tenant data (reference data shared by every workspace), as
   * `table` (in `schema`) or `other_schema.table`. Every other table the app role may use, in any schema
   * it may use, must be a tenant table: one without row-level security (a child table keyed by its
   * parent, say) would be readable across workspaces.
   */
  sharedTables?: readonly string[];
  /**
   * The sealed scope (`scopeSealSql`; `true`: schema `user_scope`) the scopes enter through: checks it
   * is installed for the app role, that the app role cannot replace it nor read its key, that SQL in a
   * scope finds nothing to plant for other scopes (no CREATE on the database or a schema, no object
   * owned, no TRIGGER: for the app role, and with `strictLogin` for every role the login may become),
   * that no unique or exclusion key, nor foreign key to another tenant table, of a tenant table it may
   * write lacks `workspace_id`, that no shared table it may write has a foreign key to a table that is
   * not shared, nor any other table one to a shared table whose rows it may delete or re-key (each
   * counting the roles it may switch to), that every
   * permissive policy of a tenant table reads `<schema>.workspace_id()` (or `sink_workspace_id()`) and no
   * setting directly, and that `audit_log`, when it is a tenant table, admits records by
   * `sink_workspace_id()` and `system_scope()`, not by `workspace_id()`. Its `enter`, `sealed_setting`
   * and `sink_scope` are the `SECURITY DEFINER` functions the app role may execute.
   * Default: the adapter's `seal`, when `db` is an adapter made with one.
   */
  seal?: boolean | { schema?: string };
  /**
   * Check that the login role may `SET ROLE` to the app role (default true). Off for a connection that
   * will not serve scopes, such as a migration run as the tables' owner.
   */
  checkLogin?: boolean;
  /**
   * Refuse a login role that is, or may become (`set_config('role', …)` needs only membership), a
   * role that bypasses RLS (SUPERUSER, BYPASSRLS) or that owns a tenant table or the sealed scope's
   * functions (default false: embedded PGlite has only a superuser). SQL inside a scope may switch to
   * any role its login may become: such a login leaves the seal nothing to protect. Also refuses a
   * login that may become any role the app role may not (but the monitoring roles `pg_monitor`,
   * `pg_read_all_settings`, `pg_read_all_stats`, `pg_stat_scan_tables`), has CREATEROLE or REPLICATION,
   * or holds a privilege on a relation that the app role has not, and holds the login's own policies
   * and functions (reached with `set_config('role', 'none', true)`) to the app role's checks. Turn it on in
   * production, with a NOINHERIT login that may only `SET ROLE` to the app role.
   */
  strictLogin?: boolean;
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
   * role. Not refused (unless `strictLogin`): embedded PGlite has only a superuser.
   *
   * `bypassesRls` counts the roles the login may become, not only its own attributes, and
   * `reachesOwner` says whether it may become the owner of a tenant table or of the sealed scope's
   * functions: either way, SQL inside a scope can leave the app role (`set_config('role', …)`) and the
   * seal protects nothing (docs/data-isolation.md, _Sealed scopes_).
   */
  login: { role: string; bypassesRls: boolean; reachesOwner: boolean };
}

interface TableRow {
  schema: string;
  name: string;
  kind: string;
  rls: boolean;
  force: boolean;
  owner: string;
  app_is_owner: boolean;
  login_is_owner: boolean;
  options: string[] | null;
  app_can_use: boolean;
  app_can_truncate: boolean;
  has_workspace_id: boolean;
}

const TRUE_VALUES = new Set(['true', 'on', '1', 'yes']);

/**
 * SQL condition on `n` (pg_namespace) for the schemas besides the inspected one that the app role
 * (`$2`) may use, the system's own and temporary ones aside.
 */
const USABLE_SCHEMA = `n.nspname not like 'pg\\_%' and n.nspname <> 'information_schema'
  and ${BY_APP_OR_ITS_ROLES("has_schema_privilege(rr.oid, n.oid, 'USAGE')", '$2')}`;

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
 * Also when the app role may use a table that is no tenant table (unless in `sharedTables`).
 *
 * Tenant tables: every table with a `workspace_id` column, plus `tenantTables`. Inspected: `schema`
 * and every other schema the app role has `USAGE` on (objects there are named `schema.name`).
 */
export async function assertIsolation(
  db: SqlQueryable,
  options: IsolationGuardOptions = {},
): Promise<IsolationReport> {
  const appRole = assertRoleName(options.appRole ?? DEFAULT_APP_ROLE, 'app role');
  const schema = options.schema ?? 'public';
  // An adapter made with `seal` says so (`SqlDatabase.seal`); a bare queryable does not.
  const seal = resolveSeal(options.seal, db as Partial<Pick<SqlDatabase, 'seal'>>);
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
  // Membership, not the login's own attributes: `set_config('role', r, true)` switches to any role r
  // the session user is a member of, NOINHERIT or not (on PostgreSQL 16, a grant WITH SET FALSE is
  // still counted: the conservative side).
  const loginRow = await db.query<{ role: string; bypasses: boolean }>(
    `select session_user::text as role,
            exists (select 1 from pg_roles r
                     where (r.rolsuper or r.rolbypassrls) and pg_has_role(session_user, r.oid, 'MEMBER'))
              as bypasses`,
  );
  const loginRole = loginRow.rows[0]?.role ?? 'unknown';
  const bypassesRls = loginRow.rows[0]?.bypasses ?? true;

  // pg_has_role(..., 'MEMBER') is true for the owner itself and for any member of the owning role:
  // either way the app role could ALTER the table or disable its policies.
  // Every schema the app role may use, not only `schema`: a table, view or function elsewhere is as
  // reachable (schema-qualified) as one on the search path.
  const { rows } = await db.query<TableRow>(
    `select n.nspname as schema, c.relname as name, c.relkind::text as kind, c.relrowsecurity as rls, c.relforcerowsecurity as force,
            pg_get_userbyid(c.relowner) as owner, pg_has_role($2, c.relowner, 'MEMBER') as app_is_owner,
            pg_has_role(session_user, c.relowner, 'MEMBER') as login_is_owner,
            c.reloptions as options,
            ${BY_APP_OR_ITS_ROLES(
              `has_any_column_privilege(rr.oid, c.oid, 'SELECT,INSERT,UPDATE,REFERENCES')
               or has_table_privilege(rr.oid, c.oid, 'SELECT,INSERT,UPDATE,DELETE,TRUNCATE,REFERENCES,TRIGGER')`,
              '$2',
            )} as app_can_use,
            ${BY_APP_OR_ITS_ROLES("has_table_privilege(rr.oid, c.oid, 'TRUNCATE')", '$2')} as app_can_truncate,
            exists (select 1 from pg_attribute a
                     where a.attrelid = c.oid and a.attname = 'workspace_id' and a.attnum > 0 and not a.attisdropped)
              as has_workspace_id
       from pg_class c join pg_namespace n on n.oid = c.relnamespace
      where (n.nspname = $1 or (${USABLE_SCHEMA})) and c.relkind in ('r', 'p', 'v', 'm', 'f')
      order by n.nspname <> $1, n.nspname, c.relname`,
    [schema, appRole],
  );

  const shared = new Set(options.sharedTables ?? []);
  let loginIsOwner = false;
  const tenantTables: string[] = [];
  const views: string[] = [];
  for (const r of rows) {
    const isTable = r.kind === 'r' || r.kind === 'p';
    // Names in `schema` as before (`notes`); elsewhere qualified (`reporting.notes`).
    const name = r.schema === schema ? r.name : `${r.schema}.${r.name}`;
    const at = `${r.schema}.${r.name}`;
    // In `schema`, every table with a workspace_id is a tenant table; elsewhere, those the app role may
    // use (a schema it may enter can hold tables of others: an archive it has no grant on is no leak).
    const tenant =
      (r.has_workspace_id && (r.schema === schema || r.app_can_use)) || configured.includes(name);
    if (isTable && tenant) {
      tenantTables.push(name);
      if (r.login_is_owner) loginIsOwner = true;
      if (r.app_is_owner)
        problems.push(`table ${at} is owned by ${r.owner}, which app role ${appRole} is or belongs to`);
      if (!r.rls) problems.push(`table ${at} does not ENABLE ROW LEVEL SECURITY`);
      if (!r.force) problems.push(`table ${at} does not FORCE ROW LEVEL SECURITY`);
      // RLS does not apply to TRUNCATE: one member's scope would empty the table for every workspace.
      if (r.app_can_truncate)
        problems.push(
          `app role ${appRole} may TRUNCATE table ${at} (itself, or through a role it may switch to)`,
        );
    } else if (r.kind === 'v' && r.app_can_use) {
      views.push(name);
      if (!securityInvoker(r.options)) problems.push(`view ${at} lacks security_invoker=true`);
    } else if (r.kind === 'm' && r.app_can_use && r.has_workspace_id) {
      problems.push(
        `materialized view ${at} holds tenant data and is readable by ${appRole} (no RLS on those)`,
      );
    } else if (r.schema === seal && r.name === 'seal_key') {
      // The seal's key: whoever reads it forges seals (sealProblems names it, whatever the grant).
      continue;
    } else if ((isTable || r.kind === 'f') && r.app_can_use && !shared.has(name)) {
      // Not a tenant table, yet the app role may use it: without row-level security (a foreign table
      // has none) every scope sees all of it.
      problems.push(
        `${r.kind === 'f' ? 'foreign table' : 'table'} ${at} is usable by ${appRole} but is no tenant table ` +
          '(no workspace_id column, not in tenantTables): give it row-level security and list it in ' +
          'tenantTables, or list it in sharedTables if it holds no tenant data',
      );
    }
  }
  for (const name of configured) {
    if (!tenantTables.includes(name))
      problems.push(
        `configured tenant table ${name.includes('.') ? name : `${schema}.${name}`} does not exist`,
      );
  }
  problems.push(...(await escapes(db, schema, appRole, tenantTables, seal)));
  if (seal !== undefined) {
    problems.push(...(await sealProblems(db, seal, appRole)));
    problems.push(...(await tenantKeys(db, schema, appRole, tenantTables, shared)));
  }
  problems.push(...(await scopePrerequisites(db, schema, appRole, options.checkLogin ?? true)));
  if (seal !== undefined && !loginIsOwner) {
    const owners = await db.query<{ reaches: boolean }>(
      `select coalesce(bool_or(pg_has_role(session_user, p.proowner, 'MEMBER')), false) as reaches
         from pg_proc p join pg_namespace n on n.oid = p.pronamespace where n.nspname = $1`,
      [seal],
    );
    loginIsOwner = owners.rows[0]?.reaches ?? true;
  }
  // SQL in a scope acts as the app role, or as any role its login may become: none may plant objects
  // that other scopes' statements would then use. The login's roles only where they are to be held
  // (strictLogin); one that bypasses RLS is refused for that already.
  if (seal !== undefined)
    problems.push(...(await plantingGrounds(db, appRole, options.strictLogin === true && !bypassesRls)));
  if (options.strictLogin === true && !bypassesRls)
    problems.push(...(await loginEscapes(db, schema, appRole, tenantTables, seal)));
  const login = { role: loginRole, bypassesRls, reachesOwner: loginIsOwner };
  if (options.strictLogin === true && (bypassesRls || loginIsOwner))
    problems.push(
      `login role ${loginRole} may become a role that ${bypassesRls ? 'bypasses RLS' : 'owns tenant tables or the sealed scope'}: ` +
        'SQL inside a scope could switch to it; log in as a NOINHERIT role that may only SET ROLE to the app role',
    );
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
  seal: string | undefined,
  who = `app role ${appRole}`,
): Promise<string[]> {
  const problems: string[] = [];
  const reachable = await db.query<{ name: string }>(
    `select rolname as name from pg_roles
      where (rolsuper or rolbypassrls) and rolname <> $1 and pg_has_role($1, oid, 'MEMBER')
      order by rolname`,
    [appRole],
  );
  for (const r of reachable.rows) problems.push(`${who} can SET ROLE to ${r.name}, which bypasses RLS`);
  const definers = await db.query<{ name: string; schema: string; signature: string }>(
    `select p.oid::regprocedure::text as name, n.nspname as schema,
            p.proname || '(' || replace(oidvectortypes(p.proargtypes), ' ', '') || ')' as signature
       from pg_proc p join pg_namespace n on n.oid = p.pronamespace
      where (n.nspname = $1 or (${USABLE_SCHEMA}))
        and p.prosecdef and ${BY_APP_OR_ITS_ROLES("has_function_privilege(rr.oid, p.oid, 'EXECUTE')", '$2')}
      order by 1`,
    [schema, appRole],
  );
  for (const f of definers.rows) {
    // The seal's own: they read the key, and return only what the scope sealed.
    if (f.schema === seal && (SEAL_FUNCTIONS as readonly string[]).includes(f.signature)) continue;
    problems.push(`function ${f.name} is SECURITY DEFINER and executable by ${who} (it skips RLS)`);
  }
  const policies = await db.query<{
    schema: string;
    table: string;
    name: string;
    cmd: string;
    qual: string | null;
    check: string | null;
  }>(
    `select schemaname as schema, tablename as table, policyname as name, cmd, qual, with_check as check
       from pg_policies
      where permissive = 'PERMISSIVE'
        and ('public' = any (roles)
             or exists (select 1 from unnest(roles) r where r <> 'public' and pg_has_role($1, r, 'MEMBER')))
      order by schemaname, tablename, policyname`,
    [appRole],
  );
  // Sealed: every permissive policy must depend on the seal's workspace_id() or sink_workspace_id()
  // (pg_depend, whatever the search path prints), each of its expressions must call one of them (printed
  // unqualified when the seal's schema is on this connection's search path), and none may read a setting
  // itself: a value read apart from its check may be read after the check passed
  // (docs/data-isolation.md). The audit sink's table admits records by sink_workspace_id() only: by
  // workspace_id(), SQL in a user's scope could write records naming anyone.
  const sealedPolicies =
    seal === undefined
      ? undefined
      : new Set(
          (
            await db.query<{ schema: string; table: string; name: string }>(
              `select n.nspname as schema, c.relname as table, pol.polname as name
                 from pg_policy pol join pg_class c on c.oid = pol.polrelid
                 join pg_namespace n on n.oid = c.relnamespace
                where exists (select 1 from pg_depend d
                               where d.classid = 'pg_policy'::regclass and d.objid = pol.oid
                                 and d.refclassid = 'pg_proc'::regclass
                                 and d.refobjid in (to_regprocedure($1 || '.workspace_id()'),
                                                    to_regprocedure($1 || '.sink_workspace_id()')))`,
              [seal],
            )
          ).rows.map((r) => `${r.schema}.${r.table}.${r.name}`),
        );
  const readsWorkspace = (expr: string | null) =>
    expr === null ||
    (sealedPolicies === undefined
      ? expr.includes('app.workspace_id')
      : /(^|[^\w$])(sink_)?workspace_id\(\)/.test(expr));
  const userScopeWorkspace = /(^|[^\w$])workspace_id\(\)/;
  for (const p of policies.rows) {
    if (!tenantTables.includes(p.schema === schema ? p.table : `${p.schema}.${p.table}`)) continue;
    const unsealed = sealedPolicies !== undefined && !sealedPolicies.has(`${p.schema}.${p.table}.${p.name}`);
    if (
      unsealed ||
      !readsWorkspace(p.qual) ||
      !readsWorkspace(p.check) ||
      (p.qual === null && p.check === null)
    )
      problems.push(
        `policy ${p.name} on ${p.schema}.${p.table} does not read ${seal === undefined ? 'app.workspace_id' : `${seal}.workspace_id()`}`,
      );
    else if (seal !== undefined && `${p.qual ?? ''} ${p.check ?? ''}`.includes('current_setting'))
      problems.push(`policy ${p.name} on ${p.schema}.${p.table} reads a setting, not the sealed scope`);
    else if (
      seal !== undefined &&
      p.schema === schema &&
      p.table === AUDIT_TABLE &&
      (p.cmd === 'INSERT' || p.cmd === 'ALL') &&
      userScopeWorkspace.test((p.cmd === 'ALL' ? (p.check ?? p.qual) : p.check) ?? '')
    )
      problems.push(
        `policy ${p.name} on ${p.schema}.${p.table} admits audit records by ${seal}.workspace_id(): SQL in a user's scope could write them (admit them by ${seal}.sink_workspace_id() and ${seal}.system_scope())`,
      );
  }
  return problems;
}

/**
 * With `strictLogin`, what SQL in a scope reaches by leaving the app role: for its login
 * (`set_config('role', 'none', true)`: the login's own grants and the policies for it), or for another
 * role the login may become. Found by review: the guard held only the app role's roles to the checks,
 * and a login that was also a member of a reporting role, whose policy read every workspace, passed;
 * so did a policy for the login itself. A role the login may become that the app role may not is
 * refused outright (none is needed: the login only switches to the app role); the login's own
 * privileges and policies are held to what the app role's are ({@link escapes}), and it may not
 * TRUNCATE a tenant table.
 */
async function loginEscapes(
  db: SqlQueryable,
  schema: string,
  appRole: string,
  tenantTables: readonly string[],
  seal: string | undefined,
): Promise<string[]> {
  const login = await db.query<{ role: string }>('select session_user::text as role');
  const loginRole = login.rows[0]?.role ?? 'unknown';
  const problems: string[] = [];
  // The predefined monitoring roles read statistics and settings, no table: a login may keep them.
  const others = await db.query<{ name: string }>(
    `select r.rolname as name from pg_roles r
      where pg_has_role(session_user, r.oid, 'MEMBER') and r.rolname <> session_user
        and r.rolname <> $1 and not pg_has_role($1, r.oid, 'MEMBER')
        and r.rolname not in ('pg_monitor', 'pg_read_all_settings', 'pg_read_all_stats', 'pg_stat_scan_tables')
      order by r.rolname`,
    [appRole],
  );
  for (const r of others.rows)
    problems.push(
      `login role ${loginRole} may become role ${r.name}, which app role ${appRole} may not: SQL inside a scope could switch to it; grant the login the app role only`,
    );
  problems.push(...(await escapes(db, schema, loginRole, tenantTables, seal, `login role ${loginRole}`)));
  // Attributes that reach past row-level security without a table grant (found by the round's review):
  // CREATEROLE gives the tables' owner a password, REPLICATION reads every workspace's changes from a
  // replication slot.
  const attributes = await db.query<{ createrole: boolean; replication: boolean }>(
    'select rolcreaterole as createrole, rolreplication as replication from pg_roles where rolname = session_user',
  );
  if (attributes.rows[0]?.createrole)
    problems.push(
      `login role ${loginRole} has CREATEROLE: SQL inside a scope could give the tables' owner a password`,
    );
  if (attributes.rows[0]?.replication)
    problems.push(
      `login role ${loginRole} has REPLICATION: SQL inside a scope could read every workspace's changes from a replication slot`,
    );
  // Grants of the login's own that the app role lacks, on any relation outside the catalogs: SQL back at
  // the login reads a view that runs as its owner, a table without row-level security, the seal's key
  // (found by the round's review: the table checks held the app role's grants only).
  const granted = await db.query<{ name: string }>(
    `select n.nspname || '.' || c.relname as name
       from pg_class c join pg_namespace n on n.oid = c.relnamespace
      where c.relkind in ('r', 'p', 'v', 'm', 'f', 'S')
        and n.nspname not in ('pg_catalog', 'information_schema') and n.nspname not like 'pg\\_toast%'
        and (exists (select 1 from unnest(array['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'REFERENCES', 'TRIGGER']) p
                      where has_table_privilege(session_user, c.oid, p) and not has_table_privilege($1, c.oid, p))
             or exists (select 1 from unnest(array['SELECT', 'INSERT', 'UPDATE', 'REFERENCES']) p
                         where has_any_column_privilege(session_user, c.oid, p)
                           and not has_any_column_privilege($1, c.oid, p)))
      order by 1`,
    [appRole],
  );
  for (const r of granted.rows)
    problems.push(
      `login role ${loginRole} has a privilege on ${r.name} that app role ${appRole} has not: SQL inside a scope reaches it with set_config('role', 'none', true); grant the login the app role only`,
    );
  const truncatable = await db.query<{ name: string }>(
    `select n.nspname || '.' || c.relname as name, case when n.nspname = $1 then c.relname else n.nspname || '.' || c.relname end as listed
       from pg_class c join pg_namespace n on n.oid = c.relnamespace
      where c.relkind in ('r', 'p') and has_table_privilege(session_user, c.oid, 'TRUNCATE')
      order by 1`,
    [schema],
  );
  for (const t of truncatable.rows as { name: string; listed: string }[])
    if (tenantTables.includes(t.listed))
      problems.push(`login role ${loginRole} may TRUNCATE table ${t.name} (RLS does not apply to TRUNCATE)`);
  return problems;
}

/**
 * The sealed scope's prerequisites: its functions present and executable by the app role (`enter`,
 * `sealed_setting` and `sink_scope` `SECURITY DEFINER`), none owned by a role the app role is (or
 * belongs to). Whether it may create in the schema is `plantingGrounds`' to say (./guard-sealed.ts).
 */
async function sealProblems(db: SqlQueryable, seal: string, appRole: string): Promise<string[]> {
  const problems: string[] = [];
  const { rows } = await db.query<{
    signature: string;
    definer: boolean;
    executable: boolean;
    app_owns: boolean;
    comment: string | null;
  }>(
    `select p.proname || '(' || replace(oidvectortypes(p.proargtypes), ' ', '') || ')' as signature,
            p.prosecdef as definer, has_function_privilege($2, p.oid, 'EXECUTE') as executable,
            pg_has_role($2, p.proowner, 'MEMBER') as app_owns, obj_description(p.oid, 'pg_proc') as comment
       from pg_proc p join pg_namespace n on n.oid = p.pronamespace
      where n.nspname = $1`,
    [seal, appRole],
  );
  for (const fn of [...SEAL_FUNCTIONS, ...SEAL_ACCESSORS]) {
    const found = rows.find((r) => r.signature === fn);
    if (!found)
      problems.push(`sealed scope: function ${seal}.${fn} does not exist (install it with scopeSealSql)`);
    else if (!found.definer && (SEAL_FUNCTIONS as readonly string[]).includes(fn))
      problems.push(`sealed scope: function ${seal}.${fn} is not SECURITY DEFINER`);
    else if (!found.executable)
      problems.push(`sealed scope: app role ${appRole} may not execute ${seal}.${fn}`);
  }
  for (const r of rows)
    if (r.app_owns)
      problems.push(`sealed scope: function ${seal}.${r.signature} is owned by app role ${appRole}`);
  // Where the functions are there at all: a seal of another version seals other facts.
  const sealOf = rows.find((r) => r.signature === 'seal_of(xid8,text,text,text)');
  if (problems.length === 0 && sealOf?.comment !== SEAL_VERSION)
    problems.push(
      `sealed scope: ${seal} is ${sealOf === undefined ? 'without seal_of' : sealOf.comment === null ? 'of a version before the library marked its seals' : `marked ${JSON.stringify(sealOf.comment)}`}, not ${JSON.stringify(SEAL_VERSION)}: re-install it with scopeSealSql (a migration)`,
    );
  const key = await db.query<{ exists: boolean; usable: boolean }>(
    `select to_regclass($1 || '.seal_key') is not null as exists,
            to_regclass($1 || '.seal_key') is not null and ${BY_APP_OR_ITS_ROLES(
              `has_table_privilege(rr.oid, to_regclass($1 || '.seal_key'),
                                   'SELECT,INSERT,UPDATE,DELETE,TRUNCATE,REFERENCES,TRIGGER')
               or has_any_column_privilege(rr.oid, to_regclass($1 || '.seal_key'), 'SELECT,INSERT,UPDATE,REFERENCES')`,
              '$2',
            )} as usable`,
    [seal, appRole],
  );
  if (!key.rows[0]?.exists)
    problems.push(`sealed scope: table ${seal}.seal_key does not exist (install it with scopeSealSql)`);
  else if (key.rows[0].usable)
    problems.push(
      `sealed scope: app role ${appRole} (itself, or through a role it may switch to) has a privilege on ${seal}.seal_key, the seal's key (revoke it: it could forge seals)`,
    );
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
