// openDatabase with DATABASE_URL: every connection has the platform's limits, the audit sinks have a
// pool of their own, and the migrations leave the statement limit they lift in place.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../../../../test-support/postgres.js';
import { openDatabase, type OpenedDatabase } from '../../src/config.js';
import { migrate } from '../../src/data/migrate.js';

describe('openDatabase on PostgreSQL', () => {
  let database: TestDatabase;
  let opened: OpenedDatabase;
  beforeAll(async () => {
    database = await createTestDatabase('open_database');
    opened = await openDatabase({ url: database.url });
  });
  afterAll(async () => {
    await opened?.close();
    await database?.drop();
  });

  const settings = async (db: OpenedDatabase['db']) =>
    db.session(async (session) => {
      const { rows } = await session.query<{ statement: string; idle: string; pid: number }>(
        `select current_setting('statement_timeout') as statement,
                current_setting('idle_in_transaction_session_timeout') as idle, pg_backend_pid() as pid`,
      );
      return rows[0]!;
    });

  it('limits every statement and idle transaction, on the app pool and the audit pool alike', async () => {
    const app = await settings(opened.db);
    const audit = await settings(opened.auditDb);
    expect([app.statement, app.idle]).toEqual(['30s', '1min']);
    expect([audit.statement, audit.idle]).toEqual(['30s', '1min']);
    // Two pools: the audit sinks do not wait behind the app's connections.
    expect(opened.auditDb).not.toBe(opened.db);
  });

  it('the migrations, which lift the limit for their session, leave it in place on the pool', async () => {
    // Brought back twice over: by migrate's RESET and by the adapter's reset of a session it ends.
    await migrate(opened.db);
    for (let i = 0; i < 4; i++) expect((await settings(opened.db)).statement).toBe('30s');
  });
});
