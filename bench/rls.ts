/**
 * RLS overhead benchmark: the same reads scoped by row-level security vs filtered by the application.
 *
 *   npm run bench:rls        (root script: tsx bench/rls.ts)
 *
 * Real PostgreSQL 15 (ensurePostgres: $DATABASE_URL or scripts/postgres.sh), a fresh database with the
 * agent platform's migrations, 1,000,000 documents over 1,000 workspaces generated server-side with
 * generate_series (no client-side load loop). Both paths run the same transaction shape on one
 * connection — BEGIN; one statement that switches the role and sets the workspace; query; COMMIT —
 * alternating per transaction so drift hits both equally:
 *
 *   rls: enters the platform's sealed scope of the workspace as app_user (`user_scope.enter`: the
 *        once-per-transaction check and the HMAC seal), then `select ... from documents ...` — the
 *        policies add the workspace predicate, read through `user_scope.workspace_id()` (InitPlans that
 *        check the seal);
 *   unsealed: the `rls` reads as a role of its own (`bench_unsealed`) whose policy reads the setting,
 *        as every policy did before migration 0009 (the platform's narrowed to app_user for this);
 *   app: as the owner with RLS off for it (NO FORCE), `... where workspace_id = $1` written by hand.
 *
 * A second phase measures this package's adapter on the same RLS reads, in turn with a baseline of
 * its own (each a transaction on a connection checked out of the pool for it, as an application does;
 * the checkout alone costs more than the first phase's dedicated connection):
 *
 *   pool:    the `rls` transaction by hand on `pool.connect()`, its statements in the extended protocol;
 *   adapter: the same through `fromPgPool(pool).transaction()`, whose queryable checks each statement
 *            (transaction control, one call at a time, the connection still in the transaction) and
 *            uses the extended protocol;
 *   scope:   `withUserScope` on the sealed adapter — the adapter plus context validation, the same
 *            entry statement with the counts of what a connection may carry, and the check before
 *            COMMIT that the seal still holds (one statement more than `pool`), no auditor.
 *
 * Writes bench/results/rls.json with the timings, ratio = rls / app (target ≤ 1.10), ratioUnsealed =
 * unsealed / app, and
 * adapterRatio = adapter / pool and scopeRatio = scope / pool (reported, no target).
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import {
  fromPgPool,
  withUserScope,
  type SqlDatabase,
  type SqlQueryable,
} from 'temporal-user-context/postgres';
import { Auditor } from 'temporal-user-context';
import { migrate } from '../apps/agent-platform/src/data/migrate.js';

/** An auditor with no sinks: `withUserScope` measured without the cost of any audit sink. */
const silent = new Auditor([]);
import { createTestDatabase } from '../test-support/postgres.js';

const ROWS = 1_000_000;
const WORKSPACES = 1_000;
const TRANSACTIONS = 3_000;
const OUT = fileURLToPath(new URL('./results/rls.json', import.meta.url));

/** The reads an agent tool does: a page of titles, a title lookup, a count. */
const QUERIES = {
  rls: [
    'select id, title from documents order by title limit 50',
    'select id, body from documents where title = $2',
    'select count(*) from documents',
  ],
  app: [
    'select id, title from documents where workspace_id = $1 order by title limit 50',
    'select id, body from documents where workspace_id = $1 and title = $2',
    'select count(*) from documents where workspace_id = $1',
  ],
} as const;

/** `unsealed`: RLS without the seal, as before migration 0009 (the `rls` reads, another role). */
type Path = keyof typeof QUERIES | 'unsealed';
/** The reads of a path: `unsealed` reads as `rls` does. */
const reads = (path: Path) => QUERIES[path === 'unsealed' ? 'rls' : path];

/**
 * One statement each: the RLS path enters the platform's sealed scope (migration 0009) for the
 * workspace alone, as the audit sink does (the role, the once-per-transaction check, the sealed
 * settings; no membership read, which is no cost of RLS: `scope` below has it); the application path
 * switches to the owner and sets the workspace (which its hand-written WHERE does not need; it keeps the
 * shape the same).
 */
const ENTER: Record<Path, string> = {
  rls: `select set_config('role', 'app_user', true), user_scope.enter('', $1, '{}')`,
  unsealed: `select set_config('role', 'bench_unsealed', true), set_config('app.workspace_id', $1, true)`,
  app: `select set_config('role', 'agent_owner', true), set_config('app.workspace_id', $1, true)`,
};
/** Every order of the three phase-one paths, in turn: each follows each other equally often. */
const ORDERS3: Path[][] = [
  ['rls', 'unsealed', 'app'],
  ['rls', 'app', 'unsealed'],
  ['unsealed', 'rls', 'app'],
  ['unsealed', 'app', 'rls'],
  ['app', 'rls', 'unsealed'],
  ['app', 'unsealed', 'rls'],
];
type Packaged = 'pool' | 'adapter' | 'scope';
const PACKAGED: readonly Packaged[] = ['pool', 'adapter', 'scope'];

function workspace(i: number): string {
  return `ws-${String(i % WORKSPACES).padStart(4, '0')}`;
}

async function runOne(client: pg.PoolClient, path: Path, i: number): Promise<void> {
  const ws = workspace((i * 7919) % WORKSPACES);
  const q = reads(path)[i % 3] as string;
  const byRls = path !== 'app';
  // Parameter $2 is only used by the title lookup; pg refuses unused parameters, so pass what is used.
  const params = q.includes('$2') ? (byRls ? [null, `doc ${i}`] : [ws, `doc ${i}`]) : byRls ? [] : [ws];
  await client.query('BEGIN');
  await client.query(ENTER[path], [ws]);
  if (byRls && q.includes('$2')) {
    await client.query(q.replace('$2', '$1'), [params[1]]);
  } else {
    await client.query(q, params);
  }
  await client.query('COMMIT');
}

/** The `rls` read on a pooled connection: by hand, through this package's adapter, or `withUserScope`. */
async function runPooled(pool: pg.Pool, db: SqlDatabase, path: Packaged, i: number): Promise<void> {
  const ws = workspace((i * 7919) % WORKSPACES);
  const q = QUERIES.rls[i % 3] as string;
  const read = (tx: SqlQueryable) =>
    q.includes('$2') ? tx.query(q.replace('$2', '$1'), [`doc ${i}`]) : tx.query(q);
  if (path === 'pool') {
    const client = await pool.connect();
    // The statements inside the transaction as the adapter sends them (extended protocol, even without
    // parameters), so that the comparison is of the adapter's checks, not of the protocol.
    const send = (text: string, values: unknown[] = []) =>
      client.query({ text, values, queryMode: 'extended' } as pg.QueryConfig);
    try {
      await client.query('BEGIN');
      await send(ENTER.rls, [ws]);
      await (q.includes('$2') ? send(q.replace('$2', '$1'), [`doc ${i}`]) : send(q));
      await client.query('COMMIT');
    } finally {
      client.release();
    }
    return;
  }
  if (path === 'scope') {
    // No auditor: records go nowhere (an auditor with no sinks), as before the default auditor existed.
    await withUserScope(db, { userId: 'bench', workspaceId: ws, roles: ['member'] }, read, {
      auditor: silent,
    });
    return;
  }
  await db.transaction(async (tx) => {
    await tx.query(ENTER.rls, [ws]);
    await read(tx);
  });
}

async function explain(client: pg.PoolClient, path: Path, q: string, params: unknown[]): Promise<string> {
  await client.query('BEGIN');
  await client.query(ENTER[path], ['ws-0042']);
  const { rows } = await client.query<{ 'QUERY PLAN': string }>(
    `explain (analyze, costs off, timing off) ${q}`,
    params,
  );
  await client.query('COMMIT');
  return rows.map((r) => r['QUERY PLAN']).join('\n');
}

async function main(): Promise<void> {
  const database = await createTestDatabase('bench_rls');
  const pool = new pg.Pool({ connectionString: database.url, max: 2 });
  const started = Date.now();
  try {
    const db = fromPgPool(pool, { seal: true });
    await migrate(db);
    const load = Date.now();
    await load1M(db);
    const loadMs = Date.now() - load;

    const client = await pool.connect();
    try {
      // Warm caches and plans for both paths.
      for (let i = 0; i < 300; i++) await runOne(client, (['rls', 'unsealed', 'app'] as const)[i % 3]!, i);
      // Alternate the two paths transaction by transaction (order flipped every iteration), so that
      // noise from other processes on the machine lands on both equally.
      const samples: Record<Path, number[]> = { rls: [], unsealed: [], app: [] };
      for (let i = 0; i < TRANSACTIONS; i++) {
        const order: Path[] = ORDERS3[i % ORDERS3.length]!;
        for (const path of order) {
          const t0 = process.hrtime.bigint();
          await runOne(client, path, i);
          samples[path].push(Number(process.hrtime.bigint() - t0) / 1e6);
        }
      }
      const totals = { rls: sum(samples.rls), unsealed: sum(samples.unsealed), app: sum(samples.app) };
      // Second phase: this package on the pool's other connection, in turn with the same by hand.
      for (let i = 0; i < 300; i++) await runPooled(pool, db, PACKAGED[i % PACKAGED.length]!, i);
      const packaged: Record<Packaged, number[]> = { pool: [], adapter: [], scope: [] };
      // Every order of the three in turn, so that each path follows each other path equally often (with
      // a plain rotation, `pool` followed `scope` two times in three).
      const orders: Packaged[][] = [
        ['pool', 'adapter', 'scope'],
        ['pool', 'scope', 'adapter'],
        ['adapter', 'pool', 'scope'],
        ['adapter', 'scope', 'pool'],
        ['scope', 'pool', 'adapter'],
        ['scope', 'adapter', 'pool'],
      ];
      for (let i = 0; i < TRANSACTIONS; i++) {
        for (const path of orders[i % orders.length]!) {
          const t0 = process.hrtime.bigint();
          await runPooled(pool, db, path, i);
          packaged[path].push(Number(process.hrtime.bigint() - t0) / 1e6);
        }
      }
      const plans = {
        rls: await explain(client, 'rls', QUERIES.rls[0], []),
        app: await explain(client, 'app', QUERIES.app[0], ['ws-0042']),
      };
      const queries = TRANSACTIONS;
      const result = {
        benchmark: 'rls-vs-application-filter',
        postgres: (await client.query<{ v: string }>(`select current_setting('server_version') as v`)).rows[0]
          ?.v,
        rows: ROWS,
        workspaces: WORKSPACES,
        transactionsPerPath: queries,
        loadMs,
        rls: summary(samples.rls),
        app: summary(samples.app),
        ratio: round3(totals.rls / totals.app),
        ratioMedian: round3(quantile(samples.rls, 0.5) / quantile(samples.app, 0.5)),
        unsealed: summary(samples.unsealed),
        ratioUnsealed: round3(totals.unsealed / totals.app),
        target: 1.1,
        withinTarget: totals.rls / totals.app <= 1.1,
        pool: summary(packaged.pool),
        adapter: summary(packaged.adapter),
        scope: summary(packaged.scope),
        adapterRatio: round3(sum(packaged.adapter) / sum(packaged.pool)),
        scopeRatio: round3(sum(packaged.scope) / sum(packaged.pool)),
        plans,
        finishedAt: new Date().toISOString(),
        durationMs: Date.now() - started,
      };
      await mkdir(fileURLToPath(new URL('./results/', import.meta.url)), { recursive: true });
      await writeFile(OUT, `${JSON.stringify(result, null, 2)}\n`);
      process.stdout.write(
        `rls ${result.rls.perTxMs} ms/tx, app ${result.app.perTxMs} ms/tx, ratio ${result.ratio} (target ≤ 1.10); ` +
          `without the seal ${result.unsealed.perTxMs} ms/tx, ratio ${result.ratioUnsealed}\n` +
          `pooled by hand ${result.pool.perTxMs} ms/tx, adapter ${result.adapter.perTxMs} ms/tx (${result.adapterRatio}×), withUserScope ${result.scope.perTxMs} ms/tx (${result.scopeRatio}×) → ${OUT}\n`,
      );
    } finally {
      client.release();
    }
  } finally {
    await pool.end();
    await database.drop();
  }
}

/** 1,000 workspaces and 1,000,000 documents, generated inside the server (bounded, no client loop). */
async function load1M(db: SqlQueryable): Promise<void> {
  await db.query(
    `insert into workspaces (id, name)
     select 'ws-' || lpad(g::text, 4, '0'), 'Workspace ' || g from generate_series(0, $1::int - 1) g`,
    [WORKSPACES],
  );
  await db.query(
    `insert into documents (workspace_id, title, body, created_by)
     select 'ws-' || lpad((g % $2::int)::text, 4, '0'), 'doc ' || g, md5(g::text), 'bench'
       from generate_series(0, $1::int - 1) g`,
    [ROWS, WORKSPACES],
  );
  // The user the package's paths act as: a member of every workspace (the live membership check).
  await db.query(
    `insert into memberships (workspace_id, user_id, roles) select id, 'bench', '{member}' from workspaces`,
  );
  // The application-filter baseline runs as the owner with RLS not forced on it (RLS off for the owner).
  await db.query('alter table documents no force row level security');
  // RLS without the seal: a role of its own that the seal's restrictive policy does not name.
  await db.query(
    `do $$ begin if not exists (select 1 from pg_roles where rolname = 'bench_unsealed') then create role bench_unsealed nologin; end if; end $$`,
  );
  await db.query('grant select on documents to bench_unsealed');
  await db.query('alter policy documents_read on documents to app_user');
  await db.query('alter policy documents_admin_write on documents to app_user');
  await db.query(
    `create policy documents_read_unsealed on documents for select to bench_unsealed
       using (workspace_id = (select nullif(current_setting('app.workspace_id', true), '')))`,
  );
  await db.query('vacuum analyze documents');
}

const round2 = (n: number) => Math.round(n * 100) / 100;
const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);

function quantile(xs: number[], q: number): number {
  const sorted = [...xs].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? 0;
}

function summary(xs: number[]) {
  return {
    totalMs: round2(sum(xs)),
    perTxMs: round3(sum(xs) / xs.length),
    p50Ms: round3(quantile(xs, 0.5)),
    p95Ms: round3(quantile(xs, 0.95)),
  };
}
const round3 = (n: number) => Math.round(n * 1000) / 1000;

await main();
