// The start-up guard's checks for the sealed scope (guard.ts), whose promise is to hold against SQL run
// inside a scope: that SQL must find nothing to plant for other workspaces' statements to run, and no
// key through which to learn what other workspaces hold.
import type { SqlQueryable } from './database.js';
import { AUDIT_TABLE } from './audit.js';

/** Schemas of the system's own, whose objects no application role creates. */
const SYSTEM_SCHEMA = `(n.nspname like 'pg\\_%' or n.nspname = 'information_schema')`;

/**
 * `check` (a privilege test of role `rr.oid`) holds for the app role (the query's parameter `app`) or a
 * role it may switch to: SQL in a scope may `SET ROLE` to any role the app role is a member of, and a
 * NOINHERIT app role's own privileges do not show theirs. Superusers aside: reaching one is refused on its own (it holds every
 * privilege, and would name every object).
 */
export const BY_APP_OR_ITS_ROLES = (check: string, app: '$1' | '$2') =>
  `exists (select 1 from pg_roles rr where (rr.rolname = ${app} or pg_has_role(${app}, rr.oid, 'MEMBER'))
            and not rr.rolsuper and (${check}))`;

/**
 * What SQL in a scope could plant: every scope runs as the app role (and SQL in one may switch to any
 * role its login may become), so an object one scope adds or changes, others use. PostgreSQL resolves
 * a call over every schema of the search path, and an exact match in a later schema beats a
 * `pg_catalog` function that needs a cast: a `public.pg_advisory_xact_lock(integer)` planted by one
 * workspace's scope runs in another's, as the app role, inside its seal. A schema named after the app
 * role comes first on the default search path (`"$user"`), ahead of `public`, so a view planted there
 * takes the place of a table. Refused, for the app role, every role it may switch to (the login may
 * become those too: the app role is NOINHERIT, so its own privileges do not show theirs) and, with
 * `login`, every role the login may become: CREATE on the database (a schema, or a trusted extension
 * whose operators shadow the system's), or owning it; CREATE on any schema (PostgreSQL 13 and 14 grant
 * it on `public` to everyone unless revoked), or owning one; owning anything else of the database that
 * statements find by name (an owner may alter it: a function's search path, a rule or trigger on a
 * table, its policies), large objects and default privileges aside, which no statement resolves;
 * TRIGGER on a table or view (a trigger runs in the statements of every scope that writes it).
 */
export async function plantingGrounds(db: SqlQueryable, appRole: string, login: boolean): Promise<string[]> {
  const { rows } = await db.query<{ role: string; what: string; hint: string }>(
    `with planters as (
       select r.oid, r.rolname from pg_roles r
        where r.rolname = $1 or pg_has_role($1, r.oid, 'MEMBER')
           or ($2::boolean and pg_has_role(session_user, r.oid, 'MEMBER'))
     ), here as (select oid, datname, datdba from pg_database where datname = current_database())
     select p.rolname as role,
            case when pg_has_role(p.oid, here.datdba, 'MEMBER') then 'owns' else 'may CREATE in' end
              || ' database ' || here.datname as what,
            'revoke it, or give the database to another owner' as hint
       from planters p, here
      where has_database_privilege(p.oid, here.oid, 'CREATE') or pg_has_role(p.oid, here.datdba, 'MEMBER')
     union all
     select p.rolname,
            case when pg_has_role(p.oid, n.nspowner, 'MEMBER') then 'owns schema ' else 'may CREATE in schema ' end
              || n.nspname,
            'REVOKE CREATE ON SCHEMA ' || quote_ident(n.nspname) || ' FROM PUBLIC, or give it to another owner'
       from planters p, pg_namespace n
      where not ${SYSTEM_SCHEMA}
        and (has_schema_privilege(p.oid, n.oid, 'CREATE') or pg_has_role(p.oid, n.nspowner, 'MEMBER'))
     union all
     select p.rolname, 'owns ' || pg_describe_object(d.classid, d.objid, d.objsubid),
            'give it to another owner'
       from planters p, here, pg_shdepend d
      where d.dbid = here.oid and d.deptype = 'o' and pg_has_role(p.oid, d.refobjid, 'MEMBER')
        and d.classid not in ('pg_namespace'::regclass, 'pg_largeobject'::regclass,
                              'pg_largeobject_metadata'::regclass, 'pg_default_acl'::regclass)
     union all
     select p.rolname, 'may create triggers on ' || n.nspname || '.' || c.relname, 'revoke TRIGGER'
       from planters p, pg_class c join pg_namespace n on n.oid = c.relnamespace
      where c.relkind in ('r', 'p', 'f', 'v') and not ${SYSTEM_SCHEMA}
        and has_table_privilege(p.oid, c.oid, 'TRIGGER')
      order by 1, 2`,
    [appRole, login],
  );
  return rows.map(
    (r) =>
      `sealed scope: ${r.role === appRole ? `app role ${r.role}` : `role ${r.role}, which a scope may become,`} ${r.what} ` +
      `(SQL in a scope could plant what other workspaces' scopes then use: ${r.hint})`,
  );
}

/**
 * The foreign keys (`k`: source table `c` in schema `n`, target `t` in schema `tn`) for which `condition`
 * holds, with the app role as `$1`.
 */
function foreignKeys(db: SqlQueryable, appRole: string, condition: string) {
  return db.query<{ schema: string; table: string; name: string; target_schema: string; target: string }>(
    `select n.nspname as schema, c.relname as table, k.conname as name,
            tn.nspname as target_schema, t.relname as target
       from pg_constraint k join pg_class c on c.oid = k.conrelid
       join pg_namespace n on n.oid = c.relnamespace
       join pg_class t on t.oid = k.confrelid join pg_namespace tn on tn.oid = t.relnamespace
      where k.contype = 'f' and (${condition})
      order by 1, 2, 3`,
    [appRole],
  );
}

/**
 * Keys through which SQL in a scope learns what other workspaces hold, on tenant tables the app role may
 * write (a column grant is enough):
 * - unique or exclusion indexes without `workspace_id` among their key columns (an `INCLUDE`d one
 *   does not count: the index is still unique without it): PostgreSQL evaluates `INSERT … ON CONFLICT DO
 *   UPDATE … WHERE` on the conflicting row before the UPDATE policy checks it (with a key of `id` alone,
 *   a scope names another workspace's id, reads that row through the WHERE and locks it), and `ON
 *   CONFLICT DO NOTHING`, or the violation an insert or update meets, says whether another workspace has
 *   a value;
 * - foreign keys whose `workspace_id` is not matched with the target's (or, for a target keyed by the
 *   workspace itself, such as `workspaces`, that leave `workspace_id` out), to any table but a shared
 *   one: foreign-key checks skip row-level security, so a write that names another workspace's key, or
 *   a row of a table the app role cannot read, says whether it exists;
 * - foreign keys of a shared table the app role may write to any table but a shared one: a shared
 *   table has no workspace to match, so any row written to it may name another workspace's key;
 * - and foreign keys of any table but a shared one (a tenant table, say) into a shared table whose rows
 *   the app role may delete, or whose referenced columns it may update: the key's actions (a cascade)
 *   and checks run past row-level security, over every workspace's referencing rows.
 * A table listed as shared that is a tenant table counts as a tenant table.
 *
 * The audit table aside while the app role may not update it: its INSERT policy is held to the sink's
 * scopes (guard.ts, `escapes`), so SQL in a user's scope fails the check before any key is compared.
 */
export async function tenantKeys(
  db: SqlQueryable,
  schema: string,
  appRole: string,
  tenantTables: readonly string[],
  sharedTables: ReadonlySet<string>,
): Promise<string[]> {
  // Names as the options give them: in `schema` bare, elsewhere qualified.
  const named = (s: string, table: string) => (s === schema ? table : `${s}.${table}`);
  const isTenant = (s: string, table: string) => tenantTables.includes(named(s, table));
  const listedShared = (s: string, table: string) => sharedTables.has(named(s, table));
  // Listed as shared, and no tenant table (a table with `workspace_id` is one whatever the list says).
  const isShared = (s: string, table: string) => listedShared(s, table) && !isTenant(s, table);
  const listedNote = (r: { target_schema: string; target: string }) =>
    listedShared(r.target_schema, r.target) ? ' (a tenant table, though listed in sharedTables)' : '';
  const keys = await db.query<{
    schema: string;
    table: string;
    index: string;
    exclusion: boolean;
    updatable: boolean;
  }>(
    `select n.nspname as schema, c.relname as table, ic.relname as index, i.indisexclusion as exclusion,
            ${BY_APP_OR_ITS_ROLES("has_any_column_privilege(rr.oid, c.oid, 'UPDATE')", '$1')} as updatable
       from pg_index i join pg_class c on c.oid = i.indrelid
       join pg_namespace n on n.oid = c.relnamespace join pg_class ic on ic.oid = i.indexrelid
      where (i.indisunique or i.indisexclusion)
        and exists (select 1 from pg_attribute a
                     where a.attrelid = c.oid and a.attname = 'workspace_id' and not a.attisdropped
                       and not a.attnum = any ((i.indkey::int2[])[0:i.indnkeyatts - 1]))
        and ${BY_APP_OR_ITS_ROLES("has_any_column_privilege(rr.oid, c.oid, 'INSERT,UPDATE')", '$1')}
      order by 1, 2, 3`,
    [appRole],
  );
  const references = await foreignKeys(
    db,
    appRole,
    `${BY_APP_OR_ITS_ROLES("has_any_column_privilege(rr.oid, c.oid, 'INSERT,UPDATE')", '$1')}
     and not exists (
       select 1 from unnest(k.conkey, k.confkey) as m(src, dst)
         join pg_attribute sa on sa.attrelid = c.oid and sa.attnum = m.src and sa.attname = 'workspace_id'
         join pg_attribute da on da.attrelid = t.oid and da.attnum = m.dst
        where da.attname = 'workspace_id'
           or not exists (select 1 from pg_attribute x
                           where x.attrelid = t.oid and x.attname = 'workspace_id' and not x.attisdropped))`,
  );
  // Keys into a table the app role, or a role SQL in a scope may switch to, may delete rows of, or
  // update the referenced columns of: the key's actions (a cascade) and checks run past row-level
  // security.
  const actionable = await foreignKeys(
    db,
    appRole,
    BY_APP_OR_ITS_ROLES(
      `has_table_privilege(rr.oid, t.oid, 'DELETE')
       or exists (select 1 from unnest(k.confkey) as r(att)
                   where has_column_privilege(rr.oid, t.oid, r.att, 'UPDATE'))`,
      '$1',
    ),
  );
  return [
    ...keys.rows
      .filter((r) => isTenant(r.schema, r.table))
      .filter((r) => r.updatable || r.schema !== schema || r.table !== AUDIT_TABLE)
      .map(
        (r) =>
          `sealed scope: ${r.exclusion ? 'exclusion' : 'unique'} index ${r.schema}.${r.index} of ${r.table} does not contain workspace_id (INSERT … ON CONFLICT could read another workspace's row, or tell that it exists: lead the key with workspace_id)`,
      ),
    ...references.rows
      .filter((r) => !isShared(r.target_schema, r.target))
      .flatMap((r) => {
        const from = `${r.schema}.${r.table}`;
        const to = `${r.target_schema}.${r.target}`;
        if (isTenant(r.schema, r.table))
          return [
            `sealed scope: foreign key ${r.name} of ${from} to ${to}${listedNote(r)} does not match workspace_id with its target's (foreign-key checks skip row-level security: a write naming another workspace's key, or a row of a table ${appRole} cannot read, would tell that it exists)`,
          ];
        // A shared table has no workspace to match: any row written to it may name any workspace's key.
        if (isShared(r.schema, r.table))
          return [
            `sealed scope: foreign key ${r.name} of shared table ${from} to ${to}, which is not shared${listedNote(r)} (foreign-key checks skip row-level security: a row naming another workspace's key, or a row of a table ${appRole} cannot read, would tell that it exists; drop the key, or let ${appRole} only read ${from})`,
          ];
        return [];
      }),
    // From a tenant table into a shared one whose rows a scope may delete or re-key: the key's action
    // (a cascade, set null or default) changes every workspace's referencing rows, and its check (no
    // action, restrict) tells whether another workspace references the row.
    ...actionable.rows
      // Whatever the source, unless shared: a table with workspace_id the app role cannot use is still
      // every workspace's rows to a cascade.
      .filter((r) => !isShared(r.schema, r.table) && isShared(r.target_schema, r.target))
      .map(
        (r) =>
          `sealed scope: foreign key ${r.name} of ${r.schema}.${r.table} to shared table ${r.target_schema}.${r.target}, whose rows ${appRole} (or a role it may switch to) may delete or whose key it may update (the key's actions and checks skip row-level security: they would change rows of ${r.schema}.${r.table} a scope cannot reach, every workspace's, or tell that they reference it; let ${appRole} only read or insert into ${r.target_schema}.${r.target})`,
      ),
  ];
}
