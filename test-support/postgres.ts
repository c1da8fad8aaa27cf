/**
 * Real PostgreSQL for tests and benchmarks.
 *
 * `ensurePostgres()` returns a base DATABASE_URL for a login that may create databases and roles:
 * `process.env.DATABASE_URL` when set (CI, global setup, a developer's server), otherwise the throw-away
 * PostgreSQL 15 that scripts/postgres.sh installs/starts under .data/pg.
 *
 * `createTestDatabase()` gives each test file its own database, so files running in parallel workers
 * never see each other's rows. Roles are cluster-wide and shared (migrate() creates them idempotently).
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import pg from 'pg';

const SCRIPT = fileURLToPath(new URL('../scripts/postgres.sh', import.meta.url));
let started: Promise<string> | undefined;

/** Base DATABASE_URL of a running PostgreSQL (starting one with scripts/postgres.sh if needed). */
export function ensurePostgres(): Promise<string> {
  const fromEnv = process.env.DATABASE_URL;
  if (fromEnv) return Promise.resolve(fromEnv);
  started ??= promisify(execFile)('bash', [SCRIPT], { timeout: 300_000, maxBuffer: 16 * 1024 * 1024 }).then(
    ({ stdout }) => {
      const url = stdout.trim().split('\n').pop() ?? '';
      if (!url.startsWith('postgres://')) throw new Error(`scripts/postgres.sh printed no URL: ${stdout}`);
      return url;
    },
  );
  return started;
}

/** A database created for one test file. */
export interface TestDatabase {
  /** Connection URL of the new database (same login as the base URL). */
  url: string;
  name: string;
  /** Drops the database (terminating leftover connections). */
  drop(): Promise<void>;
}

/** Returns `url` with its database name replaced. */
export function withDatabase(url: string, database: string): string {
  const u = new URL(url);
  u.pathname = `/${database}`;
  return u.toString();
}

/** Creates a fresh, randomly named database on the server of `baseUrl` (default {@link ensurePostgres}). */
export async function createTestDatabase(prefix = 'test', baseUrl?: string): Promise<TestDatabase> {
  const base = baseUrl ?? (await ensurePostgres());
  const safePrefix = prefix
    .toLowerCase()
    .replace(/[^a-z0-9_]/g, '_')
    .slice(0, 30);
  const name = `${safePrefix}_${randomBytes(6).toString('hex')}`;
  await adminQuery(base, `CREATE DATABASE "${name}"`);
  return {
    url: withDatabase(base, name),
    name,
    drop: () =>
      adminQuery(base, async (client) => {
        // pg's Pool.end() resolves before its clients' sockets have closed. A backend that FORCE
        // terminates while its client is still closing makes that client emit an 'error' no listener
        // takes any more (an unhandled error in the test run): let the sessions end first.
        for (let waited = 0; waited < 5000; waited += 50) {
          const { rows } = await client.query<{ n: number }>(
            'select count(*)::int as n from pg_stat_activity where datname = $1',
            [name],
          );
          if (rows[0]?.n === 0) break;
          await new Promise((r) => setTimeout(r, 50));
        }
        await client.query(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`);
      }),
  };
}

async function adminQuery(url: string, sql: string | ((client: pg.Client) => Promise<void>)): Promise<void> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    if (typeof sql === 'string') await client.query(sql);
    else await sql(client);
  } finally {
    await client.end();
  }
}
