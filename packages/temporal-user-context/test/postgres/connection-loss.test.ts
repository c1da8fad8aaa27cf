// A lost PostgreSQL connection (restart, failover, an idle timeout, pg_terminate_backend) is reported and
// survived: `pg` emits it as an `error` event, which with no listener kills the process.
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { isUserContextError } from 'temporal-user-context';
import { fromPgPool, type SqlDatabase } from 'temporal-user-context/postgres';
import { createTestDatabase, type TestDatabase } from '../../../../test-support/postgres.js';

let database: TestDatabase;
let adminPool: pg.Pool;
let admin: SqlDatabase;

beforeAll(async () => {
  database = await createTestDatabase('lost');
  adminPool = new pg.Pool({ connectionString: database.url, max: 1 });
  admin = fromPgPool(adminPool);
});
afterAll(async () => {
  await adminPool?.end();
  await database?.drop();
});

/** A one-connection pool behind the adapter, and every loss it reported. */
function openPool() {
  const pool = new pg.Pool({ connectionString: database.url, max: 1 });
  const lost: Error[] = [];
  const db = fromPgPool(pool, { onError: (err) => lost.push(err) });
  return { pool, db, lost };
}

async function terminate(pid: number): Promise<void> {
  const { rows } = await admin.query<{ done: boolean }>('select pg_terminate_backend($1) as done', [pid]);
  expect(rows[0]?.done).toBe(true);
}

const pidOf = async (q: SqlDatabase | Parameters<Parameters<SqlDatabase['transaction']>[0]>[0]) =>
  (await q.query<{ pid: number }>('select pg_backend_pid() as pid')).rows[0]!.pid;

describe('fromPgPool when a connection is lost', () => {
  it('an idle connection: reported, and the next query opens a new one', async () => {
    const { pool, db, lost } = openPool();
    try {
      const pid = await pidOf(db); // the pool's one client, now idle
      await terminate(pid);
      await vi.waitFor(() => expect(lost).toHaveLength(1));
      expect(lost[0]!.message).toMatch(/terminat/i);
      expect(await pidOf(db)).not.toBe(pid);
    } finally {
      await pool.end();
    }
  });

  it('every adapter of one pool hears of an idle connection lost, not only the first, whatever one of them throws', async () => {
    const { pool, db, lost } = openPool();
    const second: Error[] = [];
    // One that throws (against its contract) neither silences the next nor escapes as uncaught.
    fromPgPool(pool, {
      onError: () => {
        throw new Error('a careless handler');
      },
    });
    fromPgPool(pool, { onError: (err) => second.push(err) });
    try {
      await terminate(await pidOf(db));
      await vi.waitFor(() => expect([lost.length, second.length]).toEqual([1, 1]));
    } finally {
      await pool.end();
    }
  });

  it('a connection inside a transaction: the transaction fails, the client is not pooled again', async () => {
    const { pool, db, lost } = openPool();
    try {
      let pid = 0;
      const failed = await db
        .transaction(async (tx) => {
          pid = await pidOf(tx);
          await terminate(pid);
          // The backend is gone: this query fails (or the connection's end arrives while it waits).
          await tx.query('select 1');
        })
        .catch((err: unknown) => err);
      expect((failed as Error).message).toMatch(/terminat|connection/i);
      await vi.waitFor(() => expect(lost.length).toBeGreaterThanOrEqual(1));
      expect(await pidOf(db)).not.toBe(pid);
      expect(pool.totalCount).toBe(1);
    } finally {
      await pool.end();
    }
  });

  it('a transaction whose callback swallows the loss and queries again settles, and frees its slot', async () => {
    const { pool, db } = openPool();
    try {
      const failed = await db
        .transaction(async (tx) => {
          const pid = await pidOf(tx);
          // Lost while a query is in flight: pg never hears the server's ReadyForQuery for it.
          const sleeping = tx.query('select pg_sleep(5)');
          await new Promise((resolve) => setTimeout(resolve, 200));
          await terminate(pid);
          await sleeping.catch(() => undefined);
          // pg refuses this one on a connection that sends nothing more: waiting for the server's
          // answer to it (the transaction status) would hold the transaction and its slot forever.
          await tx.query('select 2');
        })
        .catch((err: unknown) => err);
      // The connection's loss, as pg reports it (not a refusal of this package's).
      expect(failed).toBeInstanceOf(Error);
      expect(isUserContextError(failed)).toBe(false);
      // The pool's one slot is free again.
      expect(await pidOf(db)).toBeGreaterThan(0);
    } finally {
      await pool.end();
    }
  }, 15_000);

  it('a connection held by a session, idle: reported, the session fails, the client is not pooled again', async () => {
    const { pool, db, lost } = openPool();
    try {
      let pid = 0;
      const failed = await db
        .session(async (s) => {
          pid = await pidOf(s);
          await terminate(pid);
          // The connection ends while the session holds it with no query running: pg emits that as an
          // `error` event on the client.
          await vi.waitFor(() => expect(lost.length).toBeGreaterThanOrEqual(1));
          await s.query('select 1');
        })
        .catch((err: unknown) => err);
      expect((failed as Error).message).toMatch(/terminat|connection|not queryable/i);
      expect(await pidOf(db)).not.toBe(pid);
    } finally {
      await pool.end();
    }
  });
});
