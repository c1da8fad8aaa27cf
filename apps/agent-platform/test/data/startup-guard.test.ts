// Every entry point (worker, API, `npm start`) refuses to start when `workspaces`, the tenant table
// keyed by `id` that the guard cannot discover by a `workspace_id` column, stops isolating.
import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fromPgPool } from 'temporal-user-context/postgres';
import { createTestDatabase, type TestDatabase } from '../../../../test-support/postgres.js';
import { assertPlatformIsolation } from '../../src/config.js';
import { migrate } from '../../src/data/migrate.js';

const appDir = fileURLToPath(new URL('../..', import.meta.url));
const dataDir = mkdtempSync(join(tmpdir(), 'agent-platform-guard-'));
let database: TestDatabase;
let pool: pg.Pool;

beforeAll(async () => {
  database = await createTestDatabase('agent_guard');
  pool = new pg.Pool({ connectionString: database.url, max: 2 });
  await migrate(fromPgPool(pool));
  // The migrated schema passes; then `workspaces` loses FORCE, so its owner would skip its policies.
  await assertPlatformIsolation(fromPgPool(pool));
  // In production it also refuses this login (the test server's superuser), which SQL inside a scope
  // could switch back to, past the seal; a migration's connection, which serves no scope, passes.
  await expect(assertPlatformIsolation(fromPgPool(pool), {}, { NODE_ENV: 'production' })).rejects.toThrow(
    /login role .* may become a role that bypasses RLS/,
  );
  await assertPlatformIsolation(fromPgPool(pool), { checkLogin: false }, { NODE_ENV: 'production' });
  await pool.query('alter table workspaces no force row level security');
});

afterAll(async () => {
  await pool?.end();
  await database?.drop();
  rmSync(dataDir, { recursive: true, force: true });
});

/** Runs an entry point to its exit (against the broken database by default); nothing listens on the Temporal address. */
function run(entry: string, url = database.url): Promise<{ code: number | null; out: string }> {
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    DATABASE_URL: url,
    AGENT_PLATFORM_DATA_DIR: dataDir,
    TEMPORAL_ADDRESS: '127.0.0.1:1',
  };
  const child = spawn(process.execPath, ['--import', 'tsx', entry], { cwd: appDir, env, stdio: 'pipe' });
  let out = '';
  child.stdout.on('data', (chunk: Buffer) => (out += chunk.toString('utf8')));
  child.stderr.on('data', (chunk: Buffer) => (out += chunk.toString('utf8')));
  const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
  return new Promise((resolve) =>
    child.once('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, out });
    }),
  );
}

describe('start-up isolation guard', () => {
  it('the shared guard checks workspaces', async () => {
    await expect(assertPlatformIsolation(fromPgPool(pool))).rejects.toThrow(
      /table public\.workspaces does not FORCE ROW LEVEL SECURITY/,
    );
  });

  it.each(['src/worker.ts', 'src/api.ts', 'src/main.ts', 'src/migrate-cli.ts'])(
    '%s refuses to start, naming workspaces',
    async (entry) => {
      const { code, out } = await run(entry);
      expect(code).toBe(1);
      expect(out).toContain('USER_CONTEXT_MISCONFIGURED');
      expect(out).toMatch(/table public\.workspaces does not FORCE ROW LEVEL SECURITY/);
    },
    90_000,
  );
});

describe('npm run migrate', () => {
  it('migrates a fresh PostgreSQL, checks it, and is idempotent', async () => {
    const fresh = await createTestDatabase('agent_migrate_cli');
    try {
      const first = await run('src/migrate-cli.ts', fresh.url);
      // Every migration file, in order, once.
      const files = readdirSync(fileURLToPath(new URL('../../src/data/migrations/', import.meta.url)))
        .filter((f) => f.endsWith('.sql'))
        .map((f) => f.replace(/\.sql$/, ''))
        .sort();
      expect(files.length).toBeGreaterThanOrEqual(13);
      expect([first.code, first.out]).toEqual([
        0,
        expect.stringContaining(`migrate: up ${files.join(', ')}`),
      ]);
      const again = await run('src/migrate-cli.ts', fresh.url);
      expect([again.code, again.out]).toEqual([0, expect.stringContaining('pg database is up to date')]);
      const check = new pg.Pool({ connectionString: fresh.url, max: 1 });
      try {
        await expect(assertPlatformIsolation(fromPgPool(check))).resolves.toMatchObject({
          appRole: 'app_user',
        });
      } finally {
        await check.end();
      }
    } finally {
      await fresh.drop();
    }
  }, 120_000);
});

describe('a database this release has not migrated', () => {
  it('is refused with the command that brings it up to date (found by an upgrade rehearsal)', async () => {
    const stale = await createTestDatabase('agent_guard_stale');
    const stalePool = new pg.Pool({ connectionString: stale.url, max: 2 });
    try {
      const db = fromPgPool(stalePool);
      // As the previous release left it: migrated to 0018, whose seal (unmarked then: 0018 expands to
      // this release's seal, marked, so the mark is taken off) this release's guard does not take until
      // 0020 marks it.
      await migrate(db, { count: 18 });
      await stalePool.query('comment on function user_scope.seal_of(xid8, text, text, text) is null');
      await expect(assertPlatformIsolation(db)).rejects.toThrow(
        /scopeSealSql.*\(run npm run migrate of this release on the database before starting it\)/,
      );
      await migrate(db);
      await expect(assertPlatformIsolation(db)).resolves.toMatchObject({ appRole: 'app_user' });
    } finally {
      await stalePool.end();
      await stale.drop();
    }
  });
});
