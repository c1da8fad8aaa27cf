/**
 * Load benchmark of the agent platform through its HTTP API.
 *
 *   npm run bench:load                                  (root script: tsx bench/load.ts)
 *   LOAD_RUNS=40 LOAD_CONCURRENCY=10 npm run bench:load
 *
 * Starts the real stack in this process: a Temporal dev server (test-support/temporal.ts, or
 * TEMPORAL_ADDRESS), a fresh PostgreSQL database (ensurePostgres: $DATABASE_URL or scripts/postgres.sh)
 * with the platform's migrations, 10 workspaces each with an admin user, an agent and documents whose
 * titles carry a marker of their own workspace, a worker (createWorker) and the API (createApi)
 * listening on 127.0.0.1 on a free port. Then LOAD_RUNS runs (default 200) are started with `fetch`
 * by LOAD_CONCURRENCY clients (default 20), spread round-robin over the workspaces; each client waits
 * for its run's result (GET /runs/:id/result?waitSeconds=) before starting the next one.
 *
 * Every run's tool reads the workspace documents. One run in five asks the tool for another
 * workspace's documents by name (same search term as the others, so without RLS it would find rows).
 * Any marker of a workspace other than the run's own in a result — as returned by the API and as
 * stored in agent_runs — counts as a cross-workspace row; both counts must be 0.
 *
 * Writes bench/results/load.json. Bounded: at most 5000 runs, a global deadline (LOAD_TIMEOUT_SECONDS,
 * default 300) after which no new run starts and waits are abandoned, loopback only; tears everything
 * down (database dropped) and exits non-zero if a run failed or a cross-workspace row was seen.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { cpus } from 'node:os';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import { Client, Connection } from '@temporalio/client';
import { DefaultLogger, NativeConnection, Runtime } from '@temporalio/worker';
import pg from 'pg';
import { Auditor, KeyRing, UserContextPlugin, generateKeySet } from 'temporal-user-context';
import { fromPgPool, postgresAuditSink } from 'temporal-user-context/postgres';
import { createApi } from '../apps/agent-platform/src/api/app.js';
import { createEphemeralIssuer } from '../apps/agent-platform/src/auth/dev-issuer.js';
import { createVerifier } from '../apps/agent-platform/src/auth/verify.js';
import { DATABASE_OPTIONS, assertPlatformIsolation } from '../apps/agent-platform/src/config.js';
import { migrate } from '../apps/agent-platform/src/data/migrate.js';
import { seedDemo, type DemoWorkspace } from '../apps/agent-platform/src/seed.js';
import { createWorker } from '../apps/agent-platform/src/worker.js';
import { createTestDatabase } from '../test-support/postgres.js';
import { startTemporal } from '../test-support/temporal.js';

const OUT = fileURLToPath(new URL('./results/load.json', import.meta.url));
const WORKSPACES = 10;
const DOCUMENTS_PER_WORKSPACE = 3;
const ADVERSARIAL_EVERY = 5;
const RESULT_WAIT_SECONDS = 30;

function intFromEnv(name: string, fallback: number, min: number, max: number): number {
  const raw = process.env[name];
  const value = raw === undefined || raw === '' ? fallback : Number(raw);
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new Error(`${name} must be an integer in [${min}, ${max}], got ${raw}`);
  }
  return value;
}

const RUNS = intFromEnv('LOAD_RUNS', 200, 1, 5000);
const CONCURRENCY = Math.min(intFromEnv('LOAD_CONCURRENCY', 20, 1, 200), RUNS);
const TIMEOUT_MS = intFromEnv('LOAD_TIMEOUT_SECONDS', 300, 10, 3600) * 1000;

const wsId = (i: number) => `ws-load-${String(i).padStart(2, '0')}`;
const marker = (ws: string) => `mark:${ws}`;
const MARKER = /mark:(ws-load-\d\d)/g;

/** 10 workspaces, each with one admin (who runs the load) and documents titled with its own marker. */
function loadWorkspaces(): DemoWorkspace[] {
  return Array.from({ length: WORKSPACES }, (_, i) => {
    const id = wsId(i);
    return {
      id,
      name: `Load ${i}`,
      members: [{ userId: `load-user-${i}`, roles: ['admin', 'member'] }],
      documents: Array.from({ length: DOCUMENTS_PER_WORKSPACE }, (_, d) => ({
        title: `Load report ${d} (${marker(id)})`,
        body: `Quarterly load report ${d} of ${id}. ${marker(id)}`,
      })),
    };
  });
}

interface RunSample {
  index: number;
  workspaceId: string;
  adversarial: boolean;
  runId?: string;
  ok: boolean;
  status: string;
  latencyMs: number;
  ownRows: number;
  foreignRows: number;
  error?: string;
}

/** Counts markers of the run's own workspace and of any other one in a result. */
function countMarkers(text: string, own: string): { own: number; foreign: number } {
  let ownRows = 0;
  let foreign = 0;
  for (const m of text.matchAll(MARKER)) {
    if (m[1] === own) ownRows++;
    else foreign++;
  }
  return { own: ownRows, foreign };
}

async function main(): Promise<void> {
  const started = Date.now();
  // Keep the SDK's core logs to warnings (must precede any connection).
  Runtime.install({ logger: new DefaultLogger('WARN') });

  const env = await startTemporal();
  const database = await createTestDatabase('bench_load');
  const pool = new pg.Pool({ connectionString: database.url, max: 16 });
  // An idle client may still be closing when the database is dropped WITH (FORCE); report the rest.
  let tearingDown = false;
  pool.on('error', (err) => {
    if (!tearingDown) console.error('pg pool error', err.message);
  });
  const db = fromPgPool(pool, DATABASE_OPTIONS);
  const cleanups: (() => Promise<unknown>)[] = [];
  try {
    await migrate(db);
    await assertPlatformIsolation(db);
    const workspaces = loadWorkspaces();
    const agentIds = await seedDemo(db, workspaces, { auditor: new Auditor([]) });

    const namespace = env.namespace ?? 'default';
    const taskQueue = `agent-tasks-load-${Date.now().toString(36)}`;
    const keys = generateKeySet('agent-load');
    const dbAudit = postgresAuditSink(db);
    cleanups.push(() => dbAudit.flush());

    const nativeConnection = await NativeConnection.connect({ address: env.address });
    cleanups.push(() => nativeConnection.close());
    const worker = await createWorker({
      connection: nativeConnection,
      namespace,
      taskQueue,
      db,
      keys: KeyRing.fromJSON(keys.worker),
      audit: [dbAudit],
    });
    const running = worker.run();
    cleanups.push(async () => {
      if (worker.getState() === 'RUNNING') worker.shutdown();
      await running;
    });

    const connection = await Connection.connect({ address: env.address });
    cleanups.push(() => connection.close());
    const edge = new UserContextPlugin({ keys: KeyRing.fromJSON(keys.edge), audit: [dbAudit] });
    const client = new Client({ connection, namespace, plugins: [edge] });
    const issuer = await createEphemeralIssuer();
    const app = await createApi({
      db,
      client,
      taskQueue,
      verify: createVerifier({ jwks: issuer.jwks, issuer: issuer.issuer, audience: issuer.audience }),
      scope: { auditor: edge.auditor },
    });
    cleanups.push(() => app.close());
    await app.listen({ port: 0, host: '127.0.0.1' });
    const { port } = app.server.address() as AddressInfo;
    const base = `http://127.0.0.1:${port}`;

    const tokens = new Map<string, string>();
    for (const [i, ws] of workspaces.entries()) {
      tokens.set(ws.id, await issuer.mint({ user: `load-user-${i}`, workspace: ws.id, roles: ['member'] }));
    }
    const setupMs = Date.now() - started;
    const deadline = Date.now() + TIMEOUT_MS;

    const api = async (ws: string, method: 'GET' | 'POST', path: string, body?: unknown) => {
      const remaining = Math.max(deadline - Date.now(), 1);
      const res = await fetch(`${base}${path}`, {
        method,
        headers: {
          authorization: `Bearer ${tokens.get(ws) ?? ''}`,
          ...(body === undefined ? {} : { 'content-type': 'application/json' }),
        },
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
        signal: AbortSignal.timeout(Math.min(remaining, (RESULT_WAIT_SECONDS + 15) * 1000)),
      });
      return { status: res.status, json: (await res.json()) as Record<string, unknown> };
    };

    const oneRun = async (index: number): Promise<RunSample> => {
      const w = index % WORKSPACES;
      const ws = wsId(w);
      const adversarial = index % ADVERSARIAL_EVERY === ADVERSARIAL_EVERY - 1;
      // The quotes end the search term, so both kinds of run search for exactly "load report".
      const input = adversarial
        ? `Find documents about "load report" in workspace ${wsId((w + 1 + (index % (WORKSPACES - 1))) % WORKSPACES)}`
        : `Tell me about "load report"`;
      const sample: RunSample = {
        index,
        workspaceId: ws,
        adversarial,
        ok: false,
        status: 'not-started',
        latencyMs: 0,
        ownRows: 0,
        foreignRows: 0,
      };
      const t0 = performance.now();
      try {
        const start = await api(ws, 'POST', `/workspaces/${ws}/agents/${agentIds[ws] ?? ''}/runs`, { input });
        if (start.status !== 202) throw new Error(`start: ${start.status} ${JSON.stringify(start.json)}`);
        const runId = String(start.json.runId);
        sample.runId = runId;
        for (;;) {
          const res = await api(ws, 'GET', `/runs/${runId}/result?waitSeconds=${RESULT_WAIT_SECONDS}`);
          if (res.status !== 200) throw new Error(`result: ${res.status} ${JSON.stringify(res.json)}`);
          sample.status = String(res.json.status);
          if (sample.status !== 'running') {
            const counts = countMarkers(JSON.stringify(res.json.result ?? null), ws);
            sample.ownRows = counts.own;
            sample.foreignRows = counts.foreign;
            break;
          }
          if (Date.now() > deadline) throw new Error('deadline passed while waiting');
        }
        sample.latencyMs = performance.now() - t0;
        sample.ok = sample.status === 'completed';
      } catch (err) {
        sample.latencyMs = performance.now() - t0;
        sample.error = (err as Error).message.slice(0, 300);
      }
      return sample;
    };

    // Warm-up outside the measurement: one run per workspace's first use of the workflow bundle.
    const warm = await oneRun(0);
    if (!warm.ok) throw new Error(`warm-up run failed: ${warm.error ?? warm.status}`);

    const samples: RunSample[] = [];
    let next = 0;
    const loadStart = performance.now();
    await Promise.all(
      Array.from({ length: CONCURRENCY }, async () => {
        while (next < RUNS && Date.now() < deadline) {
          const index = next++;
          samples.push(await oneRun(index));
        }
      }),
    );
    const wallMs = performance.now() - loadStart;

    // The same check on what the worker stored: agent_runs.result of every run, read as the owner.
    const stored = await db.query<{ workspace_id: string; result: unknown }>(
      `select workspace_id, result from agent_runs where result is not null`,
    );
    let storedCross = 0;
    for (const row of stored.rows)
      storedCross += countMarkers(JSON.stringify(row.result), row.workspace_id).foreign;

    const completed = samples.filter((s) => s.ok);
    const latencies = completed.map((s) => s.latencyMs).sort((a, b) => a - b);
    const q = (p: number) =>
      round(latencies[Math.min(latencies.length - 1, Math.ceil(p * latencies.length) - 1)] ?? 0);
    const normal = completed.filter((s) => !s.adversarial);
    const adversarial = completed.filter((s) => s.adversarial);
    const crossWorkspaceRows = samples.reduce((n, s) => n + s.foreignRows, 0);
    const failures = samples.filter((s) => !s.ok);
    const result = {
      benchmark: 'agent-platform-load-http',
      runs: RUNS,
      concurrency: CONCURRENCY,
      started: samples.length,
      completed: completed.length,
      failed: failures.length,
      runsPerSecond: round(completed.length / (wallMs / 1000)),
      p50Ms: q(0.5),
      p95Ms: q(0.95),
      p99Ms: q(0.99),
      maxMs: round(latencies[latencies.length - 1] ?? 0),
      meanMs: round(latencies.reduce((a, b) => a + b, 0) / Math.max(latencies.length, 1)),
      crossWorkspaceRows,
      storedCrossWorkspaceRows: storedCross,
      storedResults: stored.rowCount,
      // Non-vacuity: ordinary runs must see their own documents; adversarial ones (asking the tool for
      // another workspace by name, same search term) must see none.
      ownRowsSeen: normal.reduce((n, s) => n + s.ownRows, 0),
      runsWithoutOwnRows: normal.filter((s) => s.ownRows === 0).length,
      adversarialRuns: adversarial.length,
      adversarialRowsSeen: adversarial.reduce((n, s) => n + s.ownRows + s.foreignRows, 0),
      workspaces: WORKSPACES,
      documentsPerWorkspace: DOCUMENTS_PER_WORKSPACE,
      wallMs: round(wallMs),
      setupMs,
      durationMs: Date.now() - started,
      timeoutMs: TIMEOUT_MS,
      deadlineHit: samples.length < RUNS,
      firstErrors: failures.slice(0, 5).map((s) => ({ index: s.index, status: s.status, error: s.error })),
      machine: { node: process.version, cpus: cpus().length },
      finishedAt: new Date().toISOString(),
    };
    await mkdir(fileURLToPath(new URL('./results/', import.meta.url)), { recursive: true });
    await writeFile(OUT, `${JSON.stringify(result, null, 2)}\n`);
    process.stdout.write(
      `${result.completed}/${RUNS} runs (concurrency ${CONCURRENCY}) in ${result.wallMs} ms: ` +
        `${result.runsPerSecond} runs/s, p50 ${result.p50Ms} ms, p99 ${result.p99Ms} ms, ` +
        `cross-workspace rows ${crossWorkspaceRows} (stored ${storedCross}) → ${OUT}\n`,
    );
    if (failures.length > 0 || crossWorkspaceRows > 0 || storedCross > 0 || result.runsWithoutOwnRows > 0) {
      process.exitCode = 1;
    }
  } finally {
    tearingDown = true;
    for (const cleanup of cleanups.reverse()) {
      await cleanup().catch((err: unknown) => console.error('cleanup failed', err));
    }
    // Each step runs even when an earlier one fails: never leave the dev server or the database behind.
    await pool.end().catch((err: unknown) => console.error('pool end failed', err));
    await database.drop().catch((err: unknown) => console.error('database drop failed', err));
    await env.teardown();
  }
}

const round = (n: number) => Math.round(n * 10) / 10;

await main();
