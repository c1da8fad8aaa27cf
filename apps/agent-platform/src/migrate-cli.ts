// `npm run migrate`: applies the platform's migrations to DATABASE_URL (or the local PGlite), as the
// worker and the API expect to find them. `npm start` migrates on its own; `npm run worker` and
// `npm run api` migrate only the embedded PGlite, so a real PostgreSQL is migrated with this first.
//
// MIGRATE_BOOTSTRAP_ROLES=false when a DBA created `agent_owner` and `app_user` and this connects as
// the owner; MIGRATE_DIRECTION=down (one migration, or MIGRATE_COUNT) to revert.
// MIGRATE_LOCK_TIMEOUT_MS (default 5000): how long a migration waits for a table lock before it gives
// up and is tried again (docs/operations.md, "Rolling out migrations").
import { assertPlatformIsolation, openDatabase } from './config.js';
import { migrate } from './data/migrate.js';

async function main(): Promise<void> {
  const env = process.env;
  const direction = env.MIGRATE_DIRECTION === 'down' ? 'down' : 'up';
  if (env.MIGRATE_DIRECTION && env.MIGRATE_DIRECTION !== direction)
    throw new Error('MIGRATE_DIRECTION must be up or down');
  if (env.MIGRATE_COUNT && !/^[1-9][0-9]{0,5}$/.test(env.MIGRATE_COUNT))
    throw new Error('MIGRATE_COUNT must be a positive whole number');
  if (env.MIGRATE_BOOTSTRAP_ROLES && !['true', 'false'].includes(env.MIGRATE_BOOTSTRAP_ROLES))
    throw new Error('MIGRATE_BOOTSTRAP_ROLES must be true or false');
  if (
    env.MIGRATE_LOCK_TIMEOUT_MS &&
    !(/^[1-9][0-9]{0,5}$/.test(env.MIGRATE_LOCK_TIMEOUT_MS) && Number(env.MIGRATE_LOCK_TIMEOUT_MS) <= 600_000)
  )
    throw new Error('MIGRATE_LOCK_TIMEOUT_MS must be a whole number of milliseconds from 1 to 600000');
  const database = await openDatabase();
  try {
    const ran = await migrate(database.db, {
      direction,
      ...(env.MIGRATE_COUNT ? { count: Number(env.MIGRATE_COUNT) } : {}),
      bootstrapRoles: env.MIGRATE_BOOTSTRAP_ROLES !== 'false',
      ...(env.MIGRATE_LOCK_TIMEOUT_MS ? { lockTimeoutMs: Number(env.MIGRATE_LOCK_TIMEOUT_MS) } : {}),
      log: (message) => {
        // The retries after a lock wait: an operator watching the rollout sees why it takes longer.
        if (message.startsWith('migrate: ')) console.error(message);
      },
    });
    console.log(
      ran.length === 0
        ? `migrate: ${database.kind} database is up to date`
        : `migrate: ${direction} ${ran.map((m) => m.name).join(', ')}`,
    );
    // The migration's login (the owner, or a superuser) is not the one that serves scopes: whether a
    // login may switch to the app role is checked by the worker and the API at their start.
    if (direction === 'up') await assertPlatformIsolation(database.db, { checkLogin: false });
  } finally {
    await database.close();
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
