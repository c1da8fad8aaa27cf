// A lost PostgreSQL connection (restart, failover, an idle timeout, pg_terminate_backend) is reported and
// survived: `pg` emits it as an `error` event, which with no listener kills the process.
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { isUserContextError } from 'temporal-user-context';
import { CommitOutcomeUnknownError, fromPgPool, type SqlDatabase } from 'temporal-user-context/postgres';
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
      await vi.waitFor(() => expect(lost).toHaveLength(1), { timeout: 10_000 });
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
      await vi.waitFor(() => expect([lost.length, second.length]).toEqual([1, 1]), { timeout: 10_000 });
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
      await vi.waitFor(() => expect(lost.length).toBeGreaterThanOrEqual(1), { timeout: 10_000 });
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
          await vi.waitFor(() => expect(lost.length).toBeGreaterThanOrEqual(1), { timeout: 10_000 });
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

// Found by review: a connection that goes silent (a failover or a network cut whose close never reaches
// this host) held its transaction and pool slot for ever; pg's own query_timeout could not end it,
// since the adapter then waited for the status the silent connection would never send. A statement
// the database runs past the limit stands in for the silence here.
describe('fromPgPool when a statement gets no answer in time', () => {
  for (const [name, limit] of [
    ["the pool's query_timeout", { pool: { query_timeout: 300 }, adapter: {} }],
    ["the adapter's queryTimeoutMs", { pool: {}, adapter: { queryTimeoutMs: 300 } }],
  ] as const)
    it(`with ${name}: the transaction fails, its connection is closed, and the pool's one slot serves the next`, async () => {
      const pool = new pg.Pool({ connectionString: database.url, max: 1, ...limit.pool });
      const db = fromPgPool(pool, { onError: () => undefined, ...limit.adapter });
      try {
        let pid = 0;
        const started = Date.now();
        const failed = await db
          .transaction(async (tx) => {
            pid = await pidOf(tx);
            await tx.query('select pg_catalog.pg_sleep(5)');
          })
          .catch((err: unknown) => err);
        expect((failed as Error).message).toBe('Query read timeout');
        expect(Date.now() - started).toBeLessThan(4000);
        // A new connection, not the one still busy with the statement.
        expect(await db.transaction((tx) => pidOf(tx))).not.toBe(pid);
      } finally {
        await pool.end();
      }
    }, 15_000);

  // Found by review: a callback that caught the timeout and went on had its statements, and its COMMIT,
  // queued behind the one that hung, which then committed what the caller was told had failed.
  it('a callback that catches the timeout and goes on sends nothing more: the transaction fails, nothing is committed', async () => {
    await admin.query(`create table lost_after (id int primary key)`);
    const pool = new pg.Pool({ connectionString: database.url, max: 1 });
    const db = fromPgPool(pool, { onError: () => undefined, queryTimeoutMs: 300 });
    try {
      let next: unknown;
      const failed = await db
        .transaction(async (tx) => {
          await tx
            .query('insert into lost_after select 1 from pg_catalog.pg_sleep(0.45)')
            .catch(() => undefined);
          next = await tx.query('select 1').catch((err: unknown) => err);
          return 'carried on';
        })
        .catch((err: unknown) => err);
      expect((next as Error).message).toBe('Query read timeout');
      expect((failed as Error).message).toBe('Query read timeout');
      // The statement ran to its end on the server, in a transaction nothing committed.
      await new Promise((resolve) => setTimeout(resolve, 1000));
      expect((await admin.query('select id from lost_after')).rows).toEqual([]);
    } finally {
      await pool.end();
    }
  }, 15_000);

  it("a COMMIT the database refuses (a deferred constraint) fails with the database's error: nothing committed", async () => {
    await admin.query(
      `create table refused_at_commit (id int, constraint once unique (id) deferrable initially deferred)`,
    );
    const pool = new pg.Pool({ connectionString: database.url, max: 1 });
    const db = fromPgPool(pool, { onError: () => undefined, queryTimeoutMs: 5000 });
    try {
      const failed = await db
        .transaction((tx) => tx.query('insert into refused_at_commit values (1), (1)'))
        .catch((err: unknown) => err);
      expect(failed).not.toBeInstanceOf(CommitOutcomeUnknownError);
      expect(failed).toMatchObject({ code: '23505' });
      expect((await admin.query('select id from refused_at_commit')).rows).toEqual([]);
      // The connection was rolled back and reset, and serves the next transaction.
      expect(await db.transaction(async (tx) => (await tx.query('select 1 as one')).rows)).toEqual([
        { one: 1 },
      ]);
    } finally {
      await pool.end();
    }
  });

  it('a COMMIT without an answer in time fails as CommitOutcomeUnknownError: the work may be committed', async () => {
    // A deferred constraint trigger that takes a second at COMMIT.
    await admin.query(`create table slow_commit (id int primary key)`);
    await admin.query(`create function slow_commit_sleep() returns trigger language plpgsql as
      $$ begin perform pg_catalog.pg_sleep(1); return null; end $$`);
    await admin.query(`create constraint trigger slow_commit_at_commit after insert on slow_commit
      deferrable initially deferred for each row execute function slow_commit_sleep()`);
    const pool = new pg.Pool({ connectionString: database.url, max: 1 });
    const db = fromPgPool(pool, { onError: () => undefined, queryTimeoutMs: 300 });
    try {
      const failed = await db
        .transaction((tx) => tx.query('insert into slow_commit values (1)'))
        .catch((err: unknown) => err);
      expect(failed).toBeInstanceOf(CommitOutcomeUnknownError);
      expect((failed as Error).cause).toMatchObject({ message: 'Query read timeout' });
      // It was committed, once the trigger was done.
      await vi.waitFor(
        async () => expect((await admin.query('select id from slow_commit')).rows).toEqual([{ id: 1 }]),
        { timeout: 5000 },
      );
    } finally {
      await pool.end();
    }
  }, 15_000);
});
