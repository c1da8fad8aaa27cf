import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import type { ClientBase } from 'pg';
import { PG_MIGRATE_LOCK_ID, runner, type MigrationBuilder } from 'node-pg-migrate';
import {
  assertRoleName,
  quoteIdent,
  scopeSealSql,
  type SqlDatabase,
  type SqlSession,
} from 'temporal-user-context/postgres';

/** What node-pg-migrate reports for each migration it ran. */
export type RunMigration = Awaited<ReturnType<typeof runner>>[number];

/** Where the SQL migrations live (next to this module, so it works from any cwd). */
export const MIGRATIONS_DIR = fileURLToPath(new URL('./migrations', import.meta.url));

export interface MigrateOptions {
  /** Role that owns every table; migrations run as it. Default `agent_owner`. */
  ownerRole?: string;
  /** Non-owner role the application switches to; gets only the grants in the migrations. Default `app_user`. */
  appRole?: string;
  /**
   * Create both roles (NOLOGIN) when missing and give the owner CREATE on schema `public` and on the
   * database (migration 0009 creates schema `user_scope` and the pgcrypto extension).
   * Needs a connection with CREATEROLE (a superuser in tests and with PGlite). Default true; turn off
   * when a DBA provisions the roles and the migrations connect as the owner itself.
   */
  bootstrapRoles?: boolean;
  /** `up` (default) or `down`; `count` migrations (default all for up, 1 for down). */
  direction?: 'up' | 'down';
  count?: number;
  /** Log lines from node-pg-migrate, and each retry after a lock wait; silent by default. */
  log?: (message: string) => void;
  /**
   * How long a statement of a migration waits for a table lock before the migration gives up and is
   * tried again (default 5 000 ms; migrations may set a longer one of their own). A migration whose
   * lock is held by a long transaction then holds up the traffic queued behind it for this long, not
   * until that transaction ends.
   */
  lockTimeoutMs?: number;
  /**
   * Tries of one migration that gave up on a lock (`55P03`) or was chosen to break a deadlock
   * (`40P01`), with waits of 1, 2, 4, ... seconds (at most 30) between them (default 6). Up, each migration
   * commits on its own, so a retry starts from the one that gave up; down, the whole rollback is tried again.
   */
  lockAttempts?: number;
}

/** SQLSTATEs of a migration that lost a lock to live traffic: trying it again may pass. */
const LOCK_LOST = new Set(['55P03', '40P01']);

/**
 * Applies the agent platform's migrations with node-pg-migrate, against a `pg` Pool or PGlite.
 *
 * node-pg-migrate only needs a client with `query(text, values)`. For PGlite we hand it a thin shim over
 * one {@link SqlSession}: parameterless text goes through `exec` (simple protocol, so a multi-statement
 * SQL migration works — PGlite's `query` would refuse it), anything with values through `query`.
 * The SQL files use `{{owner_role}}` / `{{app_role}}`, replaced by validated, quoted identifiers.
 */
export async function migrate(db: SqlDatabase, options: MigrateOptions = {}): Promise<RunMigration[]> {
  const ownerRole = assertRoleName(options.ownerRole ?? 'agent_owner', 'owner role');
  const appRole = assertRoleName(options.appRole ?? 'app_user', 'app role');
  if (ownerRole === appRole) throw new Error('owner role and app role must differ');
  // node-pg-migrate reads a count of 0 as "all": `down` with 0 would revert every migration, the audit
  // log's included.
  if (options.count !== undefined && !(Number.isInteger(options.count) && options.count >= 1))
    throw new Error('migrate: count must be an integer of at least 1');
  const lockTimeoutMs = options.lockTimeoutMs ?? 5_000;
  if (!(Number.isInteger(lockTimeoutMs) && lockTimeoutMs >= 1 && lockTimeoutMs <= 600_000))
    throw new Error('migrate: lockTimeoutMs must be an integer from 1 to 600000');
  const lockAttempts = options.lockAttempts ?? 6;
  if (!(Number.isInteger(lockAttempts) && lockAttempts >= 1 && lockAttempts <= 100))
    throw new Error('migrate: lockAttempts must be an integer from 1 to 100');
  const log = options.log ?? (() => undefined);
  return db.session(async (session) => {
    if (options.bootstrapRoles !== false) await bootstrapRoles(session, ownerRole, appRole);
    // pgcrypto where it is installed already (CREATE EXTENSION IF NOT EXISTS would not move it).
    const pgcrypto = await session.query<{ schema: string }>(
      `select n.nspname as schema from pg_extension e join pg_namespace n on n.oid = e.extnamespace
        where e.extname = 'pgcrypto'`,
    );
    const substitutions: Record<string, string> = {
      owner_role: quoteIdent(ownerRole),
      app_role: quoteIdent(appRole),
      // Migration 0009: the library's sealed scope, for this app role.
      scope_seal: scopeSealSql({
        appRole,
        ...(pgcrypto.rows[0] ? { pgcryptoSchema: pgcrypto.rows[0].schema } : {}),
      }),
    };
    // Session-level on a dedicated connection: the owner creates (and so owns) every table, including
    // node-pg-migrate's own bookkeeping table. RESET here as well as by the adapter's session reset:
    // `migrate` takes any SqlDatabase, not only this package's adapters.
    await session.exec(`SET ROLE ${quoteIdent(ownerRole)}`);
    // No statement limit for the migrations (an index built on a large table takes what it takes); the
    // platform's connections have one (config.ts, POOL_LIMITS), which RESET brings back. A limit on lock
    // waits instead: a migration queued behind a long transaction holds up every statement queued
    // behind it (found by review: 16 s of stalled requests behind one 20 s read).
    await session.exec('SET statement_timeout = 0');
    // node-pg-migrate's lock, taken here for every step at once and before the lock limit, which would
    // apply to it too (found by review: a second migrator gave up after a minute behind a long index
    // build of the first, where it used to wait for it).
    await session.query('select pg_advisory_lock($1)', [String(PG_MIGRATE_LOCK_ID)]);
    await session.exec(`SET lock_timeout = '${lockTimeoutMs}ms'`);
    try {
      const run = (count: number | undefined) =>
        withLockRetries(lockAttempts, log, () =>
          runner({
            dbClient: pgClientShim(session),
            dir: MIGRATIONS_DIR,
            migrationsTable: 'pgmigrations',
            direction: options.direction ?? 'up',
            ...(count !== undefined ? { count } : {}),
            singleTransaction: true,
            noLock: true,
            checkOrder: true,
            migrationLoaderStrategies: [{ extensions: ['.sql'], loader: sqlLoader(substitutions) }],
            log,
          }),
        );
      // A rollback (an operator's, in a maintenance window) lands whole or not at all: a down that
      // refuses (0006's, while ids it cannot hold are stored) leaves the schema where it was.
      if (options.direction === 'down') return await run(options.count);
      // Up, one migration per transaction, each committed before the next takes its locks: all pending
      // migrations in one transaction took one table's lock, then another's, against scopes taking them
      // the other way round, and deadlocked with live traffic (found by review: a database three
      // releases behind failed to upgrade twice out of two, stalling requests for 16-18 s each time).
      const ran: RunMigration[] = [];
      while (ran.length < (options.count ?? Number.POSITIVE_INFINITY)) {
        const step = await run(1);
        if (step.length === 0) break;
        ran.push(...step);
      }
      return ran;
    } finally {
      await session.exec('RESET lock_timeout');
      await session.query('select pg_advisory_unlock($1)', [String(PG_MIGRATE_LOCK_ID)]);
      await session.exec('RESET ROLE');
      await session.exec('RESET statement_timeout');
    }
  });
}

/**
 * `step` (one migration, in its own transaction, rolled back on failure), tried again while it loses a
 * lock to live traffic, up to `attempts` tries.
 */
async function withLockRetries<T>(
  attempts: number,
  log: (message: string) => void,
  step: () => Promise<T>,
): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await step();
    } catch (err) {
      const code = (err as { code?: unknown } | null)?.code;
      if (typeof code !== 'string' || !LOCK_LOST.has(code) || attempt >= attempts) throw err;
      const waitMs = Math.min(30_000, 1_000 * 2 ** (attempt - 1));
      log(
        `migrate: ${code === '40P01' ? 'deadlock' : 'lock wait'} (${code}); try ${attempt + 1} of ${attempts} in ${waitMs} ms`,
      );
      await new Promise((resolve) => setTimeout(resolve, waitMs));
    }
  }
}

/**
 * Key of the session advisory lock the role bootstrap holds. Its GRANTs rewrite the schema's catalog
 * row: two processes migrating one database at once (replicas starting together) failed with "tuple
 * concurrently updated" outside node-pg-migrate's own lock, which covers only the migrations.
 */
const BOOTSTRAP_LOCK = 7_305_221_146_208_317_001n;

/**
 * Creates the roles if missing and grants them the schema, one process per database at a time;
 * tolerant of a process migrating another database of the cluster creating the roles at the same moment.
 */
async function bootstrapRoles(session: SqlSession, ownerRole: string, appRole: string): Promise<void> {
  await session.query('select pg_advisory_lock($1)', [BOOTSTRAP_LOCK.toString()]);
  try {
    await createRolesAndGrant(session, ownerRole, appRole);
  } finally {
    await session.query('select pg_advisory_unlock($1)', [BOOTSTRAP_LOCK.toString()]);
  }
}

async function createRolesAndGrant(session: SqlSession, ownerRole: string, appRole: string): Promise<void> {
  for (const role of [ownerRole, appRole]) {
    const exists = await session.query('select 1 from pg_roles where rolname = $1', [role]);
    if (exists.rowCount > 0) continue;
    try {
      // Roles are cluster-wide; NOLOGIN: nobody connects as them, a login role switches with SET ROLE.
      await session.exec(`CREATE ROLE ${quoteIdent(role)} NOLOGIN NOSUPERUSER NOBYPASSRLS NOINHERIT`);
    } catch (err) {
      // 42710 duplicate_object / 23505 unique_violation / XX000 "tuple concurrently updated": another
      // test database in the same cluster won the race. Anything else is a real failure.
      const again = await session.query('select 1 from pg_roles where rolname = $1', [role]);
      if (again.rowCount === 0) throw err;
    }
  }
  // CREATE on the database: the sealed scope's schema and pgcrypto (a trusted extension) are the owner's.
  // Nobody else creates in `public` (PostgreSQL 13 and 14 let everyone): SQL in one scope could add a
  // function there that takes the place of a system one in another workspace's statements. The guard
  // refuses a database where the app role still may (a login that does not own `public` is only warned).
  const database = await session.query<{ name: string }>('select current_database() as name');
  await session.exec(
    `REVOKE CREATE ON SCHEMA public FROM PUBLIC; ` +
      `GRANT USAGE, CREATE ON SCHEMA public TO ${quoteIdent(ownerRole)}; GRANT USAGE ON SCHEMA public TO ${quoteIdent(appRole)}; ` +
      `GRANT CREATE ON DATABASE ${quoteIdent(database.rows[0]!.name)} TO ${quoteIdent(ownerRole)}`,
  );
}

type QueryConfig = { text: string; values?: unknown[] };

/** The slice of `pg.ClientBase` node-pg-migrate calls on an external client. */
function pgClientShim(session: SqlSession): ClientBase {
  const shim = {
    async query(textOrConfig: string | QueryConfig, values?: unknown[]) {
      const text = typeof textOrConfig === 'string' ? textOrConfig : textOrConfig.text;
      const params = typeof textOrConfig === 'string' ? values : (textOrConfig.values ?? values);
      return params && params.length > 0 ? session.query(text, params) : session.exec(text);
    },
  };
  return shim as unknown as ClientBase;
}

/** Loads `NNNN_name.sql` files (`-- Up Migration` / `-- Down Migration`) with role placeholders filled in. */
function sqlLoader(substitutions: Record<string, string>) {
  return async (filePaths: string[]) =>
    Promise.all(
      [...filePaths].sort().map(async (filePath) => {
        const text = fill(await readFile(filePath, 'utf8'), substitutions);
        const up = section(text, 'up');
        if (up === undefined) throw new Error(`${filePath}: no "-- Up Migration" section`);
        const down = section(text, 'down');
        return {
          id: filePath,
          filePaths: [filePath],
          actions: {
            up: (pgm: MigrationBuilder) => pgm.sql(up),
            down: down === undefined ? (false as const) : (pgm: MigrationBuilder) => pgm.sql(down),
          },
        };
      }),
    );
}

function fill(text: string, substitutions: Record<string, string>): string {
  return text.replace(/\{\{(\w+)\}\}/g, (match, key: string) => {
    const value = substitutions[key];
    if (value === undefined) throw new Error(`unknown placeholder ${match} in migration`);
    return value;
  });
}

function section(text: string, direction: 'up' | 'down'): string | undefined {
  const markers = [...text.matchAll(/^\s*--\s*(up|down)\s+migration\b.*$/gim)];
  const i = markers.findIndex((m) => (m[1] ?? '').toLowerCase() === direction);
  const m = markers[i];
  if (!m) return undefined;
  const next = markers[i + 1];
  return text.slice((m.index ?? 0) + m[0].length, next ? next.index : text.length).trim();
}
