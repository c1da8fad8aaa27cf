import { chmodSync, existsSync, mkdirSync, statSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { PGlite } from '@electric-sql/pglite';
import { pgcrypto } from '@electric-sql/pglite/contrib/pgcrypto';
import pg from 'pg';
import { Runtime } from '@temporalio/worker';
import {
  ErrorCodes,
  KeyRing,
  UserContextError,
  generateKeySet,
  isUserContextError,
  metricsAuditSink,
  type AuditSink,
  type MirrorMode,
} from 'temporal-user-context';
import { TASK_QUEUE } from './workflows/agent-execution.js';
import {
  assertIsolation,
  fromPGlite,
  fromPgPool,
  type IsolationReport,
  type SqlDatabase,
  type SqlQueryable,
} from 'temporal-user-context/postgres';

/** apps/agent-platform */
export const APP_DIR = resolve(fileURLToPath(new URL('..', import.meta.url)));
/** Repository root. */
export const REPO_ROOT = resolve(APP_DIR, '../..');
/** Local state (git-ignored): PGlite data, key sets, dev issuer key, Temporal dev server database. */
export const DATA_DIR = process.env.AGENT_PLATFORM_DATA_DIR
  ? resolve(process.env.AGENT_PLATFORM_DATA_DIR)
  : join(APP_DIR, '.data');

export interface OpenedDatabase {
  db: SqlDatabase;
  /**
   * For the audit sinks: with `DATABASE_URL`, a pool of {@link AUDIT_POOL_SIZE} connections of their
   * own, so that the records of a busy moment are not queued behind the work they record (the sink's
   * backlog is bounded: records past it are dropped); with PGlite, `db` (one connection).
   */
  auditDb: SqlDatabase;
  kind: 'pg' | 'pglite';
  /**
   * Ends the pool. A PostgreSQL pool waits for its connections, and one stuck in a database that hangs
   * never returns: after `timeoutMs` (default {@link AUDIT_FLUSH_TIMEOUT_MS}) this gives up on it and
   * the process exits (code 1) instead of hanging at shutdown.
   */
  close(timeoutMs?: number): Promise<void>;
}

/**
 * How the platform makes its database adapters: with the sealed scope of migration 0009, which every
 * `withUserScope` and audit sink on them enters through (docs/data-isolation.md, _Sealed scopes_).
 */
export const DATABASE_OPTIONS = { seal: true } as const;

/** Connections of the audit sinks' own pool ({@link OpenedDatabase.auditDb}). */
export const AUDIT_POOL_SIZE = 2;

/**
 * Limits of every connection to `DATABASE_URL`. Found by review: with none, a database that stalls
 * (a lock, an outage) held API requests and activities without end in pg's queue for a connection.
 * - `connectionTimeoutMillis`: the longest wait for a connection (pg's default, 0, waits for ever);
 * - `statement_timeout`: the longest statement (the migrations lift it for their own session);
 * - `idle_in_transaction_session_timeout`: a transaction left open by a stalled client ends;
 * - `keepAlive`: TCP keepalive, so that a connection whose database went away without a word (a
 *   failover, a network cut) is found dead by the kernel instead of held for ever (found by review).
 * Those two timeouts are the database's: they end nothing once it is unreachable, which
 * {@link QUERY_TIMEOUT_MS} does, from this side.
 */
export const POOL_LIMITS = {
  connectionTimeoutMillis: 10_000,
  statement_timeout: 30_000,
  idle_in_transaction_session_timeout: 60_000,
  keepAlive: true,
  keepAliveInitialDelayMillis: 10_000,
} as const;

/**
 * The adapters' `queryTimeoutMs`: the longest wait for the answer to a statement of a transaction,
 * above `statement_timeout` so that the database ends a slow statement first. Found by review: ten
 * connections that went silent held the pool's ten slots, and every scope after them waited for a
 * connection and failed, until the process restarted.
 */
export const QUERY_TIMEOUT_MS = 45_000;

/** DATABASE_URL (a pg Pool) when set, else PGlite persisted at `<data>/pglite` (with pgcrypto). */
export async function openDatabase(
  options: { url?: string; pgliteDir?: string } = {},
): Promise<OpenedDatabase> {
  const url = options.url ?? process.env.DATABASE_URL;
  if (url) {
    const pool = new pg.Pool({ connectionString: url, max: 10, ...POOL_LIMITS });
    const auditPool = new pg.Pool({ connectionString: url, max: AUDIT_POOL_SIZE, ...POOL_LIMITS });
    return {
      db: fromPgPool(pool, { ...DATABASE_OPTIONS, queryTimeoutMs: QUERY_TIMEOUT_MS }),
      auditDb: fromPgPool(auditPool, { ...DATABASE_OPTIONS, queryTimeoutMs: QUERY_TIMEOUT_MS }),
      kind: 'pg',
      close: async (timeoutMs = AUDIT_FLUSH_TIMEOUT_MS) => {
        let timer: ReturnType<typeof setTimeout> | undefined;
        const ended = await Promise.race([
          Promise.all([pool.end(), auditPool.end()]).then(() => true),
          new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), timeoutMs))),
        ]);
        clearTimeout(timer);
        if (ended) return;
        console.error(`the database pool did not close within ${timeoutMs} ms (a connection hangs): exiting`);
        process.exit(1);
      },
    };
  }
  const dir = options.pgliteDir ?? join(DATA_DIR, 'pglite');
  if (!options.pgliteDir) createDataDir();
  ensurePrivateDir(dir);
  const lite = new PGlite(dir, { extensions: { pgcrypto } });
  await lite.waitReady;
  const db = fromPGlite(lite, DATABASE_OPTIONS);
  return { db, auditDb: db, kind: 'pglite', close: () => lite.close() };
}

/**
 * Tenant tables the isolation guard cannot find on its own: it finds those with a `workspace_id`
 * column, and `workspaces` is keyed by `id`.
 */
export const TENANT_TABLES: readonly string[] = ['workspaces'];

/**
 * The start-up isolation guard as every entry point runs it (worker, API, `npm start`). In production
 * (`NODE_ENV=production`) it also refuses a login role that is, or may become, a role that bypasses RLS
 * or owns the tables (`strictLogin`): SQL inside a scope could switch to it, past the seal. Log in as a
 * NOINHERIT role that may only `SET ROLE app_user`. Elsewhere such a login passes: embedded PGlite has
 * no other, and scoped transactions switch to the app role anyway.
 */
export async function assertPlatformIsolation(
  db: SqlQueryable,
  options: { checkLogin?: boolean } = {},
  env: NodeJS.ProcessEnv = process.env,
): Promise<IsolationReport> {
  try {
    return await assertIsolation(db, {
      tenantTables: TENANT_TABLES,
      ...DATABASE_OPTIONS,
      ...options,
      // Not for a connection that serves no scope (a migration's login): it runs no tenant query.
      strictLogin: options.checkLogin !== false && env.NODE_ENV === 'production',
    });
  } catch (err) {
    // A schema this release's migrations would bring up to date: say which command does (found by an
    // upgrade rehearsal: the library's refusal named scopeSealSql, not the platform's migrate).
    if (isUserContextError(err, ErrorCodes.MISCONFIGURED) && /scopeSealSql|does not exist/.test(err.reason))
      throw new UserContextError(
        ErrorCodes.MISCONFIGURED,
        `${err.reason} (run npm run migrate of this release on the database before starting it)`,
      );
    throw err;
  }
}

/**
 * Creates `dir` (and its missing parents) readable by this user only, and takes group and other
 * access away from it when it exists with them: for a directory of the platform's own (the embedded
 * database's), whose files hold run inputs, answers, documents and the audit trail in clear, and where
 * PGlite writes some of them world-writable (found by review: a WAL segment of mode 0666 in a directory
 * of mode 0755).
 */
export function ensurePrivateDir(dir: string): void {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  if ((statSync(dir).mode & 0o077) !== 0) chmodSync(dir, 0o700);
}

/**
 * Creates AGENT_PLATFORM_DATA_DIR for this user only when it is missing. One that exists is the
 * operator's (a mounted volume, a shared directory): its mode is left as it is (changing it failed on a
 * volume of another owner and dropped a shared directory's sticky bit; found by review). What it holds
 * that must be private is in subdirectories of mode 0700 (`pglite`, `keys`, `auth`).
 */
export function createDataDir(dir: string = DATA_DIR): void {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
}

export interface KeyFiles {
  edge: string;
  worker: string;
}

/**
 * Makes sure `<data>/keys/{edge,worker}.json` exist and returns their paths: a fresh set is generated
 * only when neither file exists (a first start in development). One without the other is refused: on a
 * host given only its own file, generating would replace it with keys nothing else holds. Files are
 * created, never overwritten. The worker file has no private signing key: workers verify, never mint.
 */
export function ensureKeyFiles(dir = join(DATA_DIR, 'keys')): KeyFiles {
  const files = { edge: join(dir, 'edge.json'), worker: join(dir, 'worker.json') };
  const present = [existsSync(files.edge), existsSync(files.worker)];
  if (present[0] && present[1]) return files;
  if (present[0] || present[1])
    throw new Error(
      `${present[0] ? files.edge : files.worker} exists without ${present[0] ? files.worker : files.edge}: ` +
        'set USER_CONTEXT_KEYS or USER_CONTEXT_KEYS_FILE to the key set this process should use, or remove both files to generate a new development set',
    );
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  // Said out loud: a deployment that forgot NODE_ENV=production and its key variables lands here.
  console.warn(
    `generated a development key set in ${dir} (set USER_CONTEXT_KEYS or USER_CONTEXT_KEYS_FILE to use your own)`,
  );
  const set = generateKeySet('agent-platform');
  // `wx`: another process generating at the same moment makes this one fail, not overwrite its keys.
  writeFileSync(files.edge, JSON.stringify(set.edge, null, 2), { mode: 0o600, flag: 'wx' });
  writeFileSync(files.worker, JSON.stringify(set.worker, null, 2), { mode: 0o600, flag: 'wx' });
  return files;
}

/**
 * The key ring of the API (`edge`: issues contexts) or of the worker (`worker`: verifies only):
 * USER_CONTEXT_KEYS / USER_CONTEXT_KEYS_FILE, else, outside production, the development files under
 * `<data>/keys` (generated on a first start). Refused: production without the variables, a worker ring
 * that can issue (it could mint any user; give workers worker.json), an API ring that cannot.
 */
export function platformKeyRing(
  role: 'edge' | 'worker',
  env: NodeJS.ProcessEnv = process.env,
  devKeysDir?: string,
): KeyRing {
  let ring: KeyRing;
  if (env.USER_CONTEXT_KEYS || env.USER_CONTEXT_KEYS_FILE) ring = KeyRing.fromEnv(env);
  else if (env.NODE_ENV === 'production')
    throw new Error('set USER_CONTEXT_KEYS or USER_CONTEXT_KEYS_FILE (production never generates keys)');
  else ring = KeyRing.fromFile(ensureKeyFiles(devKeysDir)[role]);
  if (role === 'worker' && ring.holdsPrivateKey)
    throw new Error(
      "the worker's key set holds the private signing key, so it could mint any user's context: give workers worker.json (npm run keys)",
    );
  if (role === 'edge' && !ring.canIssue)
    throw new Error(
      "the API's key set has no active private signing key: give the API edge.json (npm run keys)",
    );
  return ring;
}

/**
 * How long a stopping process waits for its audit records to reach `audit_log` (then those left are
 * written to stderr, the sink's `onError`, not lost), and then for its pool to close (then it exits):
 * it stops even if the database hangs.
 */
export const AUDIT_FLUSH_TIMEOUT_MS = 10_000;

/**
 * The task queue the worker polls and the API starts runs on: AGENT_PLATFORM_TASK_QUEUE, else (unset or
 * empty) `agent-tasks`. Separate deployments sharing a namespace (staging beside production, a test run
 * against a shared server) each need their own.
 */
export function taskQueue(env: NodeJS.ProcessEnv = process.env): string {
  const value = env.AGENT_PLATFORM_TASK_QUEUE;
  if (!value) return TASK_QUEUE;
  if (!/^[A-Za-z0-9][A-Za-z0-9._:@/-]{0,199}$/.test(value))
    throw new Error('AGENT_PLATFORM_TASK_QUEUE must be 1 to 200 letters, digits or ._:@/- (no spaces)');
  return value;
}

/**
 * The edge's actor window (`actorWindowSeconds`): AGENT_PLATFORM_ACTOR_WINDOW_SECONDS, else (unset or
 * empty) the library's default, 300 s. It is how long a `cancel` or an instruction may wait for a
 * worker and still verify, and how long a copied actor header could act again on its run.
 */
export function actorWindowSeconds(env: NodeJS.ProcessEnv = process.env): number | undefined {
  // Decimal digits only: Number() would also take `1e3`, `0x12c` and spaces. The plugin checks the bounds.
  const value = env.AGENT_PLATFORM_ACTOR_WINDOW_SECONDS;
  if (!value) return undefined;
  if (!/^[0-9]+$/.test(value))
    throw new Error('AGENT_PLATFORM_ACTOR_WINDOW_SECONDS must be a whole number of seconds, 1 to 86400');
  return Number(value);
}

/**
 * Where the worker takes each activity's lineage from (`activityLineage`): AGENT_PLATFORM_ACTIVITY_LINEAGE
 * (`server` or `header`), else (unset or empty) `server`. The platform asks the server: a rogue worker's
 * workflow cannot borrow a token copied from history, and a start token copied into a new start of its
 * run is held to the run's arguments too (docs/wire-format.md, checks 8 and 10), for one to three
 * lookups per run and one per chain. `header` saves them (the library's default).
 */
export function activityLineage(env: NodeJS.ProcessEnv = process.env): 'server' | 'header' {
  const value = env.AGENT_PLATFORM_ACTIVITY_LINEAGE;
  if (!value) return 'server';
  if (value !== 'server' && value !== 'header')
    throw new Error("AGENT_PLATFORM_ACTIVITY_LINEAGE must be 'server' or 'header'");
  return value;
}

/**
 * Exposes the Temporal runtime's metrics on a Prometheus endpoint at AGENT_PLATFORM_METRICS_ADDRESS
 * (`host:port`), when set, with the library's `metricsAuditSink` among them: returns the sink to list
 * among the worker's audit sinks, or nothing when unset. Installs the runtime, so it must run before
 * anything else in the process uses it (a connection).
 */
export function runtimeMetrics(env: NodeJS.ProcessEnv = process.env): AuditSink | undefined {
  const bindAddress = env.AGENT_PLATFORM_METRICS_ADDRESS;
  if (!bindAddress) return undefined;
  if (!/^[^\s:]+:\d{1,5}$/.test(bindAddress))
    throw new Error('AGENT_PLATFORM_METRICS_ADDRESS must be host:port');
  Runtime.install({ telemetryOptions: { metrics: { prometheus: { bindAddress } } } });
  return metricsAuditSink(Runtime.instance().metricMeter);
}

/**
 * The search-attribute mirror: AGENT_PLATFORM_SEARCH_ATTRIBUTES (`pseudonym`, `plain` or `off`), else
 * (unset or empty) `fallback`. Turn it on only where `UserId` and `WorkspaceId` are registered on the
 * namespace: the server refuses every start that sets an unregistered search attribute.
 */
export function searchAttributeMirror(
  fallback: MirrorMode,
  env: NodeJS.ProcessEnv = process.env,
): MirrorMode {
  // Empty means unset, as for the other variables here (`FOO= npm start` clears a value).
  const value = env.AGENT_PLATFORM_SEARCH_ATTRIBUTES || fallback;
  if (value !== 'pseudonym' && value !== 'plain' && value !== 'off') {
    throw new Error('AGENT_PLATFORM_SEARCH_ATTRIBUTES must be pseudonym, plain or off');
  }
  return value;
}
