import { ErrorCodes, UserContextError } from '../context/errors.js';
import { assertRoleName, quoteIdent } from './ident.js';

/**
 * The sealed scope: row-level security that SQL run inside a scope cannot talk out of.
 *
 * Without it, policies read the settings `app.workspace_id`, `app.user_id` and `app.roles`, which any
 * statement may change with `set_config(…, true)`: code that can run arbitrary SQL inside a scope (SQL
 * injection included) could set another workspace, act there and set it back before the scope's end
 * check. With it, a scope is entered through `<schema>.enter(…)`, a `SECURITY DEFINER` function that:
 *
 * - may run once per transaction, before the transaction has a transaction id, and gives it one
 *   (`pg_current_xact_id()`): the scope's first statement is the only one that chooses it, and nothing
 *   undoes an assigned id;
 * - reads the live membership itself and sets the three settings plus `app.scope_seal`, an HMAC-SHA-256
 *   (pgcrypto) of the three values, that transaction id and the transaction's start time, under a key
 *   in a table only the owner may read. A transaction id is unique in a running cluster, but a cluster
 *   restored from a copy (a dump, a base backup, a copied PGlite directory), or restarted after a crash
 *   before the transaction wrote, hands the same id out again, with the same key: the start time, to
 *   the microsecond, keeps a seal read in one transaction from opening another that got its id (found
 *   by review: first the restore, then a crash restart, which the server's start time did not cover).
 *
 * Policies read the values only through `<schema>.workspace_id()`, `<schema>.user_id()` and
 * `<schema>.roles()`, each of which checks the seal in the same call and returns NULL when it does not
 * match the settings in this transaction. A value and its check are never apart: PostgreSQL evaluates
 * each policy's sub-select (an InitPlan) lazily and keeps the value for the statement, so a separate
 * check (a restrictive policy calling a `sealed()`) could pass at one moment while a permissive policy
 * read a setting changed at another, within the same statement.
 */

/** Default schema of the seal's functions and key. */
export const DEFAULT_SEAL_SCHEMA = 'user_scope';

/** SQLSTATEs the seal's functions raise, mapped to `USER_CONTEXT_MISCONFIGURED` by `withUserScope`. */
export const SEAL_SQLSTATES = {
  /** The transaction has entered a scope already, or has a transaction id (it wrote) before entering. */
  enteredTwice: 'UC001',
  /** `memberships` has more than one row for the user and workspace. */
  duplicateMembership: 'UC002',
  /** A user given without a workspace (no user and no workspace is the system scope). */
  noWorkspace: 'UC003',
  /** The session's login role is no member of the app role. */
  notAppRoleMember: 'UC004',
} as const;

/** Options of {@link scopeSealSql}. */
export interface ScopeSealOptions {
  /** Schema for the functions and the key table; created when missing. Default {@link DEFAULT_SEAL_SCHEMA}. */
  schema?: string;
  /**
   * The role scoped transactions switch to: it gets EXECUTE on the functions policies call; `enter` is
   * executable by every role and admits logins that are members of it.
   */
  appRole?: string;
  /** Schema of `memberships(workspace_id, user_id, roles text[])`. Default `public`. */
  membershipsSchema?: string;
  /**
   * Schema pgcrypto is (or is to be) installed in. Default: the seal's schema. When pgcrypto is installed
   * already, name its schema here (`CREATE EXTENSION IF NOT EXISTS` does not move it).
   */
  pgcryptoSchema?: string;
}

/** Schema names this module splices into DDL (quoted too): lower-case identifiers. */
const SCHEMA_NAME = /^[a-z_][a-z0-9_]{0,62}$/;

function assertSchemaName(name: string, what: string): string {
  if (typeof name !== 'string' || !SCHEMA_NAME.test(name) || name.startsWith('pg_'))
    throw new UserContextError(
      ErrorCodes.MISCONFIGURED,
      `${what} must match ${SCHEMA_NAME.source}, not pg_*`,
    );
  return name;
}

/**
 * The seal's schema a call uses: its own option when given, else the adapter's (`SqlDatabase.seal`,
 * already validated when the adapter was made; a bare queryable has none).
 */
export function resolveSeal(
  option: boolean | { schema?: string } | undefined,
  db: { readonly seal?: string },
): string | undefined {
  return option === undefined ? db.seal : sealSchema(option);
}

/** The seal's schema, validated: what `withUserScope`, the audit sink and the guard are given. */
export function sealSchema(seal: boolean | { schema?: string } | undefined): string | undefined {
  if (seal === undefined || seal === false) return undefined;
  return assertSchemaName(
    seal === true ? DEFAULT_SEAL_SCHEMA : (seal.schema ?? DEFAULT_SEAL_SCHEMA),
    'seal schema',
  );
}

/**
 * The SQL that installs (or updates: it is idempotent) the sealed scope, to run as the tables' owner,
 * in a migration: a schema with a one-row key table (a random 32-byte secret, readable by its owner
 * only), pgcrypto, the owner-only `seal_of`, three `SECURITY DEFINER` functions, `sealed_setting` and
 * `sink_scope` (executable by the app role) and `enter` (by every login that is a member of it), and
 * what policies call: `workspace_id()`, `user_id()` and `roles()`, SQL functions the planner inlines
 * (and, for an audit table, `system_scope()` and `sink_workspace_id()`, SQL functions with a pinned
 * search path).
 * The owner needs CREATE on the database (or the schema and pgcrypto created for it).
 *
 * Then write every policy of a tenant table on those functions, never on the settings (the sub-select
 * evaluates each once per statement):
 *
 * ```sql
 * create policy notes_workspace on notes for all
 *   using (workspace_id = (select user_scope.workspace_id()))
 *   with check (workspace_id = (select user_scope.workspace_id()));
 * ```
 *
 * The audit sink writes a workspace's records in a scope of that workspace alone (no user) and records
 * of no workspace in the system scope, which sees no workspace. An INSERT policy that admits only
 * those keeps SQL run in a user's scope from writing audit records (naming another user, or none); the
 * guard refuses an audit INSERT policy that reads `workspace_id()`:
 *
 * ```sql
 * create policy audit_log_insert on audit_log for insert with check (
 *   (workspace_id is null and (select user_scope.system_scope()))
 *   or workspace_id = (select user_scope.sink_workspace_id()));
 * ```
 *
 * and make the adapter `fromPgPool(pool, { seal: true })` (or pass `seal` to `withUserScope` and the
 * audit sink), which then enter scopes through `<schema>.enter`. See docs/data-isolation.md, _Sealed
 * scopes_.
 */
export function scopeSealSql(options: ScopeSealOptions = {}): string {
  const s = quoteIdent(assertSchemaName(options.schema ?? DEFAULT_SEAL_SCHEMA, 'seal schema'));
  const appName = assertRoleName(options.appRole ?? 'app_user', 'app role');
  const app = quoteIdent(appName);
  const crypto = quoteIdent(
    assertSchemaName(options.pgcryptoSchema ?? options.schema ?? DEFAULT_SEAL_SCHEMA, 'pgcrypto schema'),
  );
  const memberships = `${quoteIdent(assertSchemaName(options.membershipsSchema ?? 'public', 'memberships schema'))}.memberships`;
  // Every function pins its search path (pg_temp last; it is never searched for functions or
  // operators) and names objects of other schemas in full.
  const pinned = 'set search_path = pg_catalog, pg_temp';
  return `
create schema if not exists ${s};
-- USAGE for every role: \`enter\` is looked up as the login role (below); the key table has no grant.
grant usage on schema ${s} to public;
revoke create on schema ${s} from public;
create extension if not exists pgcrypto with schema ${crypto};

create table if not exists ${s}.seal_key (
  singleton boolean primary key default true check (singleton),
  secret bytea not null check (octet_length(secret) >= 32)
);
-- From every role but the owner, the app role too: default privileges may have granted it more.
revoke all on ${s}.seal_key from public, ${app};
insert into ${s}.seal_key (secret) values (${crypto}.gen_random_bytes(32)) on conflict do nothing;

-- The seal of three setting values in the transaction p_xact started at this transaction's start time
-- (epoch microseconds, as an integer: no session setting changes its text): a restored copy of the
-- cluster, or one restarted after a crash, hands transaction ids out again, never with the same start.
-- A JSON array: no two lists of values encode alike. NULL without a key or a transaction id. PL/pgSQL, not SQL: its statements' plans are
-- kept for the session, where an SQL function's would be made per call. The owner's alone, called by
-- the functions below, whose search path it runs with (a SET clause of its own would cost every call).
create or replace function ${s}.seal_of(p_xact xid8, p_user text, p_workspace text, p_roles text) returns text
  language plpgsql stable
as $fn$
begin
  if p_xact is null then
    return null;
  end if;
  return (select encode(${crypto}.hmac(convert_to(jsonb_build_array('v2', p_xact::text,
                  (extract(epoch from pg_catalog.transaction_timestamp()) * 1000000)::bigint::text, p_user, p_workspace, p_roles)::text, 'UTF8'),
                  k.secret, 'sha256'), 'base64')
            from ${s}.seal_key k);
end
$fn$;

-- A setting's value while the seal matches the three settings in this transaction, else NULL: the
-- check and the value in one call (see the module's comment). A transaction without an id entered no
-- scope.
create or replace function ${s}.sealed_setting(p_name text) returns text
  language plpgsql stable security definer ${pinned}
as $fn$
begin
  -- The scope's three settings only: as a definer it would read others with its owner's rights.
  if p_name is null or p_name not in ('app.workspace_id', 'app.user_id', 'app.roles') then
    return null;
  end if;
  if current_setting('app.scope_seal', true) = ${s}.seal_of(pg_current_xact_id_if_assigned(),
       current_setting('app.user_id', true), current_setting('app.workspace_id', true),
       current_setting('app.roles', true)) then
    return nullif(current_setting(p_name, true), '');
  end if;
  return null;
end
$fn$;

-- What policies call: SQL functions without SECURITY DEFINER or SET, so that the planner inlines them
-- into the policy's sub-select (one definer call per value, not two). Every name is schema-qualified:
-- an inlined body is resolved with the caller's search path.
create or replace function ${s}.workspace_id() returns text
  language sql stable
as $fn$ select ${s}.sealed_setting('app.workspace_id') $fn$;

create or replace function ${s}.user_id() returns text
  language sql stable
as $fn$ select ${s}.sealed_setting('app.user_id') $fn$;

create or replace function ${s}.roles() returns text[]
  language sql stable
as $fn$ select pg_catalog.string_to_array(${s}.sealed_setting('app.roles'), ',') $fn$;

-- The audit sink's scopes (entered below: no user, no roles): the workspace of a scope of a workspace
-- alone, '' in the system scope, while the seal holds; NULL in any other scope (a user's) or none.
-- Value and check in one call, as in sealed_setting: a policy that took a NULL user_id() for "no
-- user" would pass once a user's seal is broken. A definer: it reads the key.
create or replace function ${s}.sink_scope() returns text
  language plpgsql stable security definer ${pinned}
as $fn$
begin
  if current_setting('app.user_id', true) = '' and current_setting('app.roles', true) = ''
     and current_setting('app.scope_seal', true) = ${s}.seal_of(pg_current_xact_id_if_assigned(), '',
       current_setting('app.workspace_id', true), '') then
    return current_setting('app.workspace_id', true);
  end if;
  return null;
end
$fn$;

-- What an audit table's INSERT policy asks, over sink_scope: whether the transaction is in the system
-- scope (records of no workspace), and the workspace of a scope of a workspace alone (NULL in any
-- other). Their search path is pinned (so they are not inlined: NULLIF would otherwise look up its equality
-- operator on the caller's path); an audit INSERT is no hot path.
create or replace function ${s}.system_scope() returns boolean
  language sql stable ${pinned}
as $fn$ select coalesce(${s}.sink_scope() = '', false) $fn$;

create or replace function ${s}.sink_workspace_id() returns text
  language sql stable ${pinned}
as $fn$ select nullif(${s}.sink_scope(), '') $fn$;

-- Enters the scope, once per transaction: the user's effective roles (p_roles that the stored
-- membership still has, in p_roles' order), '{}' when none is left, NULL without a membership row.
-- With an empty p_user, a scope of the workspace alone (an audit writer's): no user, no roles. With
-- neither, the system scope (an audit writer's records of no workspace): policies see no workspace.
create or replace function ${s}.enter(p_user text, p_workspace text, p_roles text[]) returns text[]
  language plpgsql volatile security definer ${pinned}
as $fn$
declare
  v_user text := coalesce(p_user, '');
  v_workspace text := coalesce(p_workspace, '');
  v_xact xid8;
  v_effective text[];
  v_rows int := 0;
  v_row record;
begin
  -- EXECUTE is PUBLIC's (PostgreSQL checks it as the statement starts, before the role switch that
  -- comes first in it, as the login role, which need not inherit the app role's rights): only a login
  -- that may become the app role enters.
  if not pg_has_role(session_user, '${appName}', 'MEMBER') then
    raise exception 'user scope: the login role is no member of the app role'
      using errcode = '${SEAL_SQLSTATES.notAppRoleMember}';
  end if;
  if v_workspace = '' and v_user <> '' then
    raise exception 'user scope: a user without a workspace' using errcode = '${SEAL_SQLSTATES.noWorkspace}';
  end if;
  -- The first statement of its transaction to ask for a transaction id: a transaction that has one
  -- entered a scope already (or wrote, which a scope's first statement never has). Nothing undoes an
  -- assigned id, not even ROLLBACK TO SAVEPOINT: SQL in the scope cannot enter again.
  if pg_current_xact_id_if_assigned() is not null then
    raise exception 'user scope: this transaction has entered a scope already'
      using errcode = '${SEAL_SQLSTATES.enteredTwice}';
  end if;
  v_xact := pg_current_xact_id();
  perform set_config('app.user_id', v_user, true), set_config('app.workspace_id', v_workspace, true),
          set_config('app.roles', '', true),
          set_config('app.scope_seal', ${s}.seal_of(v_xact, v_user, v_workspace, ''), true);
  if v_user = '' then
    return null;
  end if;
  -- Read under the memberships policy with the scope just sealed (its owner is subject to it: FORCE).
  for v_row in
    select array(select r from unnest(p_roles) with ordinality as c(r, n) where r = any (m.roles) order by n) as eff
      from ${memberships} m where m.workspace_id = v_workspace and m.user_id = v_user
  loop
    v_rows := v_rows + 1;
    v_effective := v_row.eff;
  end loop;
  if v_rows > 1 then
    raise exception 'user scope: memberships has more than one row for this user and workspace'
      using errcode = '${SEAL_SQLSTATES.duplicateMembership}';
  end if;
  if v_rows = 0 then
    return null;
  end if;
  perform set_config('app.roles', array_to_string(v_effective, ','), true),
          set_config('app.scope_seal', ${s}.seal_of(v_xact, v_user, v_workspace, array_to_string(v_effective, ',')), true);
  return v_effective;
end
$fn$;

revoke all on function ${s}.seal_of(xid8, text, text, text), ${s}.sealed_setting(text), ${s}.workspace_id(),
  ${s}.user_id(), ${s}.roles(), ${s}.sink_scope(), ${s}.system_scope(), ${s}.sink_workspace_id(),
  ${s}.enter(text, text, text[]) from public;
grant execute on function ${s}.sealed_setting(text), ${s}.workspace_id(), ${s}.user_id(), ${s}.roles(),
  ${s}.sink_scope(), ${s}.system_scope(), ${s}.sink_workspace_id() to ${app};
grant execute on function ${s}.enter(text, text, text[]) to public;
-- Which seal this is: the start-up guard refuses another (an older one seals less).
comment on function ${s}.seal_of(xid8, text, text, text) is '${SEAL_VERSION}';
`;
}

/**
 * The version of the sealed scope `scopeSealSql` installs, written as the comment of its `seal_of`. The
 * guard (`assertIsolation` with `seal`) refuses a database whose seal says otherwise, or nothing (seals
 * installed before the thirty-fifth round): re-install it with `scopeSealSql` (found by review: a seal
 * of an earlier formula, which a restored copy of the cluster could replay, went on unnoticed).
 */
export const SEAL_VERSION = 'temporal-user-context sealed scope v2';

/** The seal's `SECURITY DEFINER` functions the app role may execute (the guard allows exactly these). */
export const SEAL_FUNCTIONS = ['enter(text,text,text[])', 'sealed_setting(text)', 'sink_scope()'] as const;

/** The functions policies call (plain SQL, inlined), which the app role must be able to execute. */
export const SEAL_ACCESSORS = [
  'workspace_id()',
  'user_id()',
  'roles()',
  'system_scope()',
  'sink_workspace_id()',
] as const;
