/**
 * The two database backends every data-isolation test runs against: a real PostgreSQL (a fresh
 * database per test file, see {@link createTestDatabase}) and an in-process PGlite.
 *
 * `db` is what the code under test uses; `admin` is a superuser handle for arranging data behind
 * RLS's back (provisioning workspaces, revoking memberships) and for assertions.
 */
import { PGlite } from '@electric-sql/pglite';
import { pgcrypto } from '@electric-sql/pglite/contrib/pgcrypto';
import pg from 'pg';
import { fromPGlite, fromPgPool, type SqlDatabase } from 'temporal-user-context/postgres';
import { createTestDatabase } from './postgres.js';

export type BackendKind = 'postgres' | 'pglite';
export const BACKENDS: readonly BackendKind[] = ['postgres', 'pglite'];

export interface Backend {
  kind: BackendKind;
  db: SqlDatabase;
  admin: SqlDatabase;
  /** Connection URL (postgres only). */
  url?: string;
  close(): Promise<void>;
}

export async function openBackend(
  kind: BackendKind,
  options: { prefix?: string; poolSize?: number; seal?: boolean } = {},
): Promise<Backend> {
  // `db` enters scopes through the sealed scope when asked; `admin` never scopes.
  const adapter = { ...(options.seal ? { seal: true } : {}) };
  if (kind === 'pglite') {
    // pgcrypto: the sealed scope's HMAC (scopeSealSql), as on a PostgreSQL with contrib.
    const lite = new PGlite({ extensions: { pgcrypto } });
    await lite.waitReady;
    return { kind, db: fromPGlite(lite, adapter), admin: fromPGlite(lite), close: () => lite.close() };
  }
  const database = await createTestDatabase(options.prefix ?? 'iso');
  const pool = new pg.Pool({ connectionString: database.url, max: options.poolSize ?? 4 });
  const adminPool = new pg.Pool({ connectionString: database.url, max: 2 });
  return {
    kind,
    db: fromPgPool(pool, adapter),
    admin: fromPgPool(adminPool),
    url: database.url,
    async close() {
      await pool.end();
      await adminPool.end();
      await database.drop();
    },
  };
}
